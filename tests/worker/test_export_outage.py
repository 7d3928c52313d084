"""The S3 store goes away as a trained job stores its results. The final state is stored first and every put is
retried with backoff for STORE_OUTAGE_LIMIT_SECONDS: a store that comes back in time ends the job succeeded; one
that stays away fails it, with the trained weights kept as a checkpoint a new job starts from when they were
stored, and with its checkpoints when they were not. Either way the worker's scratch holds nothing of the job."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from service import artifacts
from service.db import session_scope
from service.settings import get_settings
from service.store import get_store
from service.tables import Artifact, Checkpoint, Job, JobEvent
from tests.conftest import sqlite_only_database_url, tiny_job_spec
from tests.helpers import new_job
from tests.s3 import relayed_store, stored_keys
from worker import runner
from worker.runner import FINAL_STATE, claim_and_run

database_url = sqlite_only_database_url()


relay, artifact_store_env = relayed_store()  # a store the tests can cut off and bring back


@pytest.fixture
def outage_limit(monkeypatch, service_env):
    """Sets STORE_OUTAGE_LIMIT_SECONDS; retries come every 0.2-0.5 s instead of 2-60 s."""
    monkeypatch.setattr(runner, "STORE_RETRY_SECONDS", (0.2, 0.5), raising=False)

    def set_limit(seconds: float) -> None:
        monkeypatch.setenv("STORE_OUTAGE_LIMIT_SECONDS", str(seconds))
        get_settings.cache_clear()
    yield set_limit
    monkeypatch.undo()
    get_settings.cache_clear()


def cut_before(monkeypatch, relay, name: str, back_after: float | None = None) -> None:
    """The store goes away just before the runner calls `name` (and comes back `back_after` seconds later)."""
    original = getattr(runner, name)

    def cut_then_call(*args, **kwargs):
        relay.cut()
        if back_after is not None:
            threading.Timer(back_after, relay.restore).start()
        return original(*args, **kwargs)
    monkeypatch.setattr(runner, name, cut_then_call)


def scratch_files(job_id: str) -> list[str]:
    folder = get_store().local_path(artifacts.job_key(job_id).rstrip("/"))
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def finished(job_id: str) -> tuple[Job, list[str], dict[int, str], list[str]]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        checkpoints = dict(session.execute(select(Checkpoint.step, Checkpoint.path)
                                           .where(Checkpoint.job_id == job_id)).all())
        kinds = session.scalars(select(Artifact.kind).where(Artifact.job_id == job_id)).all()
    return job, events, checkpoints, sorted(kinds)


def test_a_store_back_within_the_limit_ends_the_job_succeeded(monkeypatch, relay, outage_limit):
    outage_limit(120)
    cut_before(monkeypatch, relay, "store_final_state", back_after=3)
    try:
        job_id = new_job(tiny_job_spec())
        assert claim_and_run(job_id) == "succeeded"
    finally:
        relay.restore()
    job, events, checkpoints, kinds = finished(job_id)
    assert job.status == "succeeded" and kinds == ["adapter", "lora", "lora-serving", "merged"]
    assert any("storing the results is retried for up to 120 s" in m for m in events)
    assert any(m.startswith("the artifact store is back after") for m in events)
    assert checkpoints == {} and f"jobs/{job_id}/{FINAL_STATE}" in stored_keys(f"jobs/{job_id}/")
    assert scratch_files(job_id) == []


def test_a_store_away_during_the_downloads_fails_the_job_with_its_trained_weights_kept(
        monkeypatch, relay, outage_limit):
    outage_limit(2)
    cut_before(monkeypatch, relay, "export")  # the final state is stored; the archives are not
    try:
        job_id = new_job(tiny_job_spec())
        assert claim_and_run(job_id) == "failed"
        assert scratch_files(job_id) == []  # no archive left on this host
    finally:
        relay.restore()
    job, _, checkpoints, kinds = finished(job_id)
    assert "the downloads could not be stored" in job.error and "(STORE_OUTAGE_LIMIT_SECONDS=2)" in job.error
    assert f'"from_checkpoint": "{job_id}:24"' in job.error
    assert kinds == [] and checkpoints == {24: f"jobs/{job_id}/{FINAL_STATE}"}
    assert f"jobs/{job_id}/{FINAL_STATE}" in stored_keys(f"jobs/{job_id}/")

    # What the message says works, with no training lost: a new job starts from those weights.
    again = new_job({**tiny_job_spec(max_steps=12), "from_checkpoint": f"{job_id}:24"})
    monkeypatch.undo()
    assert claim_and_run(again) == "succeeded", finished(again)[0].error
    _, events, _, _ = finished(again)
    assert any(m.startswith(f"starting from {job_id}:24") for m in events)


def test_a_store_away_before_the_final_state_fails_the_job_with_its_checkpoints_kept(
        monkeypatch, relay, outage_limit):
    outage_limit(2)
    monkeypatch.setenv("CHECKPOINT_EVERY", "10")
    cut_before(monkeypatch, relay, "store_final_state")
    try:
        job_id = new_job(tiny_job_spec())
        assert claim_and_run(job_id) == "failed"
        assert scratch_files(job_id) == []
    finally:
        relay.restore()
    job, _, checkpoints, kinds = finished(job_id)
    assert "its result could not be stored" in job.error and "checkpoints are kept" in job.error
    assert kinds == [] and sorted(checkpoints) == [10, 20]
