"""Request dependencies: a database session, the caller's tenant, and a job the caller owns."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import get_sessionmaker
from service.keys import tenant_for_key
from service.models import Job, Tenant


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="adalora"' + (f', error="{error}"' if error else "")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge})


def current_tenant(request: Request, session: SessionDep) -> Tenant:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing Authorization header: send `Authorization: Bearer <api key>`")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("malformed Authorization header: expected `Bearer <api key>`", "invalid_request")
    tenant = tenant_for_key(session, key.strip())
    if tenant is None:
        raise _unauthorized("unknown or revoked API key", "invalid_token")
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]

JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # service.models.new_job_id


def owned_job(job_id: str, session: SessionDep, tenant: TenantDep) -> Job:
    """The job if it belongs to the caller; anyone else's id is indistinguishable from a missing one."""
    job = None
    if JOB_ID.fullmatch(job_id):  # anything else cannot exist, and a NUL byte in it would make Postgres raise
        job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant.id))
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job {job_id}")
    return job


JobDep = Annotated[Job, Depends(owned_job)]
