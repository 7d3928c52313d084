"""How the rank budget was spread over the adapted modules, snapshot by snapshot."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import JOB_RESPONSES, error_response
from api.routes import MAX_INT, V1
from api.schemas import RankSnapshotPublic, RanksPublic
from service.models import RankSnapshot

router = APIRouter(prefix=f"{V1}/jobs/{{job_id}}/ranks", tags=["ranks"], responses=JOB_RESPONSES)


@router.get("", response_model=RanksPublic, responses={
    404: error_response("no such job, or no rank snapshot at the requested step")})
async def list_ranks(job: JobDep, session: SessionDep,
                     step: Annotated[int | None, Query(ge=0, le=MAX_INT,
                                                       description="only the snapshot taken at this step")] = None,
                     ) -> RanksPublic:
    query = select(RankSnapshot).where(RankSnapshot.job_id == job.id).order_by(RankSnapshot.step)
    if step is not None:
        query = query.where(RankSnapshot.step == step)
    snapshots = (await session.scalars(query)).all()
    if step is not None and not snapshots:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rank snapshot at step {step}")
    final = await session.scalar(select(RankSnapshot.ranks).where(RankSnapshot.job_id == job.id, RankSnapshot.final)
                           .order_by(RankSnapshot.step.desc()).limit(1))
    return RanksPublic(data=[RankSnapshotPublic.model_validate(s) for s in snapshots], final_rank_pattern=final)
