"""A worker host's scratch stays bounded (service/scratch.py): copies of datasets and jobs deleted by the API (on
another host) are dropped by the worker's periodic pass, and beyond SCRATCH_MAX_BYTES the least recently used
copies and tokenised-data cache entries are evicted, never what a running job uses. With the folder store,
`files/` and `jobs/` are the store itself and are never touched."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid

import pytest
from sqlalchemy import delete

from service import scratch
from service.db import session_scope
from service.files import accept_upload, incoming_path, local_copy
from service.reconcile import _reconcile_pass
from service.scratch import prune_scratch
from service.store import get_store
from service.tables import File, Job, Tenant
from tests.conftest import STORES, sentiment_rows, sqlite_only_database_url, store_env_for, tiny_job_spec
from worker.data import cache

database_url = sqlite_only_database_url()
OLD = time.time() - 3600  # well before scratch.RECENT_SECONDS


@pytest.fixture(scope="module", params=STORES)
def artifact_store_env(request):
    return store_env_for(request)


@pytest.fixture
def tenant(service_env) -> int:
    with session_scope() as session:
        tenant = Tenant(name=f"scratch-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        session.flush()
        return tenant.id


def upload(tenant_id: int, rows: int) -> File:
    """A stored dataset of `rows` rows and this host's copy of it, used an hour ago."""
    incoming = incoming_path()
    data = ("sentence,label\n" + "".join(f"{s},{y}\n" for s, y in sentiment_rows(rows))).encode()
    incoming.write_bytes(data)
    file = accept_upload(tenant_id, incoming, filename="d.csv", purpose="fine-tune", size=len(data),
                         sha256=hashlib.sha256(data).hexdigest())
    with session_scope() as session:
        session.add(file)
    os.utime(local_copy(file), (OLD, OLD))
    return file


def add_job(tenant_id: int, status: str, **spec) -> str:
    with session_scope() as session:
        job = Job(tenant_id=tenant_id, spec={**tiny_job_spec(), **spec}, status=status)
        session.add(job)
        session.flush()
        return job.id


def fetched_checkpoint(job_id: str):
    """This host's copy of a stored checkpoint of the job (as a takeover fetches it), used an hour ago."""
    store, key = get_store(), f"jobs/{job_id}/checkpoints/step-00000010.pt"
    source = store.local_path(f"incoming/{job_id}.pt")
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(os.urandom(1000))
    store.put(key, source)
    path = store.local_copy(key)
    os.utime(path, (OLD, OLD))
    return path


def is_s3() -> bool:
    return bool(os.environ.get("ARTIFACT_STORE"))


def test_copies_of_files_and_jobs_deleted_elsewhere_are_dropped_by_the_workers_pass(tenant):
    deleted_file, kept_file = upload(tenant, 8), upload(tenant, 8)
    deleted_job, kept_job = add_job(tenant, "succeeded"), add_job(tenant, "failed")
    deleted_copy, kept_copy = fetched_checkpoint(deleted_job), fetched_checkpoint(kept_job)
    deleted_dataset = get_store().local_path(deleted_file.path)
    with session_scope() as session:  # the API on another host deletes them: this host's copies stay behind
        session.execute(delete(File).where(File.id == deleted_file.id))
        session.execute(delete(Job).where(Job.id == deleted_job))
    _reconcile_pass()  # what every worker runs each RECONCILE_SECONDS (and each run before it starts)
    if is_s3():
        assert not deleted_dataset.exists() and not deleted_copy.parent.parent.exists()
    else:  # these are the stored objects themselves: the API deletes them, never a worker
        assert deleted_dataset.exists() and deleted_copy.exists()
    assert local_copy(kept_file).exists() and kept_copy.exists()


def test_beyond_the_bound_the_least_recently_used_go_first_and_what_a_running_job_uses_stays(tenant):
    if not is_s3():
        pytest.skip("with the folder store, datasets are the store itself (the cache test covers its scratch)")
    for folder in ("files", "jobs"):  # only copies with S3: start from none
        shutil.rmtree(get_store().local_path(folder), ignore_errors=True)
    used, oldest, newer, recent = (upload(tenant, 40) for _ in range(4))  # the same size each
    for age, file in ((400, used), (300, oldest), (200, newer)):
        os.utime(local_copy(file), (OLD - age, OLD - age))
    local_copy(recent)  # a cache hit: used just now
    add_job(tenant, "running", dataset={"source": "file", "file_id": used.id})
    size = get_store().local_path(used.path).stat().st_size
    removed = prune_scratch(max_bytes=2 * size)
    assert removed == [oldest.path]  # three copies that may go, room for two: the least recently used goes
    assert all(get_store().local_path(f.path).exists() for f in (used, newer, recent))  # used: a running job's
    removed = prune_scratch(max_bytes=0)
    assert removed == [newer.path]  # neither what a running job uses nor a copy used a moment ago goes
    assert local_copy(oldest).read_bytes()  # an eviction only costs a fetch


def test_the_tokenised_data_cache_is_bounded_least_recently_used_first(service_env, monkeypatch):
    monkeypatch.setattr(scratch, "RECENT_SECONDS", 0)  # so that a hit a moment ago still counts as used
    folder = get_store().local_path(scratch.TOKENIZED)
    entries = {name: folder / f"{name}.npz" for name in ("a", "b", "c")}
    for age, (name, path) in enumerate(entries.items()):
        cache.save(path, {"train": [{"input_ids": list(range(500)), "labels": 1}]}, {"name": name})
        os.utime(path, (OLD + age, OLD + age))  # a is the least recently written
    assert cache.load(entries["a"]) is not None  # a hit makes it the most recently used
    prune_scratch(max_bytes=entries["a"].stat().st_size)
    assert [name for name, path in entries.items() if path.exists()] == ["a"]
