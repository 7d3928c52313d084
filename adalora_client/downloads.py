"""Resumable, verified downloads of a job's archives, unpacked without trusting the archive's paths.

The partial file's name carries the archive's sha256, so a resume only ever continues the very same archive
(the server's If-Range check says the same), and the finished file is hashed before it is kept.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from adalora_client._http import Transport, retry_after_seconds
from adalora_client.errors import APIConnectionError, ChecksumMismatch
from adalora_client.types import Download

CHUNK = 1 << 20


def download_archive(transport: Transport, path: str, archive: Path) -> tuple[str, int]:
    """Fetch `path` into `archive`, resuming a partial file from an earlier try; returns (sha256, size)."""
    head = transport.request("HEAD", path)
    sha256, size = head.headers["x-checksum-sha256"], int(head.headers["content-length"])
    if archive.is_file() and archive.stat().st_size == size and file_sha256(archive) == sha256:
        return sha256, size  # already here and whole
    archive.parent.mkdir(parents=True, exist_ok=True)
    part = archive.with_name(f".{archive.name}.{sha256[:16]}.part")
    for stale in archive.parent.glob(f".{archive.name}.*.part"):
        if stale != part:
            stale.unlink()  # a partial download of an archive that has since changed
    for attempt in range(transport.max_retries + 1):
        try:
            _fetch_rest(transport, path, part, sha256, size)
            break
        except APIConnectionError:
            if attempt == transport.max_retries:
                raise
            time.sleep(retry_after_seconds(None, attempt, transport.max_retry_wait))
    if file_sha256(part) != sha256:
        part.unlink()
        raise ChecksumMismatch(f"{path}: the downloaded bytes do not match sha256 {sha256}; the partial file was "
                               "removed, so downloading again starts afresh")
    part.replace(archive)
    return sha256, size


def _fetch_rest(transport: Transport, path: str, part: Path, sha256: str, size: int) -> None:
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:  # cannot be this archive: start again
        part.unlink()
        offset = 0
    if offset == size:
        return
    headers = {"Range": f"bytes={offset}-", "If-Range": f'"{sha256}"'} if offset else None
    with transport.stream("GET", path, headers=headers) as response:
        mode = "ab" if response.status_code == 206 else "wb"  # 200: the server sent the whole file again
        with open(part, mode) as out:
            for chunk in response.iter_bytes():  # as they arrive: a cut connection keeps all it got
                out.write(chunk)
    got = part.stat().st_size
    if got < size:  # a connection closed early without an error: resume from here
        raise APIConnectionError(f"{path}: the connection closed after {got:,} of {size:,} bytes")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(archive: Path, target: Path) -> None:
    """Unpack `archive` (entries under one top folder) so that `target` holds that folder's files.
    Entries that would land outside, links out, devices and the like are refused (tarfile's "data" filter);
    the files appear under `target` only once all of them are out."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder: choose another output folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        tops = list(Path(tmp).iterdir())
        source = tops[0] if len(tops) == 1 and tops[0].is_dir() else Path(tmp)
        if target.exists():
            target.rmdir()
        if source == Path(tmp):
            shutil.copytree(tmp, target)
        else:
            source.rename(target)


def download(transport: Transport, job_id: str, kind: str, to: Path, *, unpack_to_folder: bool) -> Download:
    path = f"/v1/jobs/{job_id}/artifacts/{kind}"
    to = Path(to)
    if not unpack_to_folder:
        sha256, size = download_archive(transport, path, to)
        return Download(archive=str(to), sha256=sha256, size=size, unpacked=None)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):  # before downloading gigabytes
        raise FileExistsError(f"{to} exists and is not an empty folder: choose another output folder")
    archive = to.parent / f".{to.name}.{job_id}-{kind}.tar"
    sha256, size = download_archive(transport, path, archive)
    unpack(archive, to)
    archive.unlink()
    return Download(archive=None, sha256=sha256, size=size, unpacked=str(to))
