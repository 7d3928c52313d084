"""The routes under /openai/v1: files and fine_tuning.jobs (create, list, retrieve, cancel, events,
checkpoints). Lists are newest first with an `after` cursor and `has_more`, as OpenAI's are."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import JobDep, SessionDep, TenantDep
from api.downloads import stored_download
from api.errors import SpecError, field_errors
from api.idempotency import IdempotencyKeyHeader
from api.job_presenter import eta_seconds
from api.job_submission import AlreadyFinished, cancel, check_submission, submit_job
from api.openai_compat.errors import OpenAIError
from api.openai_compat.schemas import (
    CheckpointMetrics,
    FileDeleted,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    JobCreateRequest,
    ListPage,
)
from api.openai_compat.translate import (
    continued_job_id,
    fine_tuned_model,
    job_spec,
    param_for,
    present_file,
    present_job,
    unix,
)
from api.schemas import JobCreate
from api.upload_flow import store_upload
from service.files import active_jobs_using, delete_file, tenant_file
from service.tables import Checkpoint, File, Job, JobEvent, Metric

Limit = Annotated[int, Query(ge=1, le=100)]
After = Annotated[str | None, Query(max_length=100, description="the id of the last object of the previous page")]
LEVELS = {"warning": "warn", "error": "error"}

files_router = APIRouter(prefix="/files", tags=["openai files"])
jobs_router = APIRouter(prefix="/fine_tuning/jobs", tags=["openai fine-tuning"])


def page(items: list, limit: int, key=lambda item: item.id) -> ListPage:
    """`items` holds up to limit + 1 objects: the extra one only says there is more."""
    shown = items[:limit]
    return ListPage(data=shown, has_more=len(items) > limit, first_id=key(shown[0]) if shown else None,
                    last_id=key(shown[-1]) if shown else None)


# -- files -------------------------------------------------------------------------------------------

async def owned_file(session: AsyncSession, tenant_id: int, file_id: str) -> File:
    file = await session.run_sync(tenant_file, tenant_id, file_id)
    if file is None:
        raise OpenAIError(404, f"No such File object: {file_id}", "id")
    return file


@files_router.post("", status_code=status.HTTP_200_OK, response_model=FileObject)
async def create_file(request: Request, session: SessionDep, tenant: TenantDep,
                      idempotency_key: IdempotencyKeyHeader = None) -> FileObject | JSONResponse:
    """multipart/form-data with `file` (JSON Lines: chat or prompt/completion) and `purpose`."""
    return await store_upload(request, session, tenant.id, idempotency_key, present=present_file, surface="openai",
                              success_status=status.HTTP_200_OK)


@files_router.get("", response_model=ListPage[FileObject])
async def list_files(session: SessionDep, tenant: TenantDep, limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
                     after: After = None, purpose: Annotated[str | None, Query(max_length=64)] = None,
                     order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc") -> ListPage:
    where = [File.tenant_id == tenant.id] + ([File.purpose == purpose] if purpose else [])
    newest_first = order == "desc"
    if after and (anchor := await session.run_sync(tenant_file, tenant.id, after)):
        before = (File.created_at < anchor.created_at) | and_(File.created_at == anchor.created_at,
                                                              File.id < anchor.id)
        later = (File.created_at > anchor.created_at) | and_(File.created_at == anchor.created_at,
                                                             File.id > anchor.id)
        where.append(before if newest_first else later)
    order_by = (File.created_at.desc(), File.id.desc()) if newest_first else (File.created_at, File.id)
    files = await session.scalars(select(File).where(*where).order_by(*order_by).limit(limit + 1))
    return page([present_file(f) for f in files], limit)


@files_router.get("/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: str, session: SessionDep, tenant: TenantDep) -> FileObject:
    return present_file(await owned_file(session, tenant.id, file_id))


@files_router.get("/{file_id}/content", response_class=Response)
async def file_content(file_id: str, session: SessionDep, tenant: TenantDep, request: Request) -> Response:
    file = await owned_file(session, tenant.id, file_id)
    await session.close()
    return await stored_download(request, file.path, sha256=file.sha256, filename=file.filename,
                                 media_type="application/octet-stream", what="file's content")


@files_router.delete("/{file_id}", response_model=FileDeleted)
async def remove_file(file_id: str, session: SessionDep, tenant: TenantDep) -> FileDeleted:
    file = await owned_file(session, tenant.id, file_id)
    if jobs := await session.run_sync(active_jobs_using, file):
        raise OpenAIError(409, f"{file_id} is used by unfinished fine-tuning job(s) {', '.join(jobs)}; cancel them "
                          "or wait until they finish", "id")
    await session.run_sync(delete_file, file)
    return FileDeleted(id=file_id, deleted=True)


# -- fine-tuning jobs ------------------------------------------------------------------------------------

@jobs_router.post("", response_model=FineTuningJob)
async def create_job(body: JobCreateRequest, session: SessionDep, tenant: TenantDep,
                     idempotency_key: IdempotencyKeyHeader = None) -> FineTuningJob | JSONResponse:
    tenant_id = tenant.id
    training_file = await session.run_sync(tenant_file, tenant_id, body.training_file)
    if training_file is None:
        raise OpenAIError(400, f"invalid training_file: no file {body.training_file} for this API key; upload it "
                          "with files.create(file=..., purpose='fine-tune')", "training_file", "invalid_file")
    continue_from = None
    if (earlier_id := continued_job_id(body.model)) is not None:  # fine-tune a fine-tuned model further
        continue_from = await session.scalar(select(Job).where(Job.id == earlier_id, Job.tenant_id == tenant_id))
        if continue_from is None or continue_from.status != "succeeded":
            raise OpenAIError(400, f"model {body.model!r}: no succeeded fine-tuning job {earlier_id} of yours to "
                              "continue from", "model", "model_not_found")
    spec = job_spec(body, training_file, continue_from)
    try:
        checked = JobCreate.model_validate(spec)
    except ValidationError as exc:
        errors = field_errors(list(exc.errors()), spec)
        raise OpenAIError(400, "; ".join(f"{param_for(e.field)}: {e.message}" for e in errors),
                          param_for(errors[0].field), "invalid_value") from None
    try:
        await check_submission(session, tenant_id, checked)
    except SpecError as exc:  # named by the request's own parameter
        raise OpenAIError(400, f"{param_for(exc.field)}: {exc.message}", param_for(exc.field),
                          "invalid_value") from None
    return await submit_job(session, tenant_id, checked.model_dump(mode="json", exclude={"dry_run", "gpu"}),
                            idempotency_key, present=present_job, surface="openai")


@jobs_router.get("", response_model=ListPage[FineTuningJob])
async def list_jobs(session: SessionDep, tenant: TenantDep, limit: Limit = 20, after: After = None) -> ListPage:
    where = [Job.tenant_id == tenant.id]
    if after and (anchor := await session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.id == after))):
        where.append(or_(Job.created_at < anchor.created_at,
                         and_(Job.created_at == anchor.created_at, Job.id < anchor.id)))
    jobs = await session.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id.desc())
                                 .limit(limit + 1))
    return page([present_job(j, eta_seconds(j)) for j in jobs], limit)


@jobs_router.get("/{job_id}", response_model=FineTuningJob)
async def retrieve_job(job: JobDep) -> FineTuningJob:
    return present_job(job, eta_seconds(job))


@jobs_router.post("/{job_id}/cancel", response_model=FineTuningJob)
async def cancel_job(job: JobDep, session: SessionDep) -> FineTuningJob:
    try:
        await cancel(session, job)
    except AlreadyFinished as exc:
        raise OpenAIError(409, f"fine-tuning job {job.id} already {exc}; nothing to cancel", "job_id") from None
    return present_job(job, eta_seconds(job))


@jobs_router.post("/{job_id}/pause", include_in_schema=False)
@jobs_router.post("/{job_id}/resume", include_in_schema=False)
async def pause_or_resume(job: JobDep) -> None:
    raise OpenAIError(400, "pausing and resuming are not supported by this server: cancel the job instead",
                      None, "unsupported_operation")


def event_number(event_id: str | None) -> int | None:
    digits = (event_id or "").removeprefix("ftevent-")
    return int(digits) if digits.isdigit() and len(digits) < 19 else None


@jobs_router.get("/{job_id}/events", response_model=ListPage[FineTuningJobEvent])
async def list_events(job: JobDep, session: SessionDep, limit: Limit = 20, after: After = None) -> ListPage:
    where = [JobEvent.job_id == job.id]
    if (before := event_number(after)) is not None:
        where.append(JobEvent.id < before)
    events = await session.scalars(select(JobEvent).where(*where).order_by(JobEvent.id.desc()).limit(limit + 1))
    return page([FineTuningJobEvent(id=f"ftevent-{e.id}", created_at=unix(e.ts), level=LEVELS.get(e.level, "info"),
                                    message=e.message) for e in events], limit)


@jobs_router.get("/{job_id}/checkpoints", response_model=ListPage[FineTuningJobCheckpoint])
async def list_checkpoints(job: JobDep, session: SessionDep, limit: Limit = 10, after: After = None) -> ListPage:
    """The resumable checkpoints a job keeps while it runs (and after a cancel), and for a succeeded job its
    final model: the one a user downloads (the intermediate ones are resume points, not downloads)."""
    steps = {c.step: unix(c.created_at) for c in await session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job.id))}
    final = fine_tuned_model(job)
    if final:
        steps[job.step] = unix(job.finished_at)
    if after and (anchor := after.rpartition("-step-")[2]).isdigit():
        steps = {s: t for s, t in steps.items() if s < int(anchor)}
    chosen = sorted(steps, reverse=True)[:limit + 1]
    values = {m.step: m.values for m in await session.scalars(
        select(Metric).where(Metric.job_id == job.id, Metric.step.in_(chosen)))} if chosen else {}
    name = final or f"ft:{job.spec['model']}:{job.spec.get('name') or 'adalora'}:{job.id}"
    return page([FineTuningJobCheckpoint(
        id=f"ftckpt-{job.id}-step-{step}", created_at=steps[step], fine_tuning_job_id=job.id, step_number=step,
        fine_tuned_model_checkpoint=name if final and step == job.step else f"{name}:ckpt-step-{step}",
        metrics=CheckpointMetrics(step=step, train_loss=values.get(step, {}).get("loss"),
                                  valid_loss=values.get(step, {}).get("eval_loss"),
                                  full_valid_loss=values.get(step, {}).get("eval_loss")))
        for step in chosen], limit)
