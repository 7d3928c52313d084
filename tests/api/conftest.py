"""The API in-process (TestClient) on the shared fixtures' migrated database (SQLite, and Postgres when
TEST_POSTGRES_URL is set): each test module gets its own database and queue. Every test makes its own
tenants, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from service import queue as service_queue
from service.artifacts import archive_folder, record_archive
from service.keys import create_api_key, tenant_for_key
from service.settings import get_settings
from service.tables import FINISHED_STATUSES, Job, utcnow
from tests.conftest import reset_service_caches, tiny_job_spec


@pytest.fixture(scope="module")
def sessions(engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture(scope="module")
def client(service_env) -> Iterator[TestClient]:
    """The app reads the module's settings (service_env) exactly as it would in production."""
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture
def new_tenant(sessions) -> Callable[[], dict[str, str]]:
    """Makes a tenant with one API key; returns the headers that authenticate as it."""

    def make() -> dict[str, str]:
        with sessions() as session:
            raw = create_api_key(session, f"tenant-{uuid.uuid4().hex[:8]}")
            session.commit()
        return {"Authorization": f"Bearer {raw}"}

    return make


@pytest.fixture
def alice(new_tenant) -> dict[str, str]:
    return new_tenant()


@pytest.fixture
def bob(new_tenant) -> dict[str, str]:
    return new_tenant()


@pytest.fixture
def seed_job(sessions) -> Callable[..., str]:
    """Inserts a job row directly, as a worker would have left it (status, progress); returns its id."""

    def seed(headers: dict[str, str], status: str = "queued", **columns) -> str:
        with sessions() as session:
            tenant = tenant_for_key(session, headers["Authorization"].removeprefix("Bearer "))
            job = Job(tenant_id=tenant.id, spec=tiny_spec(), status=status,
                      finished_at=utcnow() if status in FINISHED_STATUSES else None, **columns)
            session.add(job)
            session.commit()
            return job.id

    return seed


@pytest.fixture
def stored_artifacts(sessions, tmp_path) -> Callable[[str], dict[str, bytes]]:
    """Stores an adapter and a merged archive for a job the way the worker does; returns the folders' files."""

    def store(job_id: str, kinds: tuple[str, ...] = ("adapter", "merged")) -> dict[str, bytes]:
        files = {"adapter_config.json": b'{"peft_type": "ADALORA"}',
                 "adapter_model.safetensors": os.urandom(300_000)}  # big enough for several 64 KiB chunks
        with sessions() as session:
            for kind in kinds:
                folder = tmp_path / kind
                folder.mkdir()
                for name, data in files.items():
                    (folder / name).write_bytes(data)
                record_archive(session, job_id, archive_folder(job_id, kind, folder))
            session.commit()
        return files

    return store


@pytest.fixture
def env_override(monkeypatch) -> Callable[..., None]:
    """Changes settings for one test (e.g. a broken DATABASE_URL); the module's settings return afterwards."""

    def override(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        reset_service_caches()

    yield override
    reset_service_caches()  # monkeypatch restores the environment right after this


def tiny_spec(**sections) -> dict:
    """The shared tiny job (tiny BERT, 96-row CSV, 24 steps); `sections` replace whole top-level keys."""
    return {**tiny_job_spec(), **sections}


def drain_queue() -> list[str]:
    """Takes every message off the module's queue; returns the job ids they carry, as a worker receives them."""
    job_ids = []
    with service_queue.get_celery().connection_for_read() as conn:
        queue = conn.SimpleQueue(get_settings().queue_name)
        try:
            while True:
                message = queue.get(block=False)
                assert message.headers["task"] == service_queue.RUN_JOB_TASK
                args, _kwargs, _embed = message.decode()
                job_ids.extend(args)
                message.ack()
        except queue.Empty:
            pass
        finally:
            queue.close()
    return job_ids
