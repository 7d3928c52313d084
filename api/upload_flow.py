"""Storing an uploaded dataset, shared by /v1/files and the OpenAI-compatible /openai/v1/files: receive the
multipart body to disk, check every row, store it, and make a retry with the same Idempotency-Key return the
first answer. Each surface passes how it presents a file, so a replay answers in that surface's shape."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from api.errors import SpecError
from api.idempotency import remember, replay, surface_hash
from api.uploads import FILE_FIELD, receive_upload
from service.dataset import DataError
from service.files import accept_upload, delete_file, incoming_path, safe_filename
from service.settings import get_settings
from service.store import get_store
from service.tables import File

DEFAULT_PURPOSE = "fine-tune"


async def store_upload(request: Request, session: AsyncSession, tenant_id: int, idempotency_key: str | None, *,
                       present: Callable[[File], BaseModel], surface: str,
                       success_status: int) -> BaseModel | JSONResponse:
    """A file that does not parse is refused (422, naming the line and the problem) and nothing is kept.
    `success_status` is the route's own, so a replay under an Idempotency-Key answers with the same status."""
    await session.commit()  # the key check's transaction ends: no pooled connection waits on the upload
    incoming = incoming_path()
    try:
        upload = await receive_upload(request, incoming, get_settings().max_upload_bytes)
        purpose = upload.fields.get("purpose", DEFAULT_PURPOSE).strip()
        if not purpose or len(purpose) > 64 or not purpose.isprintable():  # a NUL cannot be stored in Postgres
            raise SpecError("purpose", "give a short label of at most 64 printable characters, or leave it out")
        filename = safe_filename(upload.filename)
        hash_ = surface_hash({"filename": filename, "purpose": purpose, "sha256": upload.sha256}, surface)
        if idempotency_key and (earlier := await session.run_sync(replay, tenant_id, idempotency_key, hash_)):
            return earlier
        # Ends the transaction (an expired answer replay deleted goes with it), so no pooled connection is held
        # while every row of a big file is checked.
        await session.commit()
        try:
            file = await run_in_threadpool(accept_upload, tenant_id, incoming, filename=filename, purpose=purpose,
                                           size=upload.size, sha256=upload.sha256)
        except DataError as e:
            raise SpecError(FILE_FIELD, f"{filename}: {e}") from None
    finally:
        incoming.unlink(missing_ok=True)  # moved away on success; anything left is a rejected upload
    session.add(file)
    try:
        await session.commit()
    except BaseException:
        await run_in_threadpool(get_store().delete, file.path)
        raise
    public = present(file)
    if idempotency_key:
        return await session.run_sync(_remember_upload, tenant_id, idempotency_key, hash_, file, public,
                                      success_status)
    return public


def _remember_upload(session: Session, tenant_id: int, key: str, hash_: str, file: File,
                     public: BaseModel, success_status: int) -> BaseModel | JSONResponse:
    """Records the answer after the file is stored (and committed); if a concurrent upload with the
    same key got there first, this one's file is deleted and the first one's answer returned."""
    remember(session, tenant_id, key, hash_, success_status, public.model_dump(mode="json"))
    try:
        session.commit()
        return public
    except IntegrityError:
        session.rollback()
    delete_file(session, file)
    earlier = replay(session, tenant_id, key, hash_)
    assert earlier is not None, "the unique key constraint failed, so its row exists"
    return earlier
