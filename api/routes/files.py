"""Dataset files: upload (streamed to disk, every row checked), list, read, download, delete.
Tenant-scoped like jobs: another tenant's file id is a 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from api.deps import SessionDep, TenantDep
from api.downloads import stored_download
from api.errors import AUTHENTICATED_RESPONSES, error_response
from api.idempotency import IdempotencyKeyHeader
from api.routes import MAX_BIGINT, V1
from api.schemas import FilePublic, FilesPublic
from api.upload_flow import store_upload
from api.uploads import FILE_FIELD
from service.files import active_jobs_using, delete_file, tenant_file
from service.tables import File

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
    return await store_upload(request, session, tenant.id, idempotency_key, present=FilePublic.model_validate,
                              surface="v1", success_status=status.HTTP_201_CREATED)


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


@router.get("/{file_id}/content", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "the bytes as uploaded"},
    206: {"description": "the requested byte range"}, **NO_FILE})
async def download_file(file: FileDep, session: SessionDep, request: Request) -> Response:
    await session.close()  # the connection goes back to the pool now, not after a download of minutes
    return await stored_download(request, file.path, sha256=file.sha256, filename=file.filename,
                                 media_type="application/octet-stream", what="file's content")


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
