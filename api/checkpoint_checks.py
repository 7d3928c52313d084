"""`from_checkpoint` checked before a job is queued: the earlier job is the caller's, has finished, has the
weights named (its final state, or a kept checkpoint at that step), and fits this spec (model, task, init_r,
target modules), so the worker never starts a run it would have to fail."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import SpecError
from service.jobspec import JobSpec
from service.tables import FINISHED_STATUSES, Checkpoint, Job

FIELD = "from_checkpoint"
MUST_MATCH = (("model", lambda s: s.get("model")), ("task", lambda s: s.get("task")),
              ("budget.init_r", lambda s: s.get("budget", {}).get("init_r")),
              ("budget.target_modules", lambda s: s.get("budget", {}).get("target_modules")))


def check_from_checkpoint(session: Session, tenant_id: int, spec: JobSpec) -> None:
    source = spec.checkpoint_source()
    if source is None:
        return
    job_id, step = source
    earlier = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if earlier is None:
        raise SpecError(FIELD, f"no job {job_id} of yours (GET /v1/jobs lists them)")
    steps = sorted(session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)))
    kept = ", ".join(f"{job_id}:{s}" for s in steps) or "none"
    if earlier.status not in FINISHED_STATUSES:
        raise SpecError(FIELD, f"job {job_id} is {earlier.status}: start from it once it has finished (or "
                               "cancel it and name one of its checkpoints)")
    if step is None and earlier.status != "succeeded":
        raise SpecError(FIELD, f"job {job_id} {earlier.status}, so it has no final weights; name one of its "
                               f"checkpoints as <job id>:<step> (kept: {kept})")
    if step is not None and step not in steps:
        raise SpecError(FIELD, f"job {job_id} has no checkpoint at step {step} (kept: {kept}; a succeeded job "
                               f"keeps only its final weights: name it as {job_id})")
    ours = spec.model_dump(mode="json")
    for field, value_of in MUST_MATCH:
        if value_of(ours) != value_of(earlier.spec):
            raise SpecError(field, f"must be {value_of(earlier.spec)!r} as in job {job_id} to start from it "
                                   f"(not {value_of(ours)!r})")
