"""GPU classes: a job asking for a class runs only on a worker started for it, workers record what they serve,
and a class no worker has ever served is refused at submission. Real worker processes on the module's
database and broker."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from service.db import session_scope
from service.reconcile import reconcile
from service.routing import class_queue, queue_for, record_served, worker_queues
from service.tables import WorkerQueue, utcnow
from tests.conftest import start_worker, stop_process, tiny_job_spec, wait_for
from tests.helpers import new_job, submit, wait_until_finished


def served() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(WorkerQueue.name)))


def test_a_job_of_a_class_runs_on_a_worker_of_that_class(service_env, tmp_path):
    big_class = f"gpu-{uuid.uuid4().hex[:6]}"
    (tmp_path / "plain").mkdir()
    (tmp_path / "big").mkdir()
    workers = [start_worker(service_env, tmp_path / "plain", name=f"plain-{big_class}@%h")]
    try:
        # One after the other: kombu's SQLite broker creates a queue's row on first use, and two workers
        # starting at once on the same file can race to insert it (the loser exits on a UNIQUE constraint).
        wait_for(lambda: service_env["QUEUE_NAME"] in served(), 180, what="the plain worker to record its queues")
        big = start_worker(service_env, tmp_path / "big", queues=worker_queues([big_class]),
                           name=f"big-{big_class}@%h")
        workers.append(big)
        try:  # a loaded machine takes a while to start a worker
            wait_for(lambda: class_queue(big_class) in served(), 180, what="the class worker to record its queues")
        except BaseException:
            print(big.log_tail())
            raise
        job_ids = [submit({**tiny_job_spec(max_steps=12), "resources": {"queue": big_class}}) for _ in range(2)]
        for job_id in job_ids:
            job = wait_until_finished(job_id, big)
            assert job.status == "succeeded" and job.worker.startswith(f"big-{big_class}@"), job.worker
    finally:
        for worker in workers:
            stop_process(worker.process)


def test_a_class_no_worker_serves_is_refused_at_submission(client, new_tenant):
    gpu_class = f"gpu-{uuid.uuid4().hex[:6]}"
    headers = new_tenant()
    spec = {**tiny_job_spec(), "resources": {"queue": gpu_class}}
    response = client.post("/v1/jobs", json=spec, headers=headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["field"] == "resources.queue"
    assert error["message"].startswith(f"no worker has served the class {gpu_class!r} (classes served: ")
    assert f"adalora-svc worker --queues {gpu_class}" in error["message"]
    assert client.get("/v1/jobs", headers=headers).json()["count"] == 0
    bad = client.post("/v1/jobs", json={**spec, "resources": {"queue": "GPU 80G"}}, headers=headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "resources.queue"

    with session_scope() as session:  # a worker of that class starts
        record_served(session, worker_queues([gpu_class]), "test")
    accepted = client.post("/v1/jobs", json=spec, headers=headers)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["spec"]["resources"] == {"gpus": 1, "queue": gpu_class}


def test_the_reconciler_resends_a_job_to_its_class_queue(service_env):
    old = utcnow() - timedelta(hours=1)
    lost_id = new_job({"resources": {"queue": "gpu-lost"}}, "routing", status="queued", created_at=old)
    sent: dict[str, str] = {}
    with session_scope() as session:
        reconcile(session, utcnow(), send=lambda job_id, spec: sent.__setitem__(job_id, queue_for(spec)))
    assert sent[lost_id] == class_queue("gpu-lost") == f"{service_env['QUEUE_NAME']}.gpu-lost"
