"""Job status transitions, each one conditional UPDATE so concurrent workers and API calls cannot race.

queued → running → succeeded | failed | cancelled; running → cancelling → cancelled; queued → cancelled;
running → queued when the worker shuts down (requeue_job) or stops responding (service/reconcile.py).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from service.models import FINISHED_STATUSES, Job, JobEvent, utcnow

ACTIVE_STATUSES = ("running", "cancelling")


def claim_job(session: Session, job_id: str, worker: str, task_id: str | None,
              stale_after_seconds: float) -> bool:
    """Move a queued job to running for this worker; False when another claim won or the job is not runnable.

    A running job whose heartbeat is older than `stale_after_seconds` is taken over too: its worker died
    and the broker redelivered the message. Commits, so the claim is visible before any training starts.
    """
    now = utcnow()
    stale = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < now - timedelta(seconds=stale_after_seconds))
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, or_(Job.status == "queued", (Job.status == "running") & stale))
        .values(status="running", started_at=now, heartbeat_at=now, attempts=Job.attempts + 1,
                worker=worker, celery_task_id=task_id, step=0, error=None)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    session.commit()
    return claimed


def requeue_job(session: Session, job_id: str) -> bool:
    """Hand a run back to the queue because its worker is shutting down (a deploy), not because it failed: the
    attempt is not counted (the next claim counts it again). False when it is no longer running (e.g. a
    cancel was requested meanwhile). The caller commits, then sends the job id."""
    return session.execute(
        update(Job).where(Job.id == job_id, Job.status == "running")
        .values(status="queued", attempts=Job.attempts - 1, heartbeat_at=utcnow(), worker=None)
        .execution_options(synchronize_session=False)
    ).rowcount == 1


def request_cancel(session: Session, job_id: str) -> str | None:
    """Cancel a queued job at once, or ask a running one to stop; returns the new status (None: unchanged).

    The caller commits. A finished job is left as it is.
    """
    now = utcnow()
    if session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                       .values(status="cancelled", finished_at=now)
                       .execution_options(synchronize_session=False)).rowcount:
        session.add(JobEvent(job_id=job_id, level="info", message="cancelled before it started"))
        return "cancelled"
    if session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                       .values(status="cancelling")
                       .execution_options(synchronize_session=False)).rowcount:
        session.add(JobEvent(job_id=job_id, level="info", message="cancellation requested"))
        return "cancelling"
    return None


def finish_job(session: Session, job_id: str, status: str, error: str | None = None) -> bool:
    """Record the outcome of a run this worker holds; the caller commits."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"not a final status: {status!r}")
    return session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
        .values(status=status, finished_at=utcnow(), heartbeat_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    ).rowcount == 1


def beat(session: Session, job_id: str) -> None:
    """Stamp the heartbeat of a run this worker holds; the caller commits."""
    session.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
                    .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
