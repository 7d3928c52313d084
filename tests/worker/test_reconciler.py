"""A real worker's reconciler thread sends again a job whose broker message was lost."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.tables import JobEvent, Metric
from tests.conftest import start_worker, stop_process, tiny_job_spec
from tests.helpers import new_job, wait_until_finished


@pytest.fixture(scope="module")
def reconciling_worker(service_env, tmp_path_factory):
    worker = start_worker(service_env, tmp_path_factory.mktemp("worker"), extra_env={
        "RECONCILE_SECONDS": "0.5", "QUEUED_GRACE_SECONDS": "2"})
    yield worker
    stop_process(worker.process)


def test_a_job_whose_message_was_lost_is_sent_again_and_runs_once(reconciling_worker):
    job_id = new_job(tiny_job_spec(max_steps=12), "reconciler")  # committed; its message never reaches the broker
    job = wait_until_finished(job_id, reconciling_worker)
    assert (job.status, job.attempts, job.step) == ("succeeded", 1, 12), job.error
    with session_scope() as session:
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job.id).order_by(Metric.step)).all()
        started = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id,
                                                                 JobEvent.message.startswith("started on"))).all()
    assert steps == list(range(0, 13)) and len(started) == 1
