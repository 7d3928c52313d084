"""The reconciler: puts back on the broker the jobs whose message or worker was lost.

The job row is the truth and the broker only carries ids, so anything the broker forgot (a Redis restart
empties the queue here: it keeps nothing on disk) or a worker took down with it (killed, machine gone) is
found from the rows:

- a `queued` job last sent more than `queued_grace_seconds` ago is sent again;
- a `running`/`cancelling` job whose heartbeat is older than `stale_job_seconds` is put back to `queued`
  and sent again, or failed once it has been started `max_attempts` times (a cancelling one is cancelled).

For a queued job `heartbeat_at` records when its message was last sent (the worker's claim overwrites it).
The changes are service.lifecycle's, each one conditional UPDATE, so two reconcilers at once never both act on
a job; a duplicate message is harmless anyway, because a worker's claim is atomic and a second claim finds
nothing to run.

Each pass also deletes the Idempotency-Key answers older than IDEMPOTENCY_TTL_HOURS (api/idempotency.py
ignores them already, so how often this runs only bounds the table's size).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.db import rowcount
from service.lifecycle import LAST_SENT, mark_resent, recover_dead_run
from service.periodic import Periodic
from service.settings import Settings, get_settings
from service.tables import RUNNING_STATUSES, IdempotentRequest, Job, utcnow

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    """What one pass did, by job id."""

    resent: list[str] = field(default_factory=list)      # queued jobs whose message may have been lost
    requeued: list[str] = field(default_factory=list)    # runs whose worker stopped responding
    failed: list[str] = field(default_factory=list)      # ... for the max_attempts-th time
    cancelled: list[str] = field(default_factory=list)   # cancel requested, and then the worker stopped
    expired_keys: int = 0                                 # Idempotency-Key answers past their TTL, deleted


def reconcile(session: Session, now: datetime, settings: Settings | None = None,
              send: Callable[[str, dict], object] | None = None) -> Reconciled:
    """One pass; commits each job's change before sending its id, so a sent id always names a queued row."""
    from service.queue import enqueue_job

    settings, send = settings or get_settings(), send or enqueue_job
    done = Reconciled()
    queued_cutoff = now - timedelta(seconds=settings.queued_grace_seconds)
    for job_id, spec in session.execute(select(Job.id, Job.spec)
                                        .where(Job.status == "queued", LAST_SENT < queued_cutoff)).all():
        if mark_resent(session, job_id, queued_cutoff, now):
            session.commit()
            done.resent.append(job_id)
            send(job_id, spec)

    stale_cutoff = now - timedelta(seconds=settings.stale_job_seconds)
    stale = session.execute(select(Job.id, Job.status, Job.attempts, Job.heartbeat_at, Job.spec)
                            .where(Job.status.in_(RUNNING_STATUSES), Job.heartbeat_at < stale_cutoff)).all()
    for job_id, status, attempts, seen, spec in stale:
        outcome = recover_dead_run(session, job_id, status, attempts, seen, stale_cutoff, now, settings.max_attempts)
        if outcome == "queued":
            session.commit()
            done.requeued.append(job_id)
            send(job_id, spec)
        elif outcome == "failed":
            done.failed.append(job_id)
        elif outcome == "cancelled":
            done.cancelled.append(job_id)
        session.commit()
    done.expired_keys = delete_expired_idempotency_keys(session, now, settings)
    session.commit()
    return done


def idempotency_cutoff(now: datetime, settings: Settings) -> datetime | None:
    """Idempotency-Key answers stored before this have expired; None when IDEMPOTENCY_TTL_HOURS=0 (never)."""
    if settings.idempotency_ttl_hours <= 0:
        return None
    return now - timedelta(hours=settings.idempotency_ttl_hours)


def delete_expired_idempotency_keys(session: Session, now: datetime, settings: Settings) -> int:
    """Deletes the expired answers; returns how many. The caller commits."""
    cutoff = idempotency_cutoff(now, settings)
    if cutoff is None:
        return 0
    return rowcount(session, delete(IdempotentRequest).where(IdempotentRequest.created_at < cutoff)
                    .execution_options(synchronize_session=False))


def reconciler_thread(interval: float) -> Periodic:
    """`reconcile` every `interval` seconds in a daemon thread (one per worker process: passes from several
    processes are safe, see the module docstring)."""
    return Periodic("reconciler", interval, _reconcile_pass)


def _reconcile_pass() -> None:
    from service.db import session_scope
    from service.scratch import prune_scratch

    with session_scope() as session:
        done = reconcile(session, utcnow())
    if any(vars(done).values()):
        log.info("reconciler: %s", done)
    prune_scratch(get_settings().scratch_max_bytes)  # this worker host's copies of what was deleted, and its bound
