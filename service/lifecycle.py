"""Job status transitions, each one conditional UPDATE so concurrent workers and API calls cannot race.
Every write of a job's status is here; the API, the worker and the reconciler call these.

queued → running → succeeded | failed | cancelled; running → cancelling → cancelled; queued → cancelled;
queued → failed when the broker refuses its message (fail_unsent); running → queued when the worker shuts down
(requeue_job) or stops responding (recover_dead_run); running → failed when its worker stopped responding
MAX_ATTEMPTS times (recover_dead_run, or claim_job when the broker redelivers the message first);
cancelling → cancelled when its worker stopped responding (recover_dead_run).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from service.db import rowcount
from service.settings import get_settings
from service.tables import FINISHED_STATUSES, RUNNING_STATUSES, Job, JobEvent, utcnow

# When a queued job's message was last sent: its claim overwrites heartbeat_at, the reconciler stamps a re-send.
LAST_SENT = func.coalesce(Job.heartbeat_at, Job.created_at)


class Claim(NamedTuple):
    attempts: int          # this start included
    spec: dict[str, Any]   # the stored job spec


def claim_job(session: Session, job_id: str, worker: str, task_id: str | None,
              stale_after_seconds: float, max_attempts: int | None = None) -> Claim | None:
    """Move a queued job to running for this worker and return what the run needs, read by the same statement
    (UPDATE ... RETURNING); None when another claim won or the job is not runnable.

    A running job whose heartbeat is older than `stale_after_seconds` is taken over too: its worker died
    and the broker redelivered the message. Unless it was already started `max_attempts` times (default:
    MAX_ATTEMPTS): then it is failed instead, as the reconciler would, and None returned. Commits, so the
    claim is visible before any training starts.
    """
    if max_attempts is None:
        max_attempts = get_settings().max_attempts
    now = utcnow()
    stale = (Job.status == "running") & or_(Job.heartbeat_at.is_(None),
                                            Job.heartbeat_at < now - timedelta(seconds=stale_after_seconds))
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, or_(Job.status == "queued", stale & (Job.attempts < max_attempts)))
        .values(status="running", started_at=now, heartbeat_at=now, attempts=Job.attempts + 1,
                worker=worker, celery_task_id=task_id, step=0, error=None)
        .returning(Job.attempts, Job.spec)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if row is None:
        _fail_if_out_of_attempts(session, job_id, stale & (Job.attempts >= max_attempts), now)
    session.commit()
    return None if row is None else Claim(*row)


def out_of_attempts_message(attempts: int, last_seen: datetime | None) -> str:
    """Why a job whose worker kept dying was failed (the reconciler and a stale takeover say the same)."""
    seen = f"last seen at {last_seen:%Y-%m-%d %H:%M:%S} UTC" if last_seen else "it never sent a heartbeat"
    return (f"the worker running this job stopped responding {attempts} times; {seen}. Retry with fewer "
            "resources (batch_size, max_seq_len) or ask the operator to check the workers")


def _fail_if_out_of_attempts(session: Session, job_id: str, condition: ColumnElement[bool], now: datetime) -> None:
    row = session.execute(select(Job.attempts, Job.heartbeat_at).where(Job.id == job_id, condition)).one_or_none()
    if row is not None:
        _fail_out_of_attempts(session, job_id, (condition,), *row, now)


def _fail_out_of_attempts(session: Session, job_id: str, conditions: tuple, attempts: int,
                          last_seen: datetime | None, now: datetime) -> bool:
    message = out_of_attempts_message(attempts, last_seen)
    if not _update(session, job_id, conditions, status="failed", finished_at=now, error=message):
        return False
    session.add(JobEvent(job_id=job_id, level="error", message=message))
    return True


def fail_unsent(session: Session, job_id: str, error: str) -> bool:
    """Fail a job just queued whose message the broker would not take, rather than leave it queued forever.
    The caller commits."""
    return _update(session, job_id, (Job.status == "queued",), status="failed", finished_at=utcnow(), error=error)


def mark_resent(session: Session, job_id: str, cutoff: datetime, now: datetime) -> bool:
    """Stamp a queued job whose message was last sent before `cutoff` as sent again now; False when it was
    claimed or re-sent meanwhile. The caller commits, then sends the job id."""
    return _update(session, job_id, (Job.status == "queued", LAST_SENT < cutoff), heartbeat_at=now)


def recover_dead_run(session: Session, job_id: str, status: str, attempts: int, last_seen: datetime,
                     stale_cutoff: datetime, now: datetime, max_attempts: int) -> str | None:
    """A run whose worker stopped responding (heartbeat before `stale_cutoff`): a cancelling one is cancelled,
    one started `max_attempts` times is failed, any other is queued again. Returns the new status; None when
    someone acted on the job meanwhile. The caller commits (a queued one before it sends the job id)."""
    still_stale = (Job.status == status, Job.heartbeat_at < stale_cutoff)
    seen = f"last seen at {last_seen:%Y-%m-%d %H:%M:%S} UTC"
    if status == "cancelling":
        if not _update(session, job_id, still_stale, status="cancelled", finished_at=now):
            return None
        session.add(JobEvent(job_id=job_id, level="info", message=f"cancelled: its worker stopped responding ({seen})"))
        return "cancelled"
    if attempts >= max_attempts:
        return "failed" if _fail_out_of_attempts(session, job_id, still_stale, attempts, last_seen, now) else None
    if not _update(session, job_id, still_stale, status="queued", heartbeat_at=now, worker=None):
        return None
    session.add(JobEvent(job_id=job_id, level="warning",
                         message=f"its worker stopped responding ({seen}); queued again"))
    return "queued"


def requeue_job(session: Session, job_id: str) -> bool:
    """Hand a run back to the queue because its worker is shutting down (a deploy), not because it failed: the
    attempt is not counted (the next claim counts it again). False when it is no longer running (e.g. a
    cancel was requested meanwhile). The caller commits, then sends the job id."""
    return rowcount(
        session, update(Job).where(Job.id == job_id, Job.status == "running")
        .values(status="queued", attempts=Job.attempts - 1, heartbeat_at=utcnow(), worker=None)
        .execution_options(synchronize_session=False)
    ) == 1


def request_cancel(session: Session, job_id: str) -> str | None:
    """Cancel a queued job at once, or ask a running one to stop; returns the new status (None: unchanged).

    The caller commits. A finished job is left as it is.
    """
    now = utcnow()
    if rowcount(session, update(Job).where(Job.id == job_id, Job.status == "queued")
                .values(status="cancelled", finished_at=now)
                .execution_options(synchronize_session=False)):
        session.add(JobEvent(job_id=job_id, level="info", message="cancelled before it started"))
        return "cancelled"
    if rowcount(session, update(Job).where(Job.id == job_id, Job.status == "running")
                .values(status="cancelling")
                .execution_options(synchronize_session=False)):
        session.add(JobEvent(job_id=job_id, level="info", message="cancellation requested"))
        return "cancelling"
    return None


def finish_job(session: Session, job_id: str, status: str, error: str | None = None) -> bool:
    """Record the outcome of a run this worker holds; the caller commits."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"not a final status: {status!r}")
    return rowcount(
        session, update(Job).where(Job.id == job_id, Job.status.in_(RUNNING_STATUSES))
        .values(status=status, finished_at=utcnow(), heartbeat_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    ) == 1


def beat(session: Session, job_id: str) -> None:
    """Stamp the heartbeat of a run this worker holds; the caller commits."""
    session.execute(update(Job).where(Job.id == job_id, Job.status.in_(RUNNING_STATUSES))
                    .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))


def _update(session: Session, job_id: str, conditions: tuple, **values) -> bool:
    return rowcount(session, update(Job).where(Job.id == job_id, *conditions).values(**values)
                    .execution_options(synchronize_session=False)) == 1
