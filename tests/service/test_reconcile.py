"""The reconciler finds lost messages and dead workers from the job rows, and two at once act once."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from service.db import get_sessionmaker, session_scope
from service.reconcile import delete_expired_idempotency_keys, reconcile
from service.settings import get_settings
from service.tables import IdempotentRequest, Job, JobEvent, Tenant, utcnow
from tests.helpers import new_job

GRACE, STALE = 60.0, 120.0


def settings():
    return get_settings().model_copy(update={"queued_grace_seconds": GRACE, "stale_job_seconds": STALE,
                                             "max_attempts": 3})


def aged_job(status: str = "queued", age: float = 0.0, heartbeat_age: float | None = None, attempts: int = 0) -> str:
    """A job of a new tenant created `age` seconds ago, its heartbeat (if any) `heartbeat_age` seconds ago."""
    now = utcnow()
    return new_job(status=status, created_at=now - timedelta(seconds=age), attempts=attempts,
                   heartbeat_at=None if heartbeat_age is None else now - timedelta(seconds=heartbeat_age))


def run_pass(job_ids: set[str]) -> list[str]:
    """One reconcile pass; the ids it sent, among `job_ids` (other tests' jobs share the database)."""
    sent: list[str] = []
    with session_scope() as session:
        reconcile(session, utcnow(), settings(), send=lambda job_id, _spec: sent.append(job_id))
    return [job_id for job_id in sent if job_id in job_ids]


def get(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def test_a_queued_job_past_the_grace_period_is_sent_again_once_per_grace_period(engine):
    lost, fresh = aged_job(age=GRACE + 5), aged_job(age=1)
    assert run_pass({lost, fresh}) == [lost]
    assert run_pass({lost, fresh}) == []  # just sent: wait another grace period
    with session_scope() as session:  # a grace period later, still unclaimed
        session.execute(update(Job).where(Job.id == lost).values(heartbeat_at=utcnow() - timedelta(seconds=GRACE + 1)))
    assert run_pass({lost, fresh}) == [lost]
    assert get(lost).status == "queued" and get(lost).attempts == 0


def test_a_run_whose_worker_stopped_is_queued_again_and_sent(engine):
    dead = aged_job("running", heartbeat_age=STALE + 5, attempts=1)
    alive = aged_job("running", heartbeat_age=5, attempts=1)
    assert run_pass({dead, alive}) == [dead]
    job = get(dead)
    assert (job.status, job.attempts, job.worker) == ("queued", 1, None)  # the next claim counts the attempt
    assert get(alive).status == "running"


def test_a_run_whose_worker_stopped_max_attempts_times_fails_with_a_readable_reason(engine):
    job_id = aged_job("running", heartbeat_age=STALE + 5, attempts=3)
    seen = get(job_id).heartbeat_at
    assert run_pass({job_id}) == []
    job = get(job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error.startswith(f"the worker running this job stopped responding 3 times; last seen at "
                                f"{seen:%Y-%m-%d %H:%M:%S} UTC"), job.error
    with session_scope() as session:
        levels = session.scalars(select(JobEvent.level).where(JobEvent.job_id == job_id)).all()
    assert levels == ["error"]


def test_a_cancel_requested_before_the_worker_stopped_ends_cancelled(engine):
    job_id = aged_job("cancelling", heartbeat_age=STALE + 5, attempts=1)
    assert run_pass({job_id}) == []
    assert get(job_id).status == "cancelled"


def test_two_reconcilers_at_once_send_each_job_once(engine):
    jobs = {aged_job(age=GRACE + 5) for _ in range(5)} | {
        aged_job("running", heartbeat_age=STALE + 5, attempts=1) for _ in range(5)}
    barrier, sent, lock = threading.Barrier(2), [], threading.Lock()

    def reconciler() -> None:
        session = get_sessionmaker()()
        try:
            barrier.wait()
            mine: list[str] = []
            reconcile(session, utcnow(), settings(), send=lambda job_id, _spec: mine.append(job_id))
            with lock:
                sent.extend(job_id for job_id in mine if job_id in jobs)
        finally:
            session.close()

    threads = [threading.Thread(target=reconciler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent) == sorted(jobs)  # every job once, none twice
    assert {get(job_id).status for job_id in jobs} == {"queued"}


def test_each_pass_deletes_the_idempotency_answers_past_their_ttl(engine):
    now = utcnow()
    with session_scope() as session:
        tenant = Tenant(name=f"reconcile-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        session.flush()
        for key, age in (("old", 25), ("fresh", 23)):
            session.add(IdempotentRequest(tenant_id=tenant.id, key=key, request_hash="0" * 64, status_code=201,
                                          response_body={}, created_at=now - timedelta(hours=age)))
    day = settings().model_copy(update={"idempotency_ttl_hours": 24})
    with session_scope() as session:
        assert reconcile(session, now, day, send=lambda *_: None).expired_keys >= 1  # other tests' rows too
    with session_scope() as session:
        keys = session.scalars(select(IdempotentRequest.key).where(IdempotentRequest.tenant_id == tenant.id)).all()
    assert keys == ["fresh"]
    forever = day.model_copy(update={"idempotency_ttl_hours": 0})
    with session_scope() as session:  # a year on, with IDEMPOTENCY_TTL_HOURS=0 nothing expires
        assert delete_expired_idempotency_keys(session, now + timedelta(days=365), forever) == 0
