"""Jobs: create (or dry-run), list, read, cancel."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.dataset_checks import check_file_dataset
from api.deps import JobDep, SessionDep, TenantDep
from api.errors import AUTHENTICATED_RESPONSES, JOB_RESPONSES, error_response
from api.idempotency import IdempotencyKeyHeader, remember, replay, request_hash
from api.rate_limit import check_job_rate
from api.routes import MAX_BIGINT, V1
from api.schemas import CancelPublic, DryRunPublic, JobCreate, JobDetail, JobPublic, JobsPublic, MetricPublic
from service.lifecycle import request_cancel
from service.models import JOB_STATUSES, Job, JobEvent, Metric, utcnow
from service.queue import enqueue_job
from service.redaction import hide_server_paths
from service.settings import get_settings

log = logging.getLogger(__name__)
router = APIRouter(prefix=f"{V1}/jobs", tags=["jobs"], responses=AUTHENTICATED_RESPONSES)

StatusFilter = Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(JOB_STATUSES) + ")$",
                                           description="only jobs in this status")]


def eta_seconds(job: Job) -> float | None:
    """Remaining steps at the average step rate since the run started."""
    if job.status != "running" or not job.started_at or not job.total_steps or job.step <= 0:
        return None
    elapsed = (utcnow() - job.started_at).total_seconds()
    return max(0.0, elapsed / job.step * (job.total_steps - job.step))


def job_public(job: Job, model: type[JobPublic] = JobPublic, **extra) -> JobPublic:
    return model(
        id=job.id, name=job.spec.get("name"), status=job.status, model=job.spec["model"], task=job.spec["task"],
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at, step=job.step,
        total_steps=job.total_steps, current_budget=job.current_budget, budget_unit=job.budget_unit,
        budget_target=job.budget_target, adapter_params=job.adapter_params, error=job.error, attempts=job.attempts,
        eta_seconds=eta_seconds(job), spec=job.spec, **extra)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic | DryRunPublic,
             responses={200: {"model": DryRunPublic, "description": "dry run: the plan, nothing queued"},
                        400: error_response("the body could not be read: not UTF-8, or nested too deeply"),
                        413: error_response("the body is larger than MAX_BODY_BYTES (refused before it is read)"),
                        429: error_response("more than JOBS_PER_MINUTE jobs in the last minute; see Retry-After"),
                        503: error_response("the database or the broker is unavailable; retry later")})
def create_job(body: JobCreate, session: SessionDep, tenant: TenantDep, response: Response,
               idempotency_key: IdempotencyKeyHeader = None) -> JobPublic | DryRunPublic | JSONResponse:
    check_file_dataset(session, tenant.id, body)  # uploaded files: the caller's, with the columns named
    if body.dry_run:  # creates nothing, so there is nothing to make idempotent
        from api.dry_run import plan_job  # imports torch; only dry runs pay for it

        response.status_code = status.HTTP_200_OK
        return plan_job(body)
    spec = body.model_dump(mode="json", exclude={"dry_run"})
    hash_ = request_hash(spec)
    if idempotency_key and (earlier := replay(session, tenant.id, idempotency_key, hash_)):
        return earlier
    check_job_rate(session, tenant.id, get_settings().jobs_per_minute)  # after the replay: a retry is no new job
    job = Job(tenant_id=tenant.id, spec=spec, status="queued")
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, level="info", message="job queued"))
    public = job_public(job)
    record = idempotency_key and remember(session, tenant.id, idempotency_key, hash_, status.HTTP_201_CREATED,
                                          public.model_dump(mode="json"))
    try:
        session.commit()  # the worker re-reads the row, so it must be committed before the id is sent
    except IntegrityError:
        session.rollback()  # a concurrent twin with the same key committed first: answer with its job
        if idempotency_key and (earlier := replay(session, tenant.id, idempotency_key, hash_)):
            return earlier
        raise
    try:
        job.celery_task_id = enqueue_job(job.id)
    except Exception as exc:  # the broker is down: fail the job rather than leave it queued forever
        log.exception("could not enqueue job %s", job.id)
        job.status, job.finished_at, job.error = "failed", utcnow(), hide_server_paths(
            f"could not queue the job: {exc}")
        if record:
            session.delete(record)  # the client is told to retry; its retry must create a job, not replay this
        session.commit()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"job {job.id} could not be queued (broker unreachable); retry later") from exc
    session.commit()
    return public


@router.get("", response_model=JobsPublic)
def list_jobs(session: SessionDep, tenant: TenantDep, status_filter: StatusFilter = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50,
              offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0) -> JobsPublic:
    where = [Job.tenant_id == tenant.id] + ([Job.status == status_filter] if status_filter else [])
    count = session.scalar(select(func.count()).select_from(Job).where(*where))
    jobs = session.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
                           .limit(limit).offset(offset))
    return JobsPublic(data=[job_public(job) for job in jobs], count=count)


@router.get("/{job_id}", response_model=JobDetail, responses=JOB_RESPONSES)
def get_job(job: JobDep, session: SessionDep) -> JobDetail:
    latest = session.scalar(select(Metric).where(Metric.job_id == job.id).order_by(Metric.step.desc()).limit(1))
    return job_public(job, JobDetail, latest_metrics=MetricPublic.model_validate(latest) if latest else None)


@router.post("/{job_id}/cancel", response_model=CancelPublic,
             responses={**JOB_RESPONSES, 409: error_response("the job already finished")})
def cancel_job(job: JobDep, session: SessionDep) -> CancelPublic:
    """A queued job is cancelled at once; a running one is asked to stop (`cancelling`) and the worker finishes it."""
    new_status = request_cancel(session, job.id)  # conditional updates: never races a worker's claim
    session.commit()
    if new_status is None:
        session.refresh(job)
        if job.status != "cancelling":
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job already {job.status}; nothing to cancel")
    return CancelPublic(id=job.id, status=new_status or job.status)
