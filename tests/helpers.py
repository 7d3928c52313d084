"""Plain helpers the test areas share (fixtures live in conftest.py): a job row of a new tenant, and a job
sent to a real worker and waited for. A test module imports these, never another test module."""

from __future__ import annotations

import uuid

from service.db import session_scope
from service.queue import enqueue_job
from service.tables import Job, Tenant
from tests.conftest import wait_for

JOB_TIMEOUT = 90  # seconds; the first job also pays for the worker importing torch and transformers


def new_job(spec: dict | None = None, tenant: str = "tests", **columns) -> str:
    """A committed job row of a new tenant named `tenant`-<8 hex>; `spec` is stored as given (not validated)
    and `columns` set the rest (status, created_at, ...). Returns the job's id."""
    with session_scope() as session:
        owner = Tenant(name=f"{tenant}-{uuid.uuid4().hex[:8]}")
        session.add(owner)
        session.flush()
        job = Job(tenant_id=owner.id, spec={} if spec is None else spec, **columns)
        session.add(job)
        session.flush()
        return job.id


def submit(spec: dict) -> str:
    """What the API does: commit the row, then send its id."""
    job_id = new_job(spec, "worker")
    enqueue_job(job_id, spec)
    return job_id


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def wait_until_finished(job_id: str, worker, timeout: float = JOB_TIMEOUT) -> Job:
    def finished():
        job = job_row(job_id)
        return job if job.status in ("succeeded", "failed", "cancelled") else None

    assert worker.process.poll() is None, worker.log_tail()
    try:
        return wait_for(finished, timeout, what=f"job {job_id} to finish")
    except BaseException:
        print(worker.log_tail())
        raise
