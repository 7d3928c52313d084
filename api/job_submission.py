"""Submitting and cancelling a job, shared by /v1/jobs and the OpenAI-compatible /openai/v1/fine_tuning/jobs:
the checks a spec passes before it is queued, idempotent replay, the per-tenant rate limit, the row and its
first event, then the broker. Each surface only maps SpecError and AlreadyFinished to its own error shape and
passes how it presents a job, so a replay answers in that surface's shape."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.checkpoint_checks import check_from_checkpoint
from api.dataset_checks import check_file_dataset
from api.errors import SpecError
from api.idempotency import remember, replay, surface_hash
from api.rate_limit import check_job_rate
from service.jobspec import JobSpec
from service.lifecycle import fail_unsent, request_cancel
from service.queue import enqueue_job
from service.redaction import hide_server_paths
from service.routing import unserved_class_problem
from service.settings import get_settings
from service.tables import Job, JobEvent

log = logging.getLogger(__name__)


class AlreadyFinished(Exception):
    """A cancel of a job that already ended; the message is its status."""


async def check_submission(session: AsyncSession, tenant_id: int, spec: JobSpec) -> None:
    """Everything a valid spec must also pass against the database before it is queued; raises SpecError
    naming our field. The checks are plain functions on a blocking Session: run_sync hands them this one."""
    await session.run_sync(check_file_dataset, tenant_id, spec)  # uploaded files: the caller's, columns named
    await session.run_sync(check_from_checkpoint, tenant_id, spec)  # the earlier job: the caller's, finished
    await session.run_sync(check_gpu_class, spec)  # some worker serves the class asked for


def check_gpu_class(session: Session, spec: JobSpec) -> None:
    if (problem := unserved_class_problem(session, spec.resources.queue)) is not None:
        raise SpecError("resources.queue", problem)


async def cancel(session: AsyncSession, job: Job) -> str:
    """A queued job is cancelled at once; a running one is asked to stop (`cancelling`) and its worker finishes
    it. Returns the status after; raises AlreadyFinished. Conditional updates: never races a worker's claim."""
    new_status = await session.run_sync(request_cancel, job.id)
    await session.commit()
    await session.refresh(job)
    if new_status is None and job.status != "cancelling":
        raise AlreadyFinished(job.status)
    return new_status or job.status


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
