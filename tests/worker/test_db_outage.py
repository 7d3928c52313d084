"""Postgres goes away mid-run and comes back: the run trains on, keeps what it reports buffered, retries with
capped backoff (one warning per outage), and writes everything once the database is back, each step once.

Everything here runs on a Postgres server of its own (tests/throwaway_postgres.py), stopped and started with
pg_ctl; the shared server is never touched.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import pytest
from sqlalchemy import event, select, update

from service import artifacts
from service.db import get_engine, session_scope
from service.store import get_store
from service.tables import Artifact, Checkpoint, Job, JobEvent, Metric, RankSnapshot
from tests.conftest import (
    claimed_job,
    migrate,
    service_environment,
    start_worker,
    stop_process,
    tiny_job_spec,
    wait_for,
)
from tests.helpers import job_row, submit, wait_until_finished
from tests.throwaway_postgres import throwaway_postgres
from worker.db_link import DatabaseLink, DatabaseUnavailable
from worker.reporting import ProgressReporter

# What adalora_core.plan_run reports for two modules at init_r 4 -> 2 on a budget in parameters (10 each per rank).
TWO_MODULE_PLAN = {"ranks_init": {"a": 4, "b": 4}, "budget_unit": "params", "budget_init": 80, "budget_final": 40,
                   "adapter_params_init": 80, "adapter_params_start": 80}


@pytest.fixture(scope="module")
def postgres():
    with throwaway_postgres() as server:
        migrate(server.url)
        yield server


@pytest.fixture(scope="module")
def outage_env(postgres, tmp_path_factory, tiny_model_dir, tiny_dataset_file):
    """Like conftest's service_env, on the throwaway server; the broker is a SQLite file, so the outage
    takes nothing down but the database."""
    root = tmp_path_factory.mktemp("service")
    env = {
        "DATABASE_URL": postgres.url,
        "ARTIFACT_DIR": str(root / "artifacts"),
        "MODEL_DIRS": str(tiny_model_dir.parent),
        "DATA_DIRS": str(tiny_dataset_file.parent),
        "QUEUE_NAME": f"training-test-{uuid.uuid4().hex[:8]}",
        "BROKER_URL": f"sqla+sqlite:///{root / 'broker.sqlite'}",
        "METRICS_FLUSH_STEPS": "5",
        "METRICS_FLUSH_SECONDS": "1",
        "CANCEL_POLL_SECONDS": "0.2",
    }
    with service_environment(env):
        yield env


@pytest.fixture
def running_job(outage_env) -> str:
    return claimed_job("outage")


@pytest.fixture
def connection_attempts(outage_env) -> list[float]:
    """The time of every new connection the engine tries to open (during an outage: every retry)."""
    attempts: list[float] = []
    engine = get_engine()
    listener = lambda *_args: attempts.append(time.monotonic())  # noqa: E731
    event.listen(engine, "do_connect", listener)
    yield attempts
    event.remove(engine, "do_connect", listener)


def train(reporter: ProgressReporter, steps: range, slowest: list[float]) -> None:
    """What the loop does per step, timing the callbacks the hot path calls."""
    for step in steps:
        started = time.monotonic()
        reporter.on_metrics(step, {"loss": 1.0 / step, "budget": 8.0})
        if step % 10 == 0:
            reporter.on_allocation(step, 8, {"a": 4, "b": 4}, False, 80)
        assert not reporter.should_stop()
        slowest[0] = max(slowest[0], time.monotonic() - started)
        time.sleep(0.02)


def metric_steps(job_id: str) -> list[int]:
    with session_scope() as session:
        return session.scalars(select(Metric.step).where(Metric.job_id == job_id).order_by(Metric.step)).all()


def outage_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "worker.db_link" and r.levelno == logging.WARNING]


def test_progress_reported_during_an_outage_is_kept_and_written_once_when_postgres_is_back(
        postgres, running_job, connection_attempts, caplog):
    job_id, slowest = running_job, [0.0]
    caplog.set_level(logging.WARNING, logger="worker.db_link")
    checkpoint = artifacts.job_dir(job_id) / "checkpoints" / "step-60.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a real checkpoint")
    reporter = ProgressReporter(job_id, flush_steps=5, flush_seconds=0.5, poll_seconds=0.1, attempt=1,
                                link=DatabaseLink(job_id, limit_seconds=120))
    with reporter:
        reporter.on_start(100, TWO_MODULE_PLAN)
        train(reporter, range(1, 31), slowest)
        wait_for(lambda: len(metric_steps(job_id)) == 30, 10, what="steps 1-30 to be written")

        postgres.stop()
        outage_started = time.monotonic()
        train(reporter, range(31, 61), slowest)  # ~1 s of steps while every write fails
        reporter.on_checkpoint(60, str(checkpoint))
        train(reporter, range(61, 101), slowest)
        time.sleep(max(0.0, outage_started + 6 - time.monotonic()))  # a 6 s outage in all
        retries = [t for t in connection_attempts if t > outage_started]
        postgres.start()
        wait_for(lambda: len(metric_steps(job_id)) == 100, 20, what="the buffered steps to be written")
        reporter.event("info", "done")
    reporter.flush()

    # The training thread never waited on the database; the retries backed off (0.5, 1, 2, 4 s ... apart)
    # instead of one every poll (0.1 s), and said so once.
    assert slowest[0] < 0.5, slowest[0]
    assert 2 <= len(retries) <= 8, len(retries)
    warnings = outage_warnings(caplog)
    assert len([w for w in warnings if "database is unreachable" in w]) == 1, warnings
    assert len([w for w in warnings if "database is back after" in w]) == 1, warnings

    with session_scope() as session:
        job = session.get(Job, job_id)
        snapshots = session.scalars(select(RankSnapshot.step).where(RankSnapshot.job_id == job_id)
                                    .order_by(RankSnapshot.step)).all()
        checkpoints = session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)).all()
        messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert metric_steps(job_id) == list(range(1, 101))  # nothing lost, nothing twice
    assert snapshots == [0, *range(10, 101, 10)]
    assert checkpoints == [60]
    assert (job.status, job.step, job.total_steps) == ("running", 100, 100)
    [outage] = [m for m in messages if m.startswith("the database was unreachable")]
    went_from, went_to = map(int, re.search(r"from step (\d+) to step (\d+)", outage).groups())
    assert 30 <= went_from < 100 and went_to == 100, outage  # the run kept training through it
    assert messages.count("done") == 1


def test_an_outage_longer_than_the_limit_stops_the_run_with_a_readable_message(postgres, running_job):
    job_id, slowest = running_job, [0.0]
    reporter = ProgressReporter(job_id, flush_steps=5, flush_seconds=0.5, poll_seconds=0.1, attempt=1,
                                link=DatabaseLink(job_id, limit_seconds=2))
    try:
        with pytest.raises(DatabaseUnavailable) as failure:
            with reporter:
                reporter.on_start(1000, TWO_MODULE_PLAN)
                train(reporter, range(1, 11), slowest)
                postgres.stop()
                train(reporter, range(11, 1001), slowest)  # ~20 s: long past the limit
    finally:
        postgres.start()
    assert re.fullmatch(r"the database was unreachable for \d+ s, longer than this worker waits "
                        r"\(DATABASE_OUTAGE_LIMIT_SECONDS=2\); last error: .+", str(failure.value)), failure.value
    stopped_at = reporter.step
    assert 10 < stopped_at < 1000
    reporter.flush()  # the buffers were kept: with the database back, nothing reported is lost
    assert metric_steps(job_id) == list(range(1, stopped_at + 1))


def test_a_run_whose_job_was_requeued_meanwhile_stops_and_says_it_lost_the_job(running_job):
    """After an outage longer than STALE_JOB_SECONDS a reconciler may have requeued the job (no heartbeat came
    through): the run must stop rather than race the worker that takes it over."""
    job_id, slowest = running_job, [0.0]
    reporter = ProgressReporter(job_id, flush_steps=5, flush_seconds=0.5, poll_seconds=0.1, attempt=1)
    with reporter:
        train(reporter, range(1, 11), slowest)
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == job_id).values(status="queued", worker=None))
        wait_for(reporter.should_stop, 10, what="the run to notice")
    assert reporter.lost and not reporter.shutdown


STEPS, OUTAGE_SECONDS = 400, 5  # tiny steps run ~40/s on an idle machine: still training when Postgres stops
FINISH_TIMEOUT = 240  # seconds; generous for a loaded CI machine, reached only when something is wrong


def test_a_postgres_restart_mid_training_loses_no_metric_row(postgres, outage_env, tmp_path):
    worker = start_worker(outage_env, tmp_path, extra_env={"CHECKPOINT_EVERY": "100", "HEARTBEAT_SECONDS": "1"})
    try:
        job_id = submit(tiny_job_spec(max_steps=STEPS))
        wait_for(lambda: job_row(job_id).step >= 20, 90, what="the job to train 20 steps")
        postgres.stop()  # fast: every session is cut off, as in a restart
        time.sleep(OUTAGE_SECONDS)
        postgres.start()
        job = wait_until_finished(job_id, worker, timeout=FINISH_TIMEOUT)
    finally:
        stop_process(worker.process)
    assert (job.status, job.error, job.attempts, job.step) == ("succeeded", None, 1, STEPS), worker.log_tail()
    with session_scope() as session:
        snapshots = session.scalars(select(RankSnapshot).where(RankSnapshot.job_id == job_id)
                                    .order_by(RankSnapshot.step)).all()
        kinds = {a.kind: a for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}
        messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    # No gap, no step twice (0: the evaluation before training).
    assert metric_steps(job_id) == list(range(0, STEPS + 1))
    assert snapshots[0].step == 0 and snapshots[-1].final
    assert set(kinds) == {"adapter", "merged", "lora", "lora-serving"}
    assert all(get_store().size(a.path) == a.size for a in kinds.values())
    [outage] = [m for m in messages if m.startswith("the database was unreachable")]
    went_from, went_to = map(int, re.search(r"from step (\d+) to step (\d+)", outage).groups())
    assert went_to > went_from >= 20, outage  # it trained while Postgres was down
    print(f"{outage!r}; {STEPS} metric rows checked")
