"""Job status transitions are single conditional UPDATEs: racing claims and cancels cannot both win."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select, update

from service.db import session_scope
from service.lifecycle import claim_job, finish_job, request_cancel
from service.settings import get_settings
from service.tables import Job, JobEvent, utcnow
from tests.helpers import new_job

STALE_AFTER = 60.0


def get(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def claim(job_id: str, worker: str, max_attempts: int | None = None) -> bool:
    with session_scope() as session:
        return claim_job(session, job_id, worker, task_id=None, stale_after_seconds=STALE_AFTER,
                         max_attempts=max_attempts) is not None


def stop_heartbeat(job_id: str) -> None:
    """As if its worker died a stale period ago."""
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(heartbeat_at=utcnow() - timedelta(seconds=STALE_AFTER + 1)))


def test_two_racing_claims_on_one_job_only_one_wins(engine):
    job_id = new_job()
    barrier, results = threading.Barrier(2), {}

    def race(name: str) -> None:
        barrier.wait()
        results[name] = claim(job_id, name)

    threads = [threading.Thread(target=race, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [False, True]
    job = get(job_id)
    winner = next(name for name, won in results.items() if won)
    assert (job.status, job.worker, job.attempts) == ("running", winner, 1)


def test_a_redelivered_message_does_not_restart_a_live_run(engine):
    job_id = new_job()
    assert claim(job_id, "first")
    assert not claim(job_id, "second")
    assert (get(job_id).worker, get(job_id).attempts) == ("first", 1)


def test_a_run_without_heartbeat_is_taken_over(engine):
    job_id = new_job()
    assert claim(job_id, "died")
    stop_heartbeat(job_id)
    assert claim(job_id, "rescuer")
    assert (get(job_id).worker, get(job_id).attempts) == ("rescuer", 2)


def test_a_redelivery_after_the_last_allowed_attempt_died_fails_the_job_instead_of_running_it(engine):
    job_id = new_job()
    for worker in ("first", "second", "third"):
        stop_heartbeat(job_id)  # a no-op before the first claim, which takes a queued job anyway
        assert claim(job_id, worker, max_attempts=3)
    stop_heartbeat(job_id)
    seen = get(job_id).heartbeat_at
    assert not claim(job_id, "fourth", max_attempts=3)
    job = get(job_id)
    assert (job.status, job.attempts, job.worker) == ("failed", 3, "third") and job.finished_at is not None
    assert job.error.startswith(f"the worker running this job stopped responding 3 times; last seen at "
                                f"{seen:%Y-%m-%d %H:%M:%S} UTC. Retry with fewer resources"), job.error
    with session_scope() as session:
        events = session.execute(select(JobEvent.level, JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert events == [("error", job.error)]
    assert not claim(job_id, "fifth", max_attempts=3) and get(job_id).status == "failed"


def test_max_attempts_leaves_a_live_run_alone_and_defaults_to_the_setting(engine, monkeypatch):
    job_id = new_job()
    assert claim(job_id, "first", max_attempts=1)
    assert not claim(job_id, "second", max_attempts=1)  # the heartbeat is fresh: nothing happens
    assert (get(job_id).status, get(job_id).error) == ("running", None)
    monkeypatch.setenv("MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    try:
        stop_heartbeat(job_id)
        assert not claim(job_id, "second")  # no max_attempts given: MAX_ATTEMPTS=1 applies
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert get(job_id).status == "failed"


def test_cancel_of_a_queued_job_is_immediate_and_no_worker_claims_it(engine):
    job_id = new_job()
    with session_scope() as session:
        assert request_cancel(session, job_id) == "cancelled"
    assert get(job_id).status == "cancelled" and get(job_id).finished_at is not None
    assert not claim(job_id, "late")


def test_cancel_of_a_running_job_asks_it_to_stop_and_the_runner_finishes_it(engine):
    job_id = new_job()
    assert claim(job_id, "w")
    with session_scope() as session:
        assert request_cancel(session, job_id) == "cancelling"
    with session_scope() as session:
        assert finish_job(session, job_id, "cancelled")
    assert get(job_id).status == "cancelled"


def test_finished_jobs_ignore_cancel_and_finish(engine):
    job_id = new_job()
    assert claim(job_id, "w")
    with session_scope() as session:
        assert finish_job(session, job_id, "succeeded")
    with session_scope() as session:
        assert request_cancel(session, job_id) is None
        assert not finish_job(session, job_id, "failed", "too late")
    assert (get(job_id).status, get(job_id).error) == ("succeeded", None)


def test_a_claim_reads_the_attempt_and_the_spec_in_its_own_statement(engine):
    job_id = new_job()
    with session_scope() as session:
        won = claim_job(session, job_id, "first", task_id=None, stale_after_seconds=STALE_AFTER)
        stored = session.get(Job, job_id).spec
    assert won is not None and won.attempts == 1 and won.spec == stored
