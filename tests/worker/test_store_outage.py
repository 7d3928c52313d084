"""The S3 store goes away while a run checkpoints: each checkpoint is stored whole and only then recorded; one
that cannot be stored (after retries) is dropped with a warning and the run goes on; an upload cut halfway
leaves no object; once the store is back the next checkpoint is recorded and a resume fetches it."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import select

from service import artifacts
from service.db import session_scope
from service.store import StoreUnavailable, get_store
from service.tables import Checkpoint, JobEvent
from tests.conftest import claimed_job, sqlite_only_database_url
from tests.s3 import relayed_store, stored_keys
from worker import checkpoint_upload
from worker.db_link import DatabaseLink
from worker.reporting import ProgressReporter
from worker.runner import latest_checkpoint

database_url = sqlite_only_database_url()  # the database is not what this module is about


relay, artifact_store_env = relayed_store()  # a store the tests can cut off and bring back


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(checkpoint_upload, "CHECKPOINT_RETRY_SECONDS", (0.2, 0.2))


def write_checkpoint(job_id: str, step: int, size: int = 4096):
    path = artifacts.job_dir(job_id) / "checkpoints" / f"step-{step:08d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return path, data


def recorded(job_id: str) -> dict[int, str]:
    with session_scope() as session:
        return dict(session.execute(select(Checkpoint.step, Checkpoint.path).where(Checkpoint.job_id == job_id)).all())


def events(job_id: str) -> list[str]:
    with session_scope() as session:
        return session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()


def test_checkpoints_are_stored_then_recorded_and_an_outage_costs_one_checkpoint_not_the_run(
        service_env, relay, quick_retries):
    job_id = claimed_job("store-outage")
    reporter = ProgressReporter(job_id, flush_steps=5, flush_seconds=0.2, poll_seconds=0.1, attempt=1,
                                link=DatabaseLink(job_id, limit_seconds=60))
    with reporter:
        first, first_bytes = write_checkpoint(job_id, 10)
        reporter.on_checkpoint(10, str(first))
        reporter.wait_for_uploads()  # the upload runs on a thread of its own
        assert not first.exists()  # uploaded: this host keeps no copy
        relay.cut()
        try:
            lost, _ = write_checkpoint(job_id, 20)
            started = time.monotonic()
            reporter.on_checkpoint(20, str(lost))
            reporter.wait_for_uploads()  # every attempt, while the store is still cut off
            assert time.monotonic() - started < 30
            assert not reporter.should_stop()  # the run goes on
        finally:
            relay.restore()
        last, last_bytes = write_checkpoint(job_id, 30)
        reporter.on_checkpoint(30, str(last))
    reporter.flush()
    prefix = f"jobs/{job_id}/checkpoints/"
    assert recorded(job_id) == {10: f"{prefix}step-00000010.pt", 30: f"{prefix}step-00000030.pt"}
    assert stored_keys(prefix) == {f"{prefix}step-00000010.pt", f"{prefix}step-00000030.pt"}
    [warning] = [m for m in events(job_id) if "could not be stored" in m]
    assert warning.startswith("the checkpoint at step 20 could not be stored after 3 attempts")
    resume = latest_checkpoint(job_id, DatabaseLink(job_id, limit_seconds=10))  # fetched from the store
    assert open(resume, "rb").read() == last_bytes


def test_an_upload_cut_halfway_leaves_no_object(service_env, relay):
    job_id = claimed_job("store-cut")
    path, _ = write_checkpoint(job_id, 40, size=24 << 20)  # a multipart upload of several parts
    key = get_store().key_for(path)
    relay.pause = 0.004  # ~16 MB/s: the upload takes over a second
    cutter = threading.Timer(0.5, relay.cut)
    cutter.start()
    try:
        with pytest.raises(StoreUnavailable):
            get_store().put(key, path)
    finally:
        cutter.join()
        relay.pause = 0.0
        relay.restore()
    assert get_store().size(key) is None and path.exists()
