"""The API in-process (TestClient) on a migrated database: SQLite and, when TEST_POSTGRES_URL is set, Postgres.

Each backend gets its own fresh database for the session; every test makes its own tenants, so tests never
see each other's rows. The broker is kombu's SQLite transport in a temp folder: real, and private to the run.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api.deps import session_factory
from api.main import create_app
from service import db as service_db
from service import queue as service_queue
from service.keys import create_api_key
from service.models import Job, utcnow
from service.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite", "postgres"]

# A BERT config small enough to count by hand (see test_dry_run.py); no weights: a dry run reads only this.
TINY_BERT_CONFIG = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": 100,
                    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                    "max_position_embeddings": 64, "type_vocab_size": 2}


def _fresh_postgres(base_url: str) -> Iterator[str]:
    """A new database next to TEST_POSTGRES_URL's, dropped afterwards (migration tests may reset that one)."""
    url = make_url(base_url)
    name = f"{url.database}_api_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'api.sqlite'}"
        return
    base = os.environ.get("TEST_POSTGRES_URL")
    if not base:
        pytest.skip("TEST_POSTGRES_URL is not set (scripts/test.sh sets it when Postgres runs)")
    yield from _fresh_postgres(base)


@pytest.fixture(scope="session")
def server_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("server")
    dirs = {name: root / name for name in ("artifacts", "models", "data")}
    for path in dirs.values():
        path.mkdir()
    tiny = dirs["models"] / "tiny-bert"
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps(TINY_BERT_CONFIG))
    # Real Redis when the run has it, else the serverless SQLite broker; a private queue either way.
    dirs["broker_url"] = os.environ.get("TEST_REDIS_URL") or f"sqla+sqlite:///{root / 'broker.sqlite'}"
    dirs["queue"] = f"api-test-{uuid.uuid4().hex[:8]}"
    return dirs


@pytest.fixture(scope="session")
def engine(database_url, server_dirs) -> Iterator[Engine]:
    """Settings point at this backend and the temp server folders; the schema comes from the migrations."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", database_url)
        env.setenv("BROKER_URL", server_dirs["broker_url"])
        env.setenv("QUEUE_NAME", server_dirs["queue"])
        env.setenv("ARTIFACT_DIR", str(server_dirs["artifacts"]))
        env.setenv("MODEL_DIRS", str(server_dirs["models"]))
        env.setenv("DATA_DIRS", str(server_dirs["data"]))
        forget_cached_settings()
        engine = service_db.make_engine(database_url)
        with engine.begin() as conn:
            config = Config(str(ROOT / "alembic.ini"))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        yield engine
        engine.dispose()
    forget_cached_settings()


def forget_cached_settings() -> None:
    get_settings.cache_clear()
    service_queue.get_celery.cache_clear()
    service_db.reset()


def drain_queue() -> list[str]:
    """Takes every message off the test queue; returns the job ids they carry, as a worker would receive them."""
    job_ids = []
    settings = get_settings()
    with service_queue.get_celery().connection_for_read() as conn:
        queue = conn.SimpleQueue(settings.queue_name)
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


@pytest.fixture(scope="session")
def sessions(engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture(scope="session")
def app(sessions):
    app = create_app()
    app.dependency_overrides[session_factory] = lambda: sessions
    return app


@pytest.fixture(scope="session")
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as client:
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


def tenant_id_of(sessions: sessionmaker[Session], headers: dict[str, str]) -> int:
    from service.keys import tenant_for_key

    with sessions() as session:
        return tenant_for_key(session, headers["Authorization"].removeprefix("Bearer ")).id


@pytest.fixture
def seed_job(sessions) -> Callable[..., str]:
    """Inserts a job row directly, as a worker would have left it (status, progress); returns its id."""

    def seed(headers: dict[str, str], status: str = "queued", **columns) -> str:
        tenant_id = tenant_id_of(sessions, headers)
        finished = utcnow() if status in ("succeeded", "failed", "cancelled") else None
        with sessions() as session:
            job = Job(tenant_id=tenant_id, spec=tiny_spec(), status=status, finished_at=finished, **columns)
            session.add(job)
            session.commit()
            return job.id

    return seed


def tiny_spec(**overrides) -> dict:
    """A valid spec on the tiny model; `overrides` replace whole top-level sections."""
    spec = {
        "model": "tiny-bert",
        "task": "sequence_classification",
        "dataset": {"source": "hub", "path": "nyu-mll/glue", "name": "sst2"},
        "budget": {"init_r": 4, "target_r": 2},
        "schedule": {"tinit": 10, "tfinal": 20, "delta_t": 5},
        "training": {"max_steps": 100, "batch_size": 8},
    }
    return {**spec, **overrides}
