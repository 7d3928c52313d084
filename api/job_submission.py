"""Queueing a job, shared by POST /v1/jobs and the OpenAI-compatible POST /openai/v1/fine_tuning/jobs:
idempotent replay, the per-tenant rate limit, the row and its first event, then the broker. Each surface
passes how it presents a job, so a replay answers in that surface's shape."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from api.idempotency import remember, replay, surface_hash
from api.rate_limit import check_job_rate
from service.lifecycle import fail_unsent
from service.models import Job, JobEvent
from service.queue import enqueue_job
from service.redaction import hide_server_paths
from service.settings import get_settings

log = logging.getLogger(__name__)


async def submit_job(session: AsyncSession, tenant_id: int, spec: dict, idempotency_key: str | None, *,
                     present: Callable[[Job], BaseModel], surface: str) -> BaseModel | JSONResponse:
    """`spec` is a validated job spec as JSON; answers 201 with present(job), or the first answer to the key."""
    hash_ = surface_hash(spec, surface)
    if idempotency_key and (earlier := await session.run_sync(replay, tenant_id, idempotency_key, hash_)):
        return earlier
    # After the replay: a retry is no new job.
    await session.run_sync(check_job_rate, tenant_id, get_settings().jobs_per_minute)
    job = Job(tenant_id=tenant_id, spec=spec, status="queued")
    session.add(job)
    await session.flush()
    session.add(JobEvent(job_id=job.id, level="info", message="job queued"))
    public = present(job)
    record = idempotency_key and await session.run_sync(remember, tenant_id, idempotency_key, hash_,
                                                        status.HTTP_201_CREATED, public.model_dump(mode="json"))
    try:
        await session.commit()  # the worker re-reads the row, so it must be committed before the id is sent
    except IntegrityError:
        await session.rollback()  # a concurrent twin with the same key committed first: answer with its job
        if idempotency_key and (earlier := await session.run_sync(replay, tenant_id, idempotency_key, hash_)):
            return earlier
        raise
    try:
        job.celery_task_id = await run_in_threadpool(enqueue_job, job.id, job.spec)  # a blocking broker client
    except Exception as exc:  # the broker is down: fail the job rather than leave it queued forever
        log.exception("could not enqueue job %s", job.id)
        await session.run_sync(fail_unsent, job.id, hide_server_paths(f"could not queue the job: {exc}"))
        if record:
            await session.delete(record)  # the client is told to retry; its retry must create a job, not replay
        await session.commit()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"job {job.id} could not be queued (broker unreachable); retry later") from exc
    await session.commit()
    return public
