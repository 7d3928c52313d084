"""One HTTP session to the API: the key on every request, errors raised as exceptions, and retries.

Retried: 429 and 503 (honouring Retry-After), and connection failures, for requests that are safe to send
twice: reads, and creates that carry an Idempotency-Key (the server answers a repeat with the first result).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from adalora_client.errors import APIConnectionError, error_for

RETRY_STATUSES = (429, 503)
SAFE_METHODS = ("GET", "HEAD")
VERSION = "0.1.0"


def retry_after_seconds(response: httpx.Response | None, attempt: int, cap: float) -> float:
    """The server's Retry-After (seconds or an HTTP date) if it sent one, else exponential backoff with jitter."""
    value = response.headers.get("retry-after") if response is not None else None
    wait: float | None = None
    if value:
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
            except (TypeError, ValueError):
                wait = None
    if wait is None:
        wait = 0.5 * 2 ** attempt * (1 + random.random() / 2)
    return min(max(wait, 0.0), cap)


class Transport:
    def __init__(self, base_url: str, api_key: str, *, timeout: float, max_retries: int,
                 max_retry_wait: float = 60.0, http_client: httpx.Client | None = None) -> None:
        self.max_retries, self.max_retry_wait = max_retries, max_retry_wait
        self.http = http_client or httpx.Client(timeout=timeout)
        self.http.base_url = base_url.rstrip("/")
        self.http.headers.update({"Authorization": f"Bearer {api_key}",
                                  "User-Agent": f"adalora-client/{VERSION}"})

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                files: Callable[[], dict[str, Any]] | None = None, data: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
        """The response of a 2xx or 304, or the matching APIError. `files` is a callable so that a retried
        upload sends the file again from its start."""
        retryable = method in SAFE_METHODS or "Idempotency-Key" in (headers or {})
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self.http.request(method, path, params=_drop_none(params), json=json,
                                             files=files() if files else None, data=data, headers=headers)
            except httpx.TransportError as exc:
                if not retryable or last:
                    raise APIConnectionError(f"{method} {self.http.base_url}{path}: {exc}") from exc
                time.sleep(retry_after_seconds(None, attempt, self.max_retry_wait))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(retry_after_seconds(response, attempt, self.max_retry_wait))
                continue
            if response.is_error:
                raise error_for(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def json(self, method: str, path: str, **kwargs) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, *, headers: dict[str, str] | None = None,
               params: dict[str, Any] | None = None) -> Iterator[httpx.Response]:
        """A streamed response (one attempt: the caller resumes); an error status is raised with its body read."""
        try:
            with self.http.stream(method, path, headers=headers, params=_drop_none(params)) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                yield response
        except httpx.TransportError as exc:
            raise APIConnectionError(f"{method} {self.http.base_url}{path}: {exc}") from exc


def _drop_none(params: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: v for k, v in params.items() if v is not None} if params else None
