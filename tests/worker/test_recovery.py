"""A worker process that dies mid-run (an OOM kill of the pool process) does not lose the job: Celery
requeues the message, the new attempt waits until the dead run's heartbeat is stale, takes the job over
and resumes from the latest checkpoint."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select

from service.artifacts import job_dir
from service.db import session_scope
from service.tables import Checkpoint, JobEvent, Metric
from tests.conftest import STORES, start_worker, stop_process, store_env_for, tiny_job_spec, wait_for
from tests.helpers import JOB_TIMEOUT, job_row, submit, wait_until_finished
from tests.s3 import stored_keys

STEPS, CHECKPOINT_EVERY = 60, 5


@pytest.fixture(scope="module", params=STORES)
def artifact_store_env(request):
    return store_env_for(request)


@pytest.fixture(scope="module")
def prefork_worker(service_env, tmp_path_factory):
    """Prefork pool: jobs run in a child process, as in production, so the child can die on its own."""
    worker = start_worker(service_env, tmp_path_factory.mktemp("worker"), pool="prefork", extra_env={
        "CHECKPOINT_EVERY": str(CHECKPOINT_EVERY), "HEARTBEAT_SECONDS": "0.5", "STALE_JOB_SECONDS": "2"})
    yield worker
    stop_process(worker.process)


def test_a_killed_run_is_taken_over_and_resumes_from_its_checkpoint(prefork_worker):
    job_id = submit(tiny_job_spec(max_steps=STEPS))

    def first_checkpoint():
        with session_scope() as session:
            return session.scalar(select(Checkpoint.step).where(Checkpoint.job_id == job_id))

    wait_for(first_checkpoint, JOB_TIMEOUT, what="the first checkpoint")
    pool_process = int(job_row(job_id).worker.rsplit(" pid ", 1)[1])
    assert pool_process != prefork_worker.process.pid  # the child, not the worker we started
    os.kill(pool_process, signal.SIGKILL)

    job = wait_until_finished(job_id, prefork_worker)
    assert (job.status, job.attempts, job.step) == ("succeeded", 2, STEPS), job.error
    assert int(job.worker.rsplit(" pid ", 1)[1]) != pool_process
    with session_scope() as session:
        messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job_id).order_by(Metric.step)).all()
        checkpoints = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
    resumed = [m for m in messages if m.startswith("resumed from step")]
    assert len(resumed) == 1 and int(resumed[0].split()[-1]) % CHECKPOINT_EVERY == 0, messages
    assert any("attempt 2: the previous worker stopped" in m for m in messages)
    assert steps == list(range(0, STEPS + 1))  # every step once: the resumed run overwrote, never duplicated
    assert checkpoints == [] and not (job_dir(job_id) / "checkpoints").exists()  # cleaned up after success
    assert stored_keys(f"jobs/{job_id}/") == {f"jobs/{job_id}/{name}" for name in (
        "adapter.tar", "merged.tar", "lora.tar", "lora-serving.tar", "final-state.pt")}
