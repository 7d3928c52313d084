"""Local artifact store: one folder per job under ARTIFACT_DIR, downloads as uncompressed tar files.

A tar is built once when the job finishes, deterministically (sorted names, zeroed times and owners), and
its size and sha256 go on the Artifact row, so serving a download (with Range) is a plain file read.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ARTIFACT_KINDS, Artifact, utcnow
from service.settings import get_settings

JOB_ID = re.compile(r"^[0-9a-f-]{36}$")
CHUNK = 1 << 20


def artifact_root() -> Path:
    root = get_settings().artifact_dir.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def inside_root(relative: str | Path) -> Path:
    """The absolute path of a stored relative path; raises if it would leave ARTIFACT_DIR."""
    root = artifact_root()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"artifact path {relative!s} leaves the artifact folder")
    return path


def job_dir(job_id: str) -> Path:
    if not JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    path = inside_root(Path("jobs") / job_id)
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def store_folder(session: Session, job_id: str, kind: str, folder: Path) -> Artifact:
    """Archive `folder` as the job's `kind` download and record it (replacing an earlier one)."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}, got {kind!r}")
    out = job_dir(job_id) / f"{kind}.tar"
    write_tar(folder, out, top=kind)
    relative = out.relative_to(artifact_root()).as_posix()
    row = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind))
    if row is None:
        row = Artifact(job_id=job_id, kind=kind)
        session.add(row)
    row.path, row.size, row.sha256, row.created_at = relative, out.stat().st_size, sha256_file(out), utcnow()
    return row
