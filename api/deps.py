"""Request dependencies: an async database session, the caller's tenant, and a job the caller owns.

The caller's key is checked in the query that reads what the request is about (key → tenant, or key → tenant
→ job): one round trip, where looking up the key, then its tenant, then the job took three.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import Row, Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.db import async_session
from service.keys import ACTIVE_KEY, TENANT_FOR_KEY, key_matches, key_prefix
from service.tables import ApiKey, Job, Tenant


async def get_session() -> AsyncIterator[AsyncSession]:
    async with async_session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="adalora"' + (f', error="{error}"' if error else "")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge})


INVALID_KEY = "unknown or revoked API key"


def presented_key(request: Request) -> tuple[str, str]:
    """(raw key, its prefix) from the Authorization header; 401 when there is none or it is malformed."""
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing Authorization header: send `Authorization: Bearer <api key>`")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("malformed Authorization header: expected `Bearer <api key>`", "invalid_request")
    raw = key.strip()
    prefix = key_prefix(raw)
    if prefix is None:
        raise _unauthorized(INVALID_KEY, "invalid_token")
    return raw, prefix


async def current_tenant(request: Request, session: SessionDep) -> Tenant:
    raw, prefix = presented_key(request)
    row = (await session.execute(TENANT_FOR_KEY, {"prefix": prefix})).first()
    if row is None or not key_matches(row.key_hash, raw):
        raise _unauthorized(INVALID_KEY, "invalid_token")
    return row.Tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]

JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # service.tables.new_job_id


_keys, _jobs = ApiKey.__table__, Job.__table__


def job_for_key(*columns: Any, joins: tuple = ()) -> Select:
    """Reads `columns` (e.g. the Job entity) with the active key :prefix and the job :job_id, if that key's tenant
    owns it; `joins` are (target, onclause) pairs outer-joined for them. The row's key_hash and job_found are
    for authorized_job. Build it once, at import."""
    same_tenant = (_jobs.c.tenant_id == _keys.c.tenant_id) & (_jobs.c.id == bindparam("job_id"))
    query = (select(_keys.c.key_hash, _jobs.c.id.label("job_found"), *columns).select_from(_keys)
             .outerjoin(_jobs, same_tenant))
    for target, onclause in joins:
        query = query.outerjoin(target, onclause)
    return query.where(ACTIVE_KEY)


JOB_FOR_KEY = job_for_key(Job)


async def authorized_job(request: Request, db: AsyncSession | AsyncConnection, job_id: str,
                         query: Select = JOB_FOR_KEY) -> Row:
    """The row of `query` (see job_for_key) for the caller's key and job: 401 for a bad key, 404 for a job of
    another tenant (indistinguishable from a missing one). One query, on a session or a plain connection."""
    raw, prefix = presented_key(request)
    # Anything but our id format cannot exist, and a NUL byte in it would make Postgres raise.
    params = {"prefix": prefix, "job_id": job_id if JOB_ID.fullmatch(job_id) else ""}
    row = (await db.execute(query, params)).first()
    if row is None or not key_matches(row.key_hash, raw):
        raise _unauthorized(INVALID_KEY, "invalid_token")
    if row.job_found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job {job_id}")
    return row


async def owned_job(job_id: str, request: Request, session: SessionDep) -> Job:
    """The job if it belongs to the caller."""
    return (await authorized_job(request, session, job_id)).Job


JobDep = Annotated[Job, Depends(owned_job)]
