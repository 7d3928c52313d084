"""Restarting a Redis that keeps nothing on disk loses every queued message: the workers' reconcilers find the
queued jobs from their rows and send them again, and every job runs to success exactly once: 20 queued
jobs and 2 workers, as the issue asks (about 40 s per database backend on a 2-core machine; each job is cut to
4 steps).

The test runs its own throwaway redis-server (never the shared one) and restarts that."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.tables import Job, JobEvent, Metric
from tests.conftest import free_port, reset_service_caches, start_worker, stop_process, tiny_job_spec, wait_for
from tests.helpers import submit

JOBS, STEPS = 20, 4


def tiny_job() -> dict:
    """The shared tiny job cut to 4 steps (a schedule that fits them): the test is about delivery, not training."""
    return {**tiny_job_spec(max_steps=STEPS), "schedule": {"tinit": 1, "tfinal": 1, "delta_t": 1}}



def start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout
             .strip() == b"PONG", 10, what="redis-server to start")
    return process


@pytest.fixture
def own_redis(service_env, monkeypatch):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis = start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("BROKER_URL", url)  # this process sends to it too
    reset_service_caches()
    state = {"process": redis, "port": port, "url": url}
    yield state
    stop_process(state["process"])
    monkeypatch.undo()
    reset_service_caches()


def test_every_queued_job_survives_a_redis_restart_and_runs_once(service_env, own_redis, tmp_path):
    env = {**service_env, "BROKER_URL": own_redis["url"]}
    fast_reconciler = {"RECONCILE_SECONDS": "1", "QUEUED_GRACE_SECONDS": "3"}
    workers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        workers.append(start_worker(env, tmp_path / name, extra_env=fast_reconciler))
    try:
        jobs = [submit(tiny_job()) for _ in range(JOBS)]
        wait_for(lambda: running_or_done(jobs) >= 1, 90, what="the first job to start")
        lost = JOBS - running_or_done(jobs)
        own_redis["process"].kill()  # every queued message is gone with it
        own_redis["process"].wait()
        own_redis["process"] = start_redis(own_redis["port"])
        started = time.monotonic()
        wait_for(lambda: all_finished(jobs), 150, interval=1, what="every job to finish")
        print(f"all {JOBS} jobs finished {time.monotonic() - started:.0f}s after the restart "
              f"({lost} were queued when it went down)")
    except BaseException:
        for worker in workers:
            print(worker.log_tail())
        raise
    finally:
        for worker in workers:
            stop_process(worker.process)

    with session_scope() as session:
        rows = session.scalars(select(Job).where(Job.id.in_(jobs))).all()
        starts = Counter(session.scalars(select(JobEvent.job_id).where(
            JobEvent.job_id.in_(jobs), JobEvent.message.startswith("started on"))).all())
        steps = Counter(session.scalars(select(Metric.job_id).where(Metric.job_id.in_(jobs))).all())
    assert lost >= JOBS // 2  # most messages really were lost: at most one run per worker had started
    assert {(job.status, job.attempts, job.step) for job in rows} == {("succeeded", 1, STEPS)}, \
        [(job.status, job.error) for job in rows]
    assert starts == {job_id: 1 for job_id in jobs}  # each exactly once
    assert steps == {job_id: STEPS + 1 for job_id in jobs}  # every step once, and step 0's evaluation


def running_or_done(jobs: list[str]) -> int:
    with session_scope() as session:
        return len(session.scalars(select(Job.id).where(Job.id.in_(jobs), Job.status != "queued")).all())


def all_finished(jobs: list[str]) -> bool:
    with session_scope() as session:
        statuses = session.scalars(select(Job.status).where(Job.id.in_(jobs))).all()
    return all(s in ("succeeded", "failed", "cancelled") for s in statuses)
