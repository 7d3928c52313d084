"""Fixtures of the worker tests that run jobs in-process on a SQLite database of their own."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def data_dir(service_env) -> Path:
    """The allow-listed data folder of this module's services: tests write their datasets into it."""
    return Path(service_env["DATA_DIRS"])


def queued_job(spec: dict) -> str:
    """A queued job of a new tenant, with `spec` (not validated), for run_job to take."""
    from service.db import session_scope
    from service.models import Job, Tenant

    with session_scope() as session:
        tenant = Tenant(name=f"runner-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        session.flush()
        job = Job(tenant_id=tenant.id, spec=spec)
        session.add(job)
        session.flush()
        return job.id
