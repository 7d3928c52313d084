"""What the SDK raises: one class per kind of failure a caller handles differently, each carrying the API's
error body so the message says what to fix."""

from __future__ import annotations

from typing import Any

import httpx


class AdaloraError(Exception):
    """Base class of every error this package raises."""


class APIConnectionError(AdaloraError):
    """The server could not be reached (refused, DNS, timeout), after the retries."""


class ChecksumMismatch(AdaloraError):
    """A download's bytes do not hash to the sha256 the server recorded; the partial file was removed."""


class APIError(AdaloraError):
    """The server answered with an error status. `detail` is its explanation; `field_errors` lists
    (field, message) pairs for a 422."""

    status_code: int = 0

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.response = response
        try:
            self.body: Any = response.json()
        except ValueError:
            self.body = response.text
        detail = self.body.get("detail") if isinstance(self.body, dict) else self.body
        self.field_errors: list[tuple[str, str]] = []
        if isinstance(detail, list):  # a 422: [{field, message}, ...]
            self.field_errors = [(str(e.get("field", "")), str(e.get("message", ""))) for e in detail
                                 if isinstance(e, dict)]
            detail = "; ".join(f"{field}: {message}" for field, message in self.field_errors)
        self.detail = str(detail or response.reason_phrase)
        super().__init__(f"{self.status_code} {response.request.method} {response.request.url.path}: {self.detail}")


class BadRequestError(APIError):
    """400: the request could not be read."""


class AuthenticationError(APIError):
    """401: no API key, or an unknown or revoked one."""


class NotFoundError(APIError):
    """404: no such id for this API key's tenant."""


class ConflictError(APIError):
    """409: not in this state (a download of an unfinished job, a cancel of a finished one)."""


class PayloadTooLargeError(APIError):
    """413: larger than the server accepts."""


class ValidationError(APIError):
    """422: invalid fields, each in `field_errors` with what to change."""


class RateLimitError(APIError):
    """429: too many requests; retried while retries remain, honouring Retry-After."""


class ServiceUnavailableError(APIError):
    """503: the database or broker is down; retried while retries remain, honouring Retry-After."""


ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 404: NotFoundError, 409: ConflictError,
    413: PayloadTooLargeError, 422: ValidationError, 429: RateLimitError, 503: ServiceUnavailableError,
}


def error_for(response: httpx.Response) -> APIError:
    return ERRORS_BY_STATUS.get(response.status_code, APIError)(response)
