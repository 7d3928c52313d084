"""This host's scratch under ARTIFACT_DIR, kept bounded. It holds the tokenised-data cache (`cache/tokenized`)
and, with an S3 store, the copies a worker fetched: datasets (`files/<id>.<format>`), checkpoints a takeover
resumed from and final states a job started from (`jobs/<id>/...`). Nothing else removes them, so each pass:

- drops the copies of files and jobs that were deleted (on whichever host the API deleted them);
- then evicts the least recently used files (by modification time: a cache hit touches its file) until the rest
  fit SCRATCH_MAX_BYTES.

Never removed: what a running job uses (its own folder, its datasets, the job it starts from), and anything
touched in the last RECENT_SECONDS (a run may have fetched it a moment ago and not opened it yet; a run on
another worker of this host started after the pass read the running jobs). With the folder store, `files/`
and `jobs/` are the store itself: only the tokenised-data cache is scratch there.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from sqlalchemy import select

from service.db import get_sessionmaker
from service.files import dataset_file_ids
from service.store import FolderStore, get_store, local_root
from service.tables import RUNNING_STATUSES, File, Job

log = logging.getLogger(__name__)

TOKENIZED = "cache/tokenized"
RECENT_SECONDS = 60.0


def touch(path: Path) -> None:
    """Marks a cached file as just used, so that eviction takes it last."""
    try:
        os.utime(path)
    except OSError:  # evicted meanwhile: it was read already, or is fetched again
        pass


def prune_scratch(max_bytes: int) -> list[str]:
    """One pass (see the module docstring); returns what it removed, relative to ARTIFACT_DIR."""
    root, now = local_root(), time.time()
    s3 = not isinstance(get_store(), FolderStore)
    copies = {path.name.split(".")[0]: path for path in _files(root / "files", recursive=False)} if s3 else {}
    folders = {path.name: path for path in (root / "jobs").glob("*") if path.is_dir()} if s3 else {}
    with get_sessionmaker()() as session:  # reads only; released before the (slow) removals
        running = session.execute(select(Job.id, Job.spec).where(Job.status.in_(RUNNING_STATUSES))).all()
        known_files = set(session.scalars(select(File.id).where(File.id.in_(list(copies)))))
        known_jobs = set(session.scalars(select(Job.id).where(Job.id.in_(list(folders)))))
    busy_jobs = {job_id for job_id, _ in running} | {
        str(spec.get("from_checkpoint") or "").split(":")[0] for _, spec in running}
    busy_files = set().union(*(dataset_file_ids(spec.get("dataset", {})) for _, spec in running))

    removed: list[str] = []
    candidates = _files(root / TOKENIZED)
    for file_id, path in copies.items():
        if file_id not in known_files and now - _mtime(path) > RECENT_SECONDS:
            removed.append(_remove(path, root))
        elif file_id in known_files and file_id not in busy_files:
            candidates.append(path)
    for job_id, folder in folders.items():
        if job_id not in known_jobs:  # deleted: finished, and no unfinished job starts from it
            removed.append(_remove(folder, root))
        elif job_id not in busy_jobs:
            candidates += _files(folder)
    removed += _evict_least_recent(candidates, max_bytes, now, root)
    if removed:
        log.info("scratch: removed %s", ", ".join(removed))
    return removed


def _evict_least_recent(candidates: list[Path], max_bytes: int, now: float, root: Path) -> list[str]:
    stats = [(path, path.stat()) for path in candidates if path.exists()]
    total = sum(stat.st_size for _, stat in stats)
    removed = []
    for path, stat in sorted(stats, key=lambda item: item[1].st_mtime):
        if total <= max_bytes:
            break
        if now - stat.st_mtime > RECENT_SECONDS:
            removed.append(_remove(path, root))
            total -= stat.st_size
    return removed


def _files(folder: Path, recursive: bool = True) -> list[Path]:
    if not folder.is_dir():
        return []
    return [path for path in (folder.rglob("*") if recursive else folder.glob("*")) if path.is_file()]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path, root: Path) -> str:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return path.relative_to(root).as_posix()
