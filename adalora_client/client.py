"""The Python SDK: `Client().jobs.create(...)`, `.files.create(...)`, `.jobs.stream_events(...)` ...

    from adalora_client import Client
    client = Client()                      # ADALORA_API_URL and ADALORA_API_KEY from the environment
    file = client.files.create("train.jsonl")
    job = client.jobs.create({"model": "...", "task": "sequence_classification",
                              "dataset": {"source": "file", "file_id": file.id}})
    for event in client.jobs.stream_events(job.id):
        print(event.message)
    client.jobs.download(job.id, "adapter", "my-adapter")
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx
from httpx_sse import connect_sse
from pydantic import BaseModel

from adalora_client import downloads
from adalora_client._http import Transport, retry_after_seconds
from adalora_client.errors import AdaloraError, APIConnectionError, error_for
from adalora_client.types import (
    Checkpoint,
    Download,
    DryRun,
    Event,
    File,
    Job,
    Metric,
    Model,
    RankColumns,
    Ranks,
    Record,
)

DEFAULT_URL = "http://127.0.0.1:8000"
# The AdaLoRA adapter (PEFT), the merged model, plain LoRA with per-module ranks, LoRA with one padded rank.
DOWNLOADS = ("adapter", "merged", "lora", "lora-serving")
T = TypeVar("T", bound=BaseModel)


class Page(Record, Generic[T]):
    """One page of a listing: `count` (all matches) for files and jobs, `has_more` for events and metrics."""

    data: list[T]
    count: int | None = None
    has_more: bool | None = None


class Client:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 max_retries: int = 3, http_client: httpx.Client | None = None) -> None:
        base_url = base_url or os.environ.get("ADALORA_API_URL") or DEFAULT_URL
        api_key = api_key or os.environ.get("ADALORA_API_KEY")
        if not api_key:
            raise AdaloraError("no API key: pass api_key= or set ADALORA_API_KEY (`adalora-svc dev` prints one; "
                               "an admin makes one with `adalora-svc create-key TENANT`)")
        self.base_url = base_url.rstrip("/")
        self._transport = Transport(self.base_url, api_key, timeout=timeout, max_retries=max_retries,
                                    http_client=http_client)
        self.files = Files(self._transport)
        self.jobs = Jobs(self._transport)
        self.models = Models(self._transport)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _every_page(fetch: Callable[[int], Page[T]], after: int, cursor: Callable[[T], int]) -> Iterator[T]:
    """The items of fetch(after), then of the pages after its last item, while the server says has_more."""
    while True:
        page = fetch(after)
        yield from page.data
        if not page.has_more or not page.data:
            return
        after = cursor(page.data[-1])


def _idempotency(key: str | None) -> dict[str, str]:
    """A fresh key per call unless the caller passes one: retries of this call reuse it, so a retried create
    returns the first result instead of making a second."""
    return {"Idempotency-Key": key or f"sdk-{uuid.uuid4().hex}"}


class Files:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, file: str | Path | IO[bytes], *, purpose: str = "fine-tune", filename: str | None = None,
               idempotency_key: str | None = None) -> File:
        """Upload a dataset (JSON Lines, JSON, CSV, TSV or Parquet); the server checks every row."""
        if isinstance(file, (str, Path)):
            path = Path(file)
            name = filename or path.name

            def body() -> dict[str, Any]:
                return {"file": (name, path.open("rb"))}
        else:
            start, name = file.tell(), filename or Path(getattr(file, "name", "upload")).name

            def body() -> dict[str, Any]:
                file.seek(start)  # a retry sends the file again from where it began
                return {"file": (name, file)}
        response = self._t.request("POST", "/v1/files", files=body, data={"purpose": purpose},
                                   headers=_idempotency(idempotency_key))
        return File.model_validate(response.json())

    def list(self, *, limit: int = 50, offset: int = 0) -> Page[File]:
        return Page[File].model_validate(self._t.json("GET", "/v1/files", params={"limit": limit, "offset": offset}))

    def retrieve(self, file_id: str) -> File:
        return File.model_validate(self._t.json("GET", f"/v1/files/{file_id}"))

    def content(self, file_id: str) -> bytes:
        return self._t.request("GET", f"/v1/files/{file_id}/content").content

    def delete(self, file_id: str) -> None:
        self._t.request("DELETE", f"/v1/files/{file_id}")


class Jobs:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Queue a job; `spec` is the job spec of POST /v1/jobs (see /docs)."""
        body = {k: v for k, v in spec.items() if k != "dry_run"}
        return Job.model_validate(self._t.json("POST", "/v1/jobs", json=body,
                                               headers=_idempotency(idempotency_key)))

    def dry_run(self, spec: dict[str, Any], *, gpu: str | None = None) -> DryRun:
        """The plan for `spec` (parameter counts, steps, the budget schedule, the peak GPU memory) without
        queueing anything. `gpu` (a card name such as "A100-40GB", or "24GB") checks the memory against it."""
        body = {**spec, "dry_run": True, **({"gpu": gpu} if gpu else {})}
        return DryRun.model_validate(self._t.json("POST", "/v1/jobs", json=body))

    def list(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> Page[Job]:
        params = {"status": status, "limit": limit, "offset": offset}
        return Page[Job].model_validate(self._t.json("GET", "/v1/jobs", params=params))

    def retrieve(self, job_id: str) -> Job:
        return Job.model_validate(self._t.json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> str:
        """Ask the job to stop; returns its new status (cancelled, or cancelling while a worker stops it)."""
        return self._t.json("POST", f"/v1/jobs/{job_id}/cancel")["status"]

    def delete(self, job_id: str) -> None:
        """Delete a finished job with its metrics, events, checkpoints and downloads (409 while it runs)."""
        self._t.request("DELETE", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, *, poll_seconds: float = 2.0, timeout: float | None = None) -> Job:
        """Poll until the job has finished (succeeded, failed or cancelled) and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (job := self.retrieve(job_id)).finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
            time.sleep(poll_seconds)
        return job

    # -- events --------------------------------------------------------------------------------------

    def events(self, job_id: str, *, after_id: int = 0, limit: int = 100) -> Page[Event]:
        params = {"after_id": after_id, "limit": limit}
        return Page[Event].model_validate(self._t.json("GET", f"/v1/jobs/{job_id}/events", params=params))

    def iter_events(self, job_id: str, *, after_id: int = 0) -> Iterator[Event]:
        """Every event so far, page by page."""
        return _every_page(lambda after: self.events(job_id, after_id=after, limit=1000), after_id,
                           lambda event: event.id)

    def stream_events(self, job_id: str, *, after_id: int = 0) -> Iterator[Event]:
        """Events as they happen (Server-Sent Events), ending when the job finishes. A dropped connection is
        resumed after the last event seen (Last-Event-ID), so no event is lost or repeated."""
        failures = 0
        while True:
            try:
                for event in self._stream_once(job_id, after_id):
                    if event is None:
                        return
                    after_id, failures = event.id, 0
                    yield event
                # The server always ends with its `end` event: a stream closed before it was cut on the way.
                raise APIConnectionError(f"the event stream of {job_id} closed before its end event")
            except APIConnectionError:
                if failures == self._t.max_retries:
                    raise
                time.sleep(retry_after_seconds(None, failures, self._t.max_retry_wait))
                failures += 1

    def _stream_once(self, job_id: str, after_id: int) -> Iterator[Event | None]:
        """One SSE connection: the events, then None for the server's `end` event."""
        headers = {"Last-Event-ID": str(after_id)}
        try:
            with connect_sse(self._t.http, "GET", f"/v1/jobs/{job_id}/events", headers=headers) as source:
                if source.response.is_error:
                    source.response.read()
                    raise error_for(source.response)
                for sse in source.iter_sse():
                    if sse.event == "end":
                        yield None
                        return
                    if sse.event == "message" and sse.data:
                        yield Event.model_validate_json(sse.data)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"event stream of {job_id}: {exc}") from exc

    # -- metrics, ranks, checkpoints -----------------------------------------------------------------

    def metrics(self, job_id: str, *, after_step: int = -1, limit: int = 500) -> Page[Metric]:
        params = {"after_step": after_step, "limit": limit}
        return Page[Metric].model_validate(self._t.json("GET", f"/v1/jobs/{job_id}/metrics", params=params))

    def iter_metrics(self, job_id: str, *, after_step: int = -1) -> Iterator[Metric]:
        """Every metric row so far, page by page (step 0: the evaluation before training)."""
        return _every_page(lambda after: self.metrics(job_id, after_step=after, limit=5000), after_step,
                           lambda metric: metric.step)

    def ranks(self, job_id: str, *, step: int | None = None) -> Ranks:
        return Ranks.model_validate(self._t.json("GET", f"/v1/jobs/{job_id}/ranks", params={"step": step}))

    def rank_columns(self, job_id: str) -> RankColumns:
        """The snapshots as a module × step matrix, modules ordered by layer and type (for heatmaps)."""
        return RankColumns.model_validate(self._t.json("GET", f"/v1/jobs/{job_id}/ranks/columns"))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        body = self._t.json("GET", f"/v1/jobs/{job_id}/checkpoints")
        return [Checkpoint.model_validate(c) for c in body["data"]]

    # -- downloads -----------------------------------------------------------------------------------

    def download(self, job_id: str, kind: str, to: str | Path, *, unpack: bool = True) -> Download:
        """Download the `adapter` (PEFT AdaLoRA), the `merged` model, or `lora` / `lora-serving` (the adapter as
        plain LoRA for vLLM, TGI, LoRAX: docs/CLIENT.md) of a succeeded job, resuming a broken
        earlier try and checking the sha256. With unpack (the default) `to` is a new or empty folder that ends
        up holding the files (`PeftModel.from_pretrained(to)`); without, `to` is where the .tar goes."""
        if kind not in DOWNLOADS:
            raise ValueError(f"kind must be one of {', '.join(DOWNLOADS)}, not {kind!r}")
        return downloads.download(self._t, job_id, kind, Path(to), unpack_to_folder=unpack)


class Models:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def list(self) -> list[Model]:
        return [Model.model_validate(m) for m in self._t.json("GET", "/v1/models")["data"]]
