"""from_checkpoint on real runs: a job started from a succeeded job's final state begins with its rank
pattern and weights; the checks before queueing refuse another tenant's job, an unfinished one, a step
with no checkpoint, and a spec that does not fit; a stored state gone missing fails the job clearly."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from api.checkpoint_checks import check_from_checkpoint
from api.errors import SpecError
from service.artifacts import job_key
from service.db import session_scope
from service.jobspec import JobSpec
from service.store import get_store
from service.tables import Checkpoint, Job, RankSnapshot, Tenant
from tests.conftest import STORES, sqlite_only_database_url, store_env_for, tiny_job_spec
from tests.worker.helpers import finished
from worker.runner import FINAL_STATE, claim_and_run

database_url = sqlite_only_database_url()


@pytest.fixture(scope="module", params=STORES)
def artifact_store_env(request):
    return store_env_for(request)


@pytest.fixture(scope="module")
def tenant(engine) -> int:
    with session_scope() as session:
        row = Tenant(name=f"warm-{uuid.uuid4().hex[:8]}")
        session.add(row)
        session.flush()
        return row.id


def job_of(tenant_id: int, spec: dict, status: str = "queued") -> str:
    with session_scope() as session:
        job = Job(tenant_id=tenant_id, spec=JobSpec.model_validate(spec).model_dump(mode="json"), status=status)
        session.add(job)
        session.flush()
        return job.id


def check(tenant_id: int, spec: dict) -> None:
    with session_scope() as session:
        check_from_checkpoint(session, tenant_id, JobSpec.model_validate(spec))


@pytest.fixture(scope="module")
def first_job(tenant) -> str:
    job_id = job_of(tenant, tiny_job_spec(max_steps=60, learning_rate=3e-2))
    assert claim_and_run(job_id) == "succeeded"
    assert get_store().size(job_key(job_id, FINAL_STATE))
    return job_id


def snapshots(job_id: str) -> list[RankSnapshot]:
    with session_scope() as session:
        return list(session.scalars(select(RankSnapshot).where(RankSnapshot.job_id == job_id)
                                    .order_by(RankSnapshot.step)))


def test_a_job_starts_from_a_succeeded_jobs_final_state(tenant, first_job):
    # A vanishing LR and a budget that keeps every triplet: the carried ranks stay and the regrown ones have
    # E = 0, so the second job's model is the first one's and scores the same on the same validation rows.
    spec = {**tiny_job_spec(max_steps=12, learning_rate=1e-9), "from_checkpoint": first_job}
    spec["budget"] = {**spec["budget"], "target_r": 4}
    check(tenant, spec)
    job_id = job_of(tenant, spec)
    assert claim_and_run(job_id) == "succeeded", finished(job_id)[0].error
    events = finished(job_id)[1]
    assert any(e.startswith(f"starting from {first_job}") for e in events), events
    carried = snapshots(first_job)[-1]
    start = snapshots(job_id)[0]
    assert start.step == 0 and start.ranks == carried.ranks and start.adapter_params == carried.adapter_params
    assert finished(job_id)[2]["eval_loss"] == pytest.approx(finished(first_job)[2]["eval_loss"], abs=1e-4)


def test_what_from_checkpoint_names_is_checked_before_queueing(tenant, first_job, engine):
    def refused(spec: dict, field: str, words: str) -> None:
        with pytest.raises(SpecError) as error:
            check(tenant, spec)
        assert error.value.field == field and words in error.value.message, error.value.message

    refused({**tiny_job_spec(), "from_checkpoint": str(uuid.uuid4())}, "from_checkpoint", "no job")
    with session_scope() as session:
        stranger = Tenant(name=f"other-{uuid.uuid4().hex[:8]}")
        session.add(stranger)
        session.flush()
        stranger_id = stranger.id
    with pytest.raises(SpecError, match="no job"):
        check(stranger_id, {**tiny_job_spec(), "from_checkpoint": first_job})  # another tenant's: not found
    running = job_of(tenant, tiny_job_spec(), status="running")
    refused({**tiny_job_spec(), "from_checkpoint": running}, "from_checkpoint", "is running")
    cancelled = job_of(tenant, tiny_job_spec(), status="cancelled")
    with session_scope() as session:
        session.add(Checkpoint(job_id=cancelled, step=16, path="nowhere.pt"))
    refused({**tiny_job_spec(), "from_checkpoint": cancelled}, "from_checkpoint", f"kept: {cancelled}:16")
    refused({**tiny_job_spec(), "from_checkpoint": f"{cancelled}:8"}, "from_checkpoint", "no checkpoint at step 8")
    check(tenant, {**tiny_job_spec(), "from_checkpoint": f"{cancelled}:16"})
    other_rank = tiny_job_spec()
    other_rank["budget"] = {**other_rank["budget"], "init_r": 6}
    refused({**other_rank, "from_checkpoint": first_job}, "budget.init_r", "must be 4")

    # The row says a checkpoint exists, but its file is gone: the worker fails the job and says so.
    gone = job_of(tenant, {**tiny_job_spec(), "from_checkpoint": f"{cancelled}:16"})
    assert claim_and_run(gone) == "failed"
    assert "no longer stored" in finished(gone)[0].error

