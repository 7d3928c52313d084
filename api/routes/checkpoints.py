"""The checkpoints a run has written (a resumed run continues from the latest); paths stay server-side."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import JOB_RESPONSES
from api.routes import V1
from api.schemas import CheckpointPublic, CheckpointsPublic
from service.tables import Checkpoint

router = APIRouter(prefix=f"{V1}/jobs/{{job_id}}/checkpoints", tags=["checkpoints"], responses=JOB_RESPONSES)


@router.get("", response_model=CheckpointsPublic)
async def list_checkpoints(job: JobDep, session: SessionDep) -> CheckpointsPublic:
    rows = await session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id).order_by(Checkpoint.step))
    return CheckpointsPublic(data=[CheckpointPublic.model_validate(r) for r in rows])
