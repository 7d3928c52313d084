"""A job's training metrics, one row per logged optimizer step."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import JOB_RESPONSES
from api.routes import MAX_INT, V1
from api.schemas import MetricPublic, MetricsPublic
from service.models import Metric

router = APIRouter(prefix=f"{V1}/jobs/{{job_id}}/metrics", tags=["metrics"], responses=JOB_RESPONSES)


@router.get("", response_model=MetricsPublic)
async def list_metrics(job: JobDep, session: SessionDep,
                       after_step: Annotated[int, Query(ge=0, le=MAX_INT, description="only steps after this one")] = 0,
                       limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> MetricsPublic:
    rows = (await session.scalars(select(Metric).where(Metric.job_id == job.id, Metric.step > after_step)
                                  .order_by(Metric.step).limit(limit + 1))).all()
    return MetricsPublic(data=[MetricPublic.model_validate(r) for r in rows[:limit]], has_more=len(rows) > limit)
