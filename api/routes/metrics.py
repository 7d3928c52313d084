"""A job's training metrics, one row per logged optimizer step."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import JOB_RESPONSES
from api.routes import MAX_INT, V1
from api.schemas import MetricColumnsPublic, MetricPublic, MetricsPublic
from service.tables import Metric

router = APIRouter(prefix=f"{V1}/jobs/{{job_id}}/metrics", tags=["metrics"], responses=JOB_RESPONSES)


# Step 0 holds the evaluation before training, so the default (-1) starts there.
AfterStep = Annotated[int, Query(ge=-1, le=MAX_INT, description="only steps after this one (-1: from step 0, "
                                 "the evaluation before training)")]


async def read_metrics(session: SessionDep, job_id: str, after_step: int, limit: int) -> list[Metric]:
    return list((await session.scalars(select(Metric).where(Metric.job_id == job_id, Metric.step > after_step)
                                       .order_by(Metric.step).limit(limit + 1))).all())


@router.get("", response_model=MetricsPublic)
async def list_metrics(job: JobDep, session: SessionDep, after_step: AfterStep = -1,
                       limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> MetricsPublic:
    rows = await read_metrics(session, job.id, after_step, limit)
    return MetricsPublic(data=[MetricPublic.model_validate(r) for r in rows[:limit]], has_more=len(rows) > limit)


@router.get("/columns", response_model=MetricColumnsPublic)
async def metric_columns(job: JobDep, session: SessionDep, after_step: AfterStep = -1,
                         limit: Annotated[int, Query(ge=1, le=20000)] = 5000) -> MetricColumnsPublic:
    """The rows of GET /metrics as one list per metric, the form chart libraries plot."""
    rows = await read_metrics(session, job.id, after_step, limit)
    page = rows[:limit]
    names = sorted({name for row in page for name in row.values})
    return MetricColumnsPublic(steps=[row.step for row in page],
                               columns={name: [row.values.get(name) for row in page] for name in names},
                               has_more=len(rows) > limit)
