"""Jobs: create (or dry-run), list, read, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, SessionDep, TenantDep, authorized_job, job_for_key
from api.errors import AUTHENTICATED_RESPONSES, JOB_RESPONSES, error_response
from api.etags import NOT_MODIFIED_RESPONSE, if_none_match, weak_etag
from api.idempotency import IdempotencyKeyHeader
from api.job_presenter import job_public
from api.job_submission import AlreadyFinished, cancel, check_submission, submit_job
from api.routes import MAX_BIGINT, V1
from api.schemas import CancelPublic, DryRunPublic, JobCreate, JobDetail, JobPublic, JobsPublic, MetricPublic
from service.db import read_connection
from service.job_removal import JobInUse, delete_finished_job
from service.tables import JOB_STATUSES, Job, Metric

router = APIRouter(prefix=f"{V1}/jobs", tags=["jobs"], responses=AUTHENTICATED_RESPONSES)

StatusFilter = Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(JOB_STATUSES) + ")$",
                                           description="only jobs in this status")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic | DryRunPublic,
             responses={200: {"model": DryRunPublic, "description": "dry run: the plan, nothing queued"},
                        400: error_response("the body could not be read: not UTF-8, or nested too deeply"),
                        413: error_response("the body is larger than MAX_BODY_BYTES (refused before it is read)"),
                        429: error_response("more than JOBS_PER_MINUTE jobs in the last minute; see Retry-After"),
                        503: error_response("the database or the broker is unavailable; retry later")})
async def create_job(body: JobCreate, session: SessionDep, tenant: TenantDep, response: Response,
                     idempotency_key: IdempotencyKeyHeader = None) -> JobPublic | DryRunPublic | JSONResponse:
    tenant_id = tenant.id  # a rollback below expires the loaded tenant, and an async session cannot reload it
    await check_submission(session, tenant_id, body)
    if body.dry_run:  # creates nothing, so there is nothing to make idempotent
        response.status_code = status.HTTP_200_OK
        await session.close()  # no pooled connection waits on the plan
        return await run_in_threadpool(_plan, body)  # reads model configs and files: off the event loop
    return await submit_job(session, tenant_id, body.model_dump(mode="json", exclude={"dry_run", "gpu"}),
                            idempotency_key, present=job_public, surface="v1")


def _plan(body: JobCreate) -> DryRunPublic:
    from api.dry_run import plan_job  # imports torch; only dry runs pay for it

    return plan_job(body, body.card())


@router.get("", response_model=JobsPublic)
async def list_jobs(session: SessionDep, tenant: TenantDep, status_filter: StatusFilter = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0) -> JobsPublic:
    where = [Job.tenant_id == tenant.id] + ([Job.status == status_filter] if status_filter else [])
    count = await session.scalar(select(func.count()).select_from(Job).where(*where))
    jobs = await session.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
                                 .limit(limit).offset(offset))
    return JobsPublic(data=[job_public(job) for job in jobs], count=count)


_metrics = Metric.__table__
_newer = _metrics.alias("newer")
# The job's columns and its metric row with the highest step (the (job_id, step) unique index finds it), in Core
# terms: a plain row is cheaper to build than ORM objects, and this is what pollers ask for all the time.
JOB_DETAIL_FOR_KEY = job_for_key(
    *Job.__table__.c, _metrics.c.step.label("metric_step"), _metrics.c["values"].label("metric_values"),
    joins=((_metrics, _metrics.c.id == select(_newer.c.id).where(_newer.c.job_id == Job.__table__.c.id)
            .order_by(_newer.c.step.desc()).limit(1).scalar_subquery()),))


@router.get("/{job_id}", response_model=JobDetail,
            responses={**JOB_RESPONSES, **NOT_MODIFIED_RESPONSE})
async def get_job(job_id: str, request: Request) -> Response:
    """The job's status, progress and latest metrics, with an ETag: a poller that sends it back in If-None-Match
    gets a bodiless 304 until something changed (eta_seconds aside, which moves with the clock)."""
    async with read_connection() as conn:  # one statement, no transaction around it
        row = await authorized_job(request, conn, job_id, JOB_DETAIL_FOR_KEY)
    latest = MetricPublic(step=row.metric_step, values=row.metric_values) if row.metric_step is not None else None
    detail = job_public(row, JobDetail, latest_metrics=latest)
    etag = weak_etag(detail.model_dump_json(exclude={"eta_seconds"}).encode())
    if if_none_match(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    # Serialised here, once: returned as a model, FastAPI would validate it again against response_model.
    return Response(detail.model_dump_json(), media_type="application/json", headers={"ETag": etag})


@router.post("/{job_id}/cancel", response_model=CancelPublic,
             responses={**JOB_RESPONSES, 409: error_response("the job already finished")})
async def cancel_job(job: JobDep, session: SessionDep) -> CancelPublic:
    """A queued job is cancelled at once; a running one is asked to stop (`cancelling`) and the worker finishes it."""
    try:
        return CancelPublic(id=job.id, status=await cancel(session, job))
    except AlreadyFinished as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job already {exc}; nothing to cancel") from None


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses={
    **JOB_RESPONSES, 409: error_response("the job has not finished, or an unfinished job starts from it")})
async def delete_job(job: JobDep, session: SessionDep) -> Response:
    """A finished job and everything it left: metrics, rank snapshots, events, checkpoints and downloads,
    in the artifact store too. Cancel a queued or running job first."""
    try:
        await session.run_sync(lambda sync_session: delete_finished_job(sync_session, job))
    except JobInUse as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
