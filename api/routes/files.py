"""Dataset files: upload (streamed to disk, every row checked), list, read, download, delete.
Tenant-scoped like jobs: another tenant's file id is a 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import SessionDep, TenantDep
from api.errors import AUTHENTICATED_RESPONSES, SpecError, error_response
from api.idempotency import IdempotencyKeyHeader, remember, replay, request_hash
from api.routes import MAX_BIGINT, V1
from api.schemas import FilePublic, FilesPublic
from api.uploads import FILE_FIELD, receive_upload
from service.dataset import DataError
from service.files import (
    accept_upload,
    active_jobs_using,
    delete_file,
    incoming_path,
    safe_filename,
    stored_path,
    tenant_file,
)
from service.models import File
from service.settings import get_settings

UPLOAD_PATH = f"{V1}/files"  # exempt from the app's MAX_BODY_BYTES: uploads stream under MAX_UPLOAD_BYTES
router = APIRouter(prefix=UPLOAD_PATH, tags=["files"], responses=AUTHENTICATED_RESPONSES)

UPLOAD_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FILE_FIELD],
    "properties": {
        FILE_FIELD: {"type": "string", "format": "binary",
                     "description": "JSON Lines, a JSON array of objects, CSV, TSV (no quoting) or Parquet"},
        "purpose": {"type": "string", "default": "fine-tune", "maxLength": 64},
    }}}}}}


async def owned_file(file_id: str, session: SessionDep, tenant: TenantDep) -> File:
    file = await session.run_sync(tenant_file, tenant.id, file_id)
    if file is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no file {file_id}")
    return file


FileDep = Annotated[File, Depends(owned_file)]
NO_FILE = {404: error_response("no file with this id for this API key's tenant")}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=FilePublic, openapi_extra=UPLOAD_FORM,
             responses={
                 400: error_response("not a usable multipart body"),
                 413: error_response("larger than MAX_UPLOAD_BYTES"),
                 415: error_response("not multipart/form-data")})
async def upload_file(request: Request, session: SessionDep, tenant: TenantDep,
                      idempotency_key: IdempotencyKeyHeader = None) -> FilePublic | JSONResponse:
    """Stores a dataset after parsing every row; a file that does not parse is refused (422, naming the line
    and the problem) and nothing is kept. With an Idempotency-Key, a retried upload returns the first file."""
    await session.commit()  # the key check's transaction ends: no pooled connection waits on the upload
    incoming = incoming_path()
    try:
        upload = await receive_upload(request, incoming, get_settings().max_upload_bytes)
        purpose = upload.fields.get("purpose", "fine-tune").strip()
        if not purpose or len(purpose) > 64 or not purpose.isprintable():  # a NUL cannot be stored in Postgres
            raise SpecError("purpose", "give a short label of at most 64 printable characters, or leave it out")
        filename = safe_filename(upload.filename)
        hash_ = request_hash({"filename": filename, "purpose": purpose, "sha256": upload.sha256})
        if idempotency_key and (earlier := await session.run_sync(replay, tenant.id, idempotency_key, hash_)):
            return earlier
        # Ends the transaction (an expired answer replay deleted goes with it), so no pooled connection is held
        # while every row of a big file is checked.
        await session.commit()
        try:
            file = await run_in_threadpool(accept_upload, tenant.id, incoming, filename=filename, purpose=purpose,
                                           size=upload.size, sha256=upload.sha256)
        except DataError as e:
            raise SpecError(FILE_FIELD, f"{filename}: {e}") from None
    finally:
        incoming.unlink(missing_ok=True)  # moved away on success; anything left is a rejected upload
    session.add(file)
    try:
        await session.commit()
    except BaseException:
        stored_path(file).unlink(missing_ok=True)
        raise
    public = FilePublic.model_validate(file)
    if idempotency_key:
        return await session.run_sync(_remember_upload, tenant.id, idempotency_key, hash_, file, public)
    return public


def _remember_upload(session: Session, tenant_id: int, key: str, hash_: str, file: File,
                     public: FilePublic) -> FilePublic | JSONResponse:
    """Records the answer after the file is stored (and committed); if a concurrent upload with the
    same key got there first, this one's file is deleted and the first one's answer returned."""
    remember(session, tenant_id, key, hash_, status.HTTP_201_CREATED, public.model_dump(mode="json"))
    try:
        session.commit()
        return public
    except IntegrityError:
        session.rollback()
    delete_file(session, file)
    earlier = replay(session, tenant_id, key, hash_)
    assert earlier is not None, "the unique key constraint failed, so its row exists"
    return earlier


@router.get("", response_model=FilesPublic)
async def list_files(session: SessionDep, tenant: TenantDep, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                     offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0) -> FilesPublic:
    where = File.tenant_id == tenant.id
    count = await session.scalar(select(func.count()).select_from(File).where(where))
    files = await session.scalars(select(File).where(where).order_by(File.created_at.desc(), File.id)
                                  .limit(limit).offset(offset))
    return FilesPublic(data=[FilePublic.model_validate(f) for f in files], count=count)


@router.get("/{file_id}", response_model=FilePublic, responses=NO_FILE)
async def get_file(file: FileDep) -> FilePublic:
    return FilePublic.model_validate(file)


@router.get("/{file_id}/content", response_class=FileResponse, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "the bytes as uploaded"}, **NO_FILE})
async def download_file(file: FileDep, session: SessionDep) -> FileResponse:
    await session.close()  # the connection goes back to the pool now, not after a download of minutes
    return FileResponse(stored_path(file), media_type="application/octet-stream", filename=file.filename,
                        headers={"ETag": f'"{file.sha256}"', "X-Checksum-SHA256": file.sha256})


@router.delete("/{file_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={**NO_FILE, 409: error_response("an unfinished job trains on the file")})
async def remove_file(file: FileDep, session: SessionDep) -> Response:
    jobs = await session.run_sync(active_jobs_using, file)
    if jobs:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"file is used by unfinished job(s) {', '.join(jobs)}; cancel them or wait "
                                   "until they finish, then delete the file")
    await session.run_sync(delete_file, file)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
