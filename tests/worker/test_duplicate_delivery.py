"""One job delivered twice to two live workers runs once. A second message with a new task id (what a
reconciler's re-send looks like) is dropped by the worker that finds the job claimed; a second delivery of
the claiming message itself (the broker redelivering it) is retried as busy until the run has ended, and then
finds nothing to run. Either way: one start, one attempt, every metric step once."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.queue import RUN_JOB_TASK, get_celery
from service.settings import get_settings
from service.tables import JobEvent, Metric
from tests.conftest import start_worker, stop_process, tiny_job_spec, wait_for
from tests.helpers import JOB_TIMEOUT, new_job, wait_until_finished

STEPS = 40


@pytest.fixture(scope="module")
def two_workers(service_env, tmp_path_factory):
    # A busy redelivery comes back after STALE_JOB_SECONDS; the run's heartbeat keeps well inside it.
    extra = {"HEARTBEAT_SECONDS": "0.5", "STALE_JOB_SECONDS": "6"}
    workers = []
    for name in "ab":  # one after the other: two first connections race to create the SQLite broker's queue
        worker = start_worker(service_env, tmp_path_factory.mktemp(f"worker-{name}"), extra_env=extra)
        workers.append(worker)
        # Consuming before the test sends, so the two deliveries meet the run rather than follow it.
        wait_for(lambda worker=worker: " ready." in worker.log_path.read_text(errors="replace"), 120,
                 what="a worker to be ready")
    yield workers
    for worker in workers:
        stop_process(worker.process)


def send(job_id: str, task_id: str) -> None:
    get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=get_settings().queue_name, task_id=task_id)


def task_results(workers, task_id: str) -> list[str]:
    """What each finished execution of `task_id` returned, from the workers' logs."""
    pattern = re.compile(rf"run_job\[{task_id}\] succeeded in [0-9.]+s: (.+)$", re.MULTILINE)
    return [result for worker in workers for result in pattern.findall(worker.log_path.read_text(errors="replace"))]


@pytest.mark.parametrize("same_task_id", [False, True], ids=["resent-with-a-new-id", "redelivered"])
def test_a_job_delivered_twice_runs_once(two_workers, same_task_id):
    job_id = new_job(tiny_job_spec(max_steps=STEPS), "twice")
    first = str(uuid.uuid4())
    second = first if same_task_id else str(uuid.uuid4())
    send(job_id, first)
    send(job_id, second)  # at once: each worker takes one of the two

    job = wait_until_finished(job_id, two_workers[0], timeout=3 * JOB_TIMEOUT)  # generous: a loaded machine
    if same_task_id:
        wait_for(lambda: len(task_results(two_workers, first)) == 2, 30, what="both deliveries to end")
        assert sorted(task_results(two_workers, first)) == ["'succeeded'", "None"]
        # The second delivery met the live run (busy: retried later), not just its finished row.
        assert any(f"run_job[{first}] retry: Retry in" in w.log_path.read_text() for w in two_workers)
    else:
        wait_for(lambda: task_results(two_workers, second), 30, what="the second message to be handled")
        assert sorted(task_results(two_workers, first) + task_results(two_workers, second)) == ["'succeeded'", "None"]

    with session_scope() as session:
        starts = session.scalars(select(JobEvent.message).where(
            JobEvent.job_id == job_id, JobEvent.message.startswith("started on"))).all()
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job_id).order_by(Metric.step)).all()
    assert (job.status, job.attempts, job.step) == ("succeeded", 1, STEPS), job.error
    assert len(starts) == 1, starts
    assert steps == list(range(0, STEPS + 1))
