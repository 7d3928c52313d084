"""A job's stored bytes: its download archives (uncompressed tar files), checkpoints and final state, all
under the store keys `jobs/<id>/...` (service/store.py), with `job_dir` as this host's folder for them.

A tar is built once when the job finishes, deterministically (sorted names, zeroed times and owners), and
its size and sha256 go on the Artifact row, so serving a download (with Range) is a plain read of the store.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store import get_store
from service.tables import ARTIFACT_KINDS, Artifact, utcnow

JOB_ID = re.compile(r"^[0-9a-f-]{36}$")
CHUNK = 1 << 20


def job_key(job_id: str, name: str = "") -> str:
    """The store key of `name` in a job's folder (the folder itself, ending in /, when name is empty)."""
    if not JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"jobs/{job_id}/{name}"


def job_dir(job_id: str) -> Path:
    """This host's folder for the job: the stored files themselves with the folder store, scratch with S3."""
    path = get_store().local_path(job_key(job_id).rstrip("/"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def write_tar(folder: Path, out: Path, top: str) -> None:
    """Write `folder` to `out` as an uncompressed tar whose entries sit under `top/`; same input, same bytes."""
    tmp = out.with_name(out.name + ".partial")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(folder, arcname=top, recursive=False, filter=_normalise)
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    path = Path(dirpath) / name
                    if path.is_symlink():
                        raise ValueError(f"refusing to archive a symlink: {path}")
                    tar.add(path, arcname=f"{top}/{path.relative_to(folder).as_posix()}",
                            recursive=False, filter=_normalise)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)  # a tar cut short (a full disk, a refused symlink) leaves nothing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Archive:
    kind: str
    key: str
    size: int
    sha256: str


def archive_folder(job_id: str, kind: str, folder: Path, put: Callable[[str, Path], None] | None = None) -> Archive:
    """Archive `folder` as the job's `kind` download and store it with `put` (the store's own by default; not
    yet on record)."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}, got {kind!r}")
    out = job_dir(job_id) / f"{kind}.tar"
    write_tar(folder, out, top=kind)
    archive = Archive(kind, job_key(job_id, out.name), out.stat().st_size, sha256_file(out))
    (put or get_store().put)(archive.key, out)
    return archive


def record_archive(session: Session, job_id: str, archive: Archive) -> Artifact:
    """The stored archive as the job's download, replacing an earlier one of its kind."""
    row = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == archive.kind))
    if row is None:
        row = Artifact(job_id=job_id, kind=archive.kind)
        session.add(row)
    row.path, row.size, row.sha256, row.created_at = archive.key, archive.size, archive.sha256, utcnow()
    return row
