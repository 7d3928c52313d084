"""SIGTERM to a worker (a deploy): the run checkpoints at its next step boundary and hands the job back to the
queue without counting an attempt; the next worker resumes from that checkpoint and finishes it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.tables import Checkpoint, JobEvent, Metric
from tests.conftest import start_worker, stop_process, tiny_job_spec, wait_for
from tests.helpers import JOB_TIMEOUT, job_row, submit, wait_until_finished

STEPS = 300
NO_PERIODIC_CHECKPOINTS = {"CHECKPOINT_EVERY": "100000"}  # the only checkpoint is the one the shutdown writes


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_sigterm_checkpoints_requeues_and_the_next_worker_resumes(service_env, tmp_path, pool):
    (tmp_path / "first").mkdir(), (tmp_path / "second").mkdir()
    first = start_worker(service_env, tmp_path / "first", pool=pool, extra_env=NO_PERIODIC_CHECKPOINTS)
    try:
        job_id = submit(tiny_job_spec(max_steps=STEPS))
        wait_for(lambda: job_row(job_id).step >= 10, JOB_TIMEOUT, what="the job to train a few steps")
        first.process.terminate()
        assert first.process.wait(30) == 0, first.log_tail()  # a warm shutdown that did not wait for the run
    finally:
        stop_process(first.process)
    job = job_row(job_id)
    assert (job.status, job.attempts, job.worker) == ("queued", 0, None), job.error
    with session_scope() as session:
        (saved,) = session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)).all()
    assert 10 <= saved < STEPS

    second = start_worker(service_env, tmp_path / "second", pool=pool, extra_env=NO_PERIODIC_CHECKPOINTS)
    try:
        job = wait_until_finished(job_id, second)
    finally:
        stop_process(second.process)
    assert (job.status, job.attempts, job.step) == ("succeeded", 1, STEPS), job.error
    with session_scope() as session:
        messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job_id).order_by(Metric.step)).all()
    assert f"resumed from step {saved}" in messages, messages
    assert any(m.startswith(f"its worker is shutting down: stopped at step {saved}") for m in messages), messages
    assert steps == list(range(0, STEPS + 1))  # no step missing, none twice
