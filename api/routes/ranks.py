"""How the rank budget was spread over the adapted modules, snapshot by snapshot."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from api.deps import JobDep, SessionDep
from api.errors import JOB_RESPONSES, error_response
from api.routes import MAX_INT, V1
from api.schemas import ModulePlacePublic, RankColumnsPublic, RankSnapshotPublic, RanksPublic
from service.module_names import ordered
from service.tables import RankSnapshot

router = APIRouter(prefix=f"{V1}/jobs/{{job_id}}/ranks", tags=["ranks"], responses=JOB_RESPONSES)


@router.get("", response_model=RanksPublic, responses={
    404: error_response("no such job, or no rank snapshot at the requested step")})
async def list_ranks(job: JobDep, session: SessionDep,
                     step: Annotated[int | None, Query(ge=0, le=MAX_INT,
                                                       description="only the snapshot taken at this step")] = None,
                     ) -> RanksPublic:
    snapshots = await read_snapshots(session, job.id, None if step is None else RankSnapshot.step == step)
    if step is not None and not snapshots:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rank snapshot at step {step}")
    return RanksPublic(data=[RankSnapshotPublic.model_validate(s) for s in snapshots],
                       final_rank_pattern=await final_pattern(session, job.id))


async def read_snapshots(session: SessionDep, job_id: str, where=None) -> list[RankSnapshot]:
    """The job's rank snapshots in step order, narrowed by `where` (an SQL condition on RankSnapshot)."""
    query = select(RankSnapshot).where(RankSnapshot.job_id == job_id).order_by(RankSnapshot.step)
    return list((await session.scalars(query if where is None else query.where(where))).all())


async def final_pattern(session: SessionDep, job_id: str) -> dict[str, int] | None:
    return await session.scalar(select(RankSnapshot.ranks).where(RankSnapshot.job_id == job_id, RankSnapshot.final)
                                .order_by(RankSnapshot.step.desc()).limit(1))


@router.get("/columns", response_model=RankColumnsPublic)
async def rank_columns(job: JobDep, session: SessionDep,
                       after_step: Annotated[int | None, Query(ge=0, le=MAX_INT,
                                                               description="only snapshots after this step")] = None,
                       ) -> RankColumnsPublic:
    """Every snapshot as a row of a matrix (snapshot x module, modules grouped by layer and type): a heatmap."""
    snapshots = await read_snapshots(session, job.id, None if after_step is None else RankSnapshot.step > after_step)
    names = sorted({name for s in snapshots for name in s.ranks})
    if not names:  # a page after the last snapshot still names the modules, so rows can be appended to a chart
        first = await session.scalar(select(RankSnapshot.ranks).where(RankSnapshot.job_id == job.id)
                                     .order_by(RankSnapshot.step).limit(1))
        names = sorted(first or {})
    modules = ordered(names)
    return RankColumnsPublic(
        modules=[ModulePlacePublic.model_validate(m) for m in modules], steps=[s.step for s in snapshots],
        budgets=[s.budget for s in snapshots], adapter_params=[s.adapter_params for s in snapshots],
        final=[s.final for s in snapshots], ranks=[[s.ranks.get(m.name) for m in modules] for s in snapshots],
        final_rank_pattern=await final_pattern(session, job.id))
