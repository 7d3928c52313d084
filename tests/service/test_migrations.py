"""Tables come only from Alembic: upgrade and downgrade work on both backends, and the models match."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db import make_engine
from service.tables import Base
from tests.conftest import BACKENDS, migrate

TABLES = {"tenants", "api_keys", "jobs", "job_events", "metrics", "rank_snapshots", "checkpoints", "artifacts",
          "files", "idempotent_requests", "worker_queues"}


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_upgrade_head_then_downgrade_base_on_an_empty_database(empty_database_url):
    assert table_names(empty_database_url) == set()
    migrate(empty_database_url, "head")
    assert table_names(empty_database_url) == TABLES
    migrate(empty_database_url, "base", direction="downgrade")
    assert table_names(empty_database_url) == set()


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_models_and_migrations_do_not_differ(empty_database_url):
    migrate(empty_database_url, "head")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def _insert_artifact(url: str, kind: str) -> None:
    from sqlalchemy.orm import Session

    from service.tables import Artifact, Job, Tenant

    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            tenant = Tenant(name=f"t-{kind}")
            session.add(tenant)
            session.flush()
            # The job's columns named, not the model's: at an older revision the table lacks the newer ones.
            job_id = f"job-{kind}"
            session.execute(Job.__table__.insert().values(id=job_id, tenant_id=tenant.id, spec={}, status="succeeded"))
            session.add(Artifact(job_id=job_id, kind=kind, path="p", size=1, sha256="0" * 64))
    finally:
        engine.dispose()


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_0005_allows_the_lora_downloads_and_still_refuses_other_kinds(empty_database_url):
    from sqlalchemy.exc import IntegrityError

    migrate(empty_database_url, "head")
    with pytest.raises(IntegrityError):
        _insert_artifact(empty_database_url, "weights")
    _insert_artifact(empty_database_url, "lora-serving")
    migrate(empty_database_url, "0004", direction="downgrade")  # drops the rows the old constraint refuses
    with pytest.raises(IntegrityError):
        _insert_artifact(empty_database_url, "lora")


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_0007_keeps_the_scale_a_stored_job_trained_with(empty_database_url):
    """A spec stored before budget.scaling existed trained with lora_alpha / init_r: it must resume that way."""
    from sqlalchemy import select

    from service.tables import Job, Tenant

    migrate(empty_database_url, "0006")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            tenant = connection.execute(Tenant.__table__.insert().values(name="t").returning(Tenant.id)).scalar()
            for name, budget in (("old", {"init_r": 12, "lora_alpha": 12.0}), ("none", None)):
                spec = {"model": "m", "task": "causal_lm", "name": name, **({"budget": budget} if budget else {})}
                connection.execute(Job.__table__.insert().values(id=name, tenant_id=tenant, spec=spec, status="queued"))
        migrate(empty_database_url, "head")
        with engine.connect() as connection:
            specs = dict(connection.execute(select(Job.__table__.c.id, Job.__table__.c.spec)).all())
        assert specs["old"]["budget"] == {"init_r": 12, "lora_alpha": 12.0, "scaling": "standard"}
        assert "budget" not in specs["none"]
        migrate(empty_database_url, "0006", direction="downgrade")
        with engine.connect() as connection:
            specs = dict(connection.execute(select(Job.__table__.c.id, Job.__table__.c.spec)).all())
        assert specs["old"]["budget"] == {"init_r": 12, "lora_alpha": 12.0}
    finally:
        engine.dispose()
