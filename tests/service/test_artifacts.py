"""The artifact store: deterministic tars, checksums computed once, paths that stay inside the root."""

from __future__ import annotations

import hashlib
import os
import tarfile

import pytest
from sqlalchemy import select

from service import artifacts
from service.db import session_scope
from service.store import get_store
from service.tables import Artifact
from tests.helpers import new_job


def sample_folder(root, mtime: int):
    folder = root / f"src-{mtime}"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    for path in (folder / "config.json", folder / "sub" / "weights.bin"):
        os.utime(path, (mtime, mtime))
    return folder


def test_a_tar_that_cannot_be_finished_leaves_no_partial_file(tmp_path):
    folder = sample_folder(tmp_path, 1_000)
    (folder / "link").symlink_to(folder / "config.json")
    with pytest.raises(ValueError, match="symlink"):
        artifacts.write_tar(folder, tmp_path / "a.tar", top="adapter")
    assert sorted(p.name for p in tmp_path.glob("a.tar*")) == []


def test_the_same_folder_always_gives_the_same_bytes(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    artifacts.write_tar(sample_folder(tmp_path, 1_000), a, top="adapter")
    artifacts.write_tar(sample_folder(tmp_path, 2_000_000), b, top="adapter")  # other times, same content
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        assert tar.getnames() == ["adapter", "adapter/sub", "adapter/config.json", "adapter/sub/weights.bin"]


def test_paths_never_leave_the_artifact_root(engine):
    with pytest.raises(ValueError, match="not a store key"):
        get_store().local_path("../outside.tar")
    with pytest.raises(ValueError, match="not a job id"):
        artifacts.job_dir("../../etc")


def test_an_archive_is_stored_then_recorded_with_size_and_sha256_replacing_an_older_one(engine, tmp_path):
    job_id = new_job(tenant="artifacts")
    for mtime in (1, 2):
        folder = sample_folder(tmp_path, mtime)
        (folder / "config.json").write_text(f'{{"version": {mtime}}}')
        with session_scope() as session:
            artifacts.record_archive(session, job_id, artifacts.archive_folder(job_id, "merged", folder))
    with session_scope() as session:
        [row] = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
    path = get_store().local_copy(row.path)
    assert row.path == f"jobs/{job_id}/merged.tar"
    assert row.size == path.stat().st_size
    assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with tarfile.open(path) as tar:
        assert tar.extractfile("merged/config.json").read() == b'{"version": 2}'
