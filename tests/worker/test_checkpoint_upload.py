"""Checkpoints go into the store from a thread of their own: on_checkpoint returns while a slow upload runs, the
checkpoint is put on record only once it is stored, and leaving `with reporter:` waits for the upload, so the
run's last checkpoint is on record before the job is finished or handed back."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select

from service import artifacts
from service.db import session_scope
from service.store import get_store
from service.tables import Checkpoint
from tests.conftest import claimed_job, sqlite_only_database_url, wait_for
from worker import checkpoint_upload
from worker.db_link import DatabaseLink
from worker.reporting import ProgressReporter

database_url = sqlite_only_database_url()  # the database is not what this module is about


class HeldStore:
    """The test's store, whose puts wait until the test lets them go on: an upload as slow as the test wants."""

    def __init__(self) -> None:
        self.store = get_store()
        self.putting, self.go_on = threading.Event(), threading.Event()

    def key_for(self, path: Path) -> str:
        return self.store.key_for(path)

    def put(self, key: str, source: Path) -> None:
        self.putting.set()
        assert self.go_on.wait(60), "the test never let the upload go on"
        self.store.put(key, source)


def held_store(monkeypatch) -> HeldStore:
    store = HeldStore()
    monkeypatch.setattr(checkpoint_upload, "get_store", lambda: store)
    return store


def write_checkpoint(job_id: str, step: int) -> tuple[Path, str]:
    path = artifacts.job_dir(job_id) / "checkpoints" / f"step-{step:08d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"a checkpoint")
    return path, get_store().key_for(path)


def recorded(job_id: str) -> dict[int, str]:
    with session_scope() as session:
        return dict(session.execute(select(Checkpoint.step, Checkpoint.path).where(Checkpoint.job_id == job_id)).all())


def new_reporter(job_id: str) -> ProgressReporter:
    return ProgressReporter(job_id, flush_steps=5, flush_seconds=0.2, poll_seconds=0.1, attempt=1,
                            link=DatabaseLink(job_id, limit_seconds=60))


def test_on_checkpoint_returns_during_a_slow_upload_and_the_checkpoint_is_recorded_once_stored(
        service_env, monkeypatch):
    job_id, store = claimed_job("slow-upload"), held_store(monkeypatch)
    path, key = write_checkpoint(job_id, 10)
    with new_reporter(job_id) as reporter:
        reporter.on_checkpoint(10, str(path))  # returns with the put still held
        assert store.putting.wait(10) and not store.go_on.is_set()
        reporter.on_metrics(11, {"loss": 0.5})  # training goes on meanwhile
        reporter.flush()
        assert recorded(job_id) == {}  # not on record while it uploads
        store.go_on.set()
        wait_for(lambda: recorded(job_id) == {10: key}, 10, interval=0.05, what="the stored checkpoint's row")
    assert get_store().local_copy(key) is not None


def test_leaving_the_reporter_waits_for_the_upload_so_the_last_checkpoint_is_on_record(service_env, monkeypatch):
    job_id, store = claimed_job("last-upload"), held_store(monkeypatch)
    path, key = write_checkpoint(job_id, 20)
    reporter = new_reporter(job_id)
    with reporter:
        reporter.on_checkpoint(20, str(path))  # e.g. the checkpoint a shutdown writes, just before the run ends
        assert store.putting.wait(10)
        threading.Timer(0.3, store.go_on.set).start()  # the upload ends only after the run has begun to leave
    assert store.go_on.is_set()
    reporter.flush()  # what the runner writes before it finishes the job or hands it back
    assert recorded(job_id) == {20: key}
