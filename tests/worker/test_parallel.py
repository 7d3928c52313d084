"""A job over two processes (resources.gpus 2; gloo on this CPU): the worker process is rank 0 and starts the
other; the run reports each step once and exports as a one-process run does, and a peer that dies fails the
job with its name rather than hanging it."""

from __future__ import annotations

import threading
import time

import psutil
from sqlalchemy import select

from service.db import session_scope
from service.tables import Artifact, Job, JobEvent, Metric
from tests.conftest import sqlite_only_database_url, tiny_job_spec, wait_for
from tests.helpers import new_job
from worker.runner import claim_and_run

database_url = sqlite_only_database_url()


def two_process_job(**training) -> str:
    spec = tiny_job_spec(**training)
    return new_job({**spec, "resources": {"gpus": 2}})


def test_a_two_process_job_trains_and_exports_once(engine):
    job_id = two_process_job(max_steps=24)
    assert claim_and_run(job_id) == "succeeded"
    with session_scope() as session:
        job = session.get(Job, job_id)
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job_id).order_by(Metric.step)).all()
        kinds = sorted(session.scalars(select(Artifact.kind).where(Artifact.job_id == job_id)))
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert (job.status, job.step, job.error) == ("succeeded", 24, None)
    assert steps == list(range(0, 25))  # rank 0 alone reports: every step once
    assert kinds == ["adapter", "lora", "lora-serving", "merged"]
    assert any(e.startswith("training data-parallel on 2 processes") for e in events), events
    # The tokens are the one-process run's: each process counts its half of every batch, padded apart, and rank 0
    # reports the sum.
    alone = new_job(tiny_job_spec(max_steps=24))
    assert claim_and_run(alone) == "succeeded"
    with session_scope() as session:
        assert job.trained_tokens == session.get(Job, alone).trained_tokens > 0


def test_a_peer_that_dies_fails_the_job_naming_it(engine):
    job_id = two_process_job(max_steps=2000)
    outcome: list[str | None] = []
    runner = threading.Thread(target=lambda: outcome.append(claim_and_run(job_id)))
    runner.start()

    def peer():
        children = [c for c in psutil.Process().children() if "worker.parallel" in " ".join(c.cmdline())]
        with session_scope() as session:
            step = session.get(Job, job_id).step
        return children[0] if children and step >= 3 else None

    victim = wait_for(peer, 120, what="the rank 1 process to be training")
    victim.kill()
    started = time.monotonic()
    runner.join(120)
    assert not runner.is_alive(), "the job hung after its peer died"
    assert outcome == ["failed"] and time.monotonic() - started < 60
    with session_scope() as session:
        error = session.get(Job, job_id).error
    assert error == f"rank 1 of the data-parallel run (pid {victim.pid}) died with exit code -9", error


def test_a_cancel_stops_every_process_of_the_run(engine):
    from service.lifecycle import request_cancel

    job_id = two_process_job(max_steps=2000)
    outcome: list[str | None] = []
    runner = threading.Thread(target=lambda: outcome.append(claim_and_run(job_id)))
    runner.start()

    def training() -> bool:
        with session_scope() as session:
            return session.get(Job, job_id).step >= 3

    wait_for(training, 120, what="the job to be training")
    peers = [c for c in psutil.Process().children() if "worker.parallel" in " ".join(c.cmdline())]
    with session_scope() as session:
        assert request_cancel(session, job_id) == "cancelling"
    runner.join(60)
    assert outcome == ["cancelled"]
    assert peers and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in peers)
    with session_scope() as session:
        assert session.get(Job, job_id).step < 2000


def test_a_prefork_celery_worker_runs_a_two_process_job(service_env, tmp_path):
    """`adalora-svc worker` runs Celery's prefork pool, whose child may not start multiprocessing children:
    the peers are plain subprocesses."""
    from tests.conftest import start_worker, stop_process
    from tests.helpers import submit, wait_until_finished

    worker = start_worker(service_env, tmp_path, pool="prefork")
    try:
        job_id = submit({**tiny_job_spec(max_steps=12), "resources": {"gpus": 2}})
        job = wait_until_finished(job_id, worker)
        assert (job.status, job.error, job.step) == ("succeeded", None, 12), worker.log_tail()
    finally:
        stop_process(worker.process)
