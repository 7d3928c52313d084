"""Uploaded dataset files: where their bytes live (the store key files/<id>.<format>), how an upload
becomes a row, and the lookups the API and the worker share.

An upload is written to this host's files/incoming first and only put in the store once every row parsed,
so a rejected upload leaves neither a row nor an object behind.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.dataset import DataError
from service.dataset.formats import inspect_file
from service.db import session_scope
from service.jobspec import FILE_ID
from service.settings import get_settings
from service.store import StoreUnavailable, get_store
from service.tables import UNFINISHED_STATUSES, File, Job, new_file_id

ABANDONED_AFTER_SECONDS = 24 * 3600
UNSAFE_CHARACTERS = re.compile(r"[^\w.\- ()+]")


def incoming_path() -> Path:
    """A fresh path for an upload in progress (on the same disk as its final place, so moving is atomic)."""
    folder = get_store().local_path("files/incoming")
    folder.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned(folder)
    return folder / f"{uuid.uuid4().hex}.partial"


def _sweep_abandoned(folder: Path) -> None:
    """Uploads cut off by a killed server leave their partial file; none takes a day to arrive."""
    cutoff = time.time() - ABANDONED_AFTER_SECONDS
    for partial in folder.glob("*.partial"):
        with contextlib.suppress(FileNotFoundError):  # another request may sweep it at the same moment
            if partial.stat().st_mtime < cutoff:
                partial.unlink()


def safe_filename(name: str | None) -> str:
    """The client's file name reduced to a plain name to show: no folders, no control or odd characters."""
    base = PureWindowsPath(PurePosixPath(name or "").name).name  # drops both / and \\ folders
    base = UNSAFE_CHARACTERS.sub("_", base).strip(" .")
    return base[:200] or "upload"


def accept_upload(tenant_id: int, incoming: Path, *, filename: str, purpose: str, size: int, sha256: str) -> File:
    """Validates the uploaded bytes at `incoming` (every row: slow for a big file, so no database session is
    held meanwhile) and puts them in the store; raises DataError (or StoreUnavailable), keeping nothing.
    Returns the File row for the caller to add and commit; if that fails, the caller deletes the object."""
    summary = inspect_file(incoming, filename, get_settings().max_line_bytes)
    file = File(id=new_file_id(), tenant_id=tenant_id, filename=filename, purpose=purpose,
                format=summary.format, size=size, sha256=sha256, row_count=summary.row_count,
                columns=summary.columns, preview=summary.preview)
    file.path = f"files/{file.id}.{summary.format}"
    get_store().put(file.path, incoming)
    return file


def tenant_file(session: Session, tenant_id: int, file_id: str) -> File | None:
    if not FILE_ID.match(file_id):
        return None  # never one of ours, and a NUL byte in it would make Postgres raise
    return session.scalar(select(File).where(File.id == file_id, File.tenant_id == tenant_id))


def active_jobs_using(session: Session, file: File) -> list[str]:
    """Ids of the tenant's unfinished jobs whose dataset names this file (few per tenant: filtered here)."""
    jobs = session.execute(select(Job.id, Job.spec).where(Job.tenant_id == file.tenant_id,
                                                          Job.status.in_(UNFINISHED_STATUSES)))
    return [job_id for job_id, spec in jobs if file.id in dataset_file_ids(spec.get("dataset", {}))]


def dataset_file_ids(dataset: dict) -> set[str]:
    if dataset.get("source") != "file":
        return set()
    return {name for name in (dataset.get("file_id"), dataset.get("validation_file_id")) if name is not None}


def delete_file(session: Session, file: File) -> None:
    """The row, then the object. A store that cannot be reached raises before anything changes; a row
    without its object would fail every job naming it, an object without its row only costs space."""
    store = get_store()
    store.size(file.path)
    session.delete(file)
    session.commit()
    with contextlib.suppress(StoreUnavailable):  # it answered a moment ago; at worst the bytes stay behind
        store.delete(file.path)


def stored_file(file_id: str) -> File:
    """The File row of a job's dataset, read by the worker (the API checked the tenant at submission)."""
    with session_scope() as session:
        file = session.get(File, file_id)
    if file is None or get_store().size(file.path) is None:
        raise _gone(file_id)
    return file


def local_copy(file: File) -> Path:
    """The file's bytes on this host (fetched from the store once), for reading its rows."""
    path = get_store().local_copy(file.path)
    if path is None:
        raise _gone(file.id)
    return path


def _gone(file_id: str) -> DataError:
    return DataError(f"dataset file {file_id} no longer exists (was it deleted?); upload it again and submit "
                     "a new job")
