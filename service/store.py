"""Where stored bytes live: uploaded dataset files, checkpoints, final states and download archives.

One interface, two backends, chosen by ARTIFACT_STORE:
- unset: a folder (ARTIFACT_DIR) shared by the API and its workers, the embedded default;
- `s3://bucket/prefix`: any S3-compatible store (AWS, MinIO, Ceph, R2), so the API and the workers may run
  on hosts that share no disk. Endpoint, region and credentials come from the usual AWS variables
  (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or an instance role).

Keys are relative posix paths (`files/<id>.jsonl`, `jobs/<id>/adapter.tar`), the same strings the database
rows hold, so switching a deployment's backend is a copy of the folder into the bucket. With S3, ARTIFACT_DIR
still holds each host's scratch: checkpoints before their upload, archives being built, and downloaded
copies (`local_copy`). An object appears whole or not at all (a PUT, or a completed multipart upload), so a
row is recorded only after its object is stored.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Literal

from service.settings import get_settings, parse_store_url

CHUNK = 1 << 20
KEY = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[\w.\-/]+$")  # relative, no . or .. parts, no odd characters


class StoreUnavailable(RuntimeError):
    """The store could not be reached, or refused the request; what was stored is unchanged."""


def check_key(key: str) -> str:
    if not KEY.match(key) or "//" in key:
        raise ValueError(f"not a store key: {key!r}")
    return key


def local_root() -> Path:
    return get_settings().artifact_dir.expanduser().resolve()


class Store(ABC):
    def local_path(self, key: str) -> Path:
        """Where this host keeps `key`: the object itself for a folder store, scratch or a cache otherwise."""
        root = local_root()
        path = (root / check_key(key)).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"store key {key!r} leaves the artifact folder")
        return path

    def key_for(self, path: Path) -> str:
        """The key whose local_path is `path`: a file this host wrote under ARTIFACT_DIR."""
        return check_key(Path(path).resolve().relative_to(local_root()).as_posix())

    @abstractmethod
    def put(self, key: str, source: Path) -> None:
        """Store the file `source` under `key`, replacing any earlier object; `source` is consumed."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""

    @abstractmethod
    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the object, in chunks; FileNotFoundError when it is gone."""

    @abstractmethod
    def local_copy(self, key: str) -> Path | None:
        """A readable file on this host with the object's bytes (fetched once), or None when it is gone."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Every object whose key starts with `prefix` (a key, or a folder ending in /); none is no error."""

    def delete(self, key: str) -> None:
        self.delete_prefix(check_key(key))

    def forget_local(self, prefix: str) -> None:  # noqa: B027  # a deliberate no-op default, not abstract
        """Drops this host's scratch and copies under `prefix` (a key, or a folder ending in /); the stored
        objects stay. Nothing for a folder store, whose files are the objects themselves."""

    def _delete_local(self, prefix: str) -> None:
        path = self.local_path(prefix.rstrip("/"))
        if prefix.endswith("/"):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def download_url(self, key: str, disposition: str, seconds: int) -> str | None:
        """A time-limited URL a client may fetch the object from directly (answered with this
        Content-Disposition); None when the store has none."""
        return None

    @abstractmethod
    def check(self) -> None:
        """Raises StoreUnavailable unless the store answers (for /readyz)."""


class FolderStore(Store):
    """Objects are files under ARTIFACT_DIR: a move is the atomic put."""

    def put(self, key: str, source: Path) -> None:
        target = self.local_path(key)
        if Path(source).resolve() == target:
            return  # written in place (a checkpoint, a final state)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.move(source, partial)  # a rename on one disk; a copy from another
        os.replace(partial, target)

    def size(self, key: str) -> int | None:
        path = self.local_path(key)
        return path.stat().st_size if path.is_file() else None

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        with open(self.local_path(key), "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk

    def local_copy(self, key: str) -> Path | None:
        path = self.local_path(key)
        return path if path.is_file() else None

    def delete_prefix(self, prefix: str) -> None:
        self._delete_local(prefix)

    def check(self) -> None:
        root = local_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"ARTIFACT_DIR cannot be created: {exc.strerror}") from None
        if not os.access(root, os.W_OK):
            raise StoreUnavailable("ARTIFACT_DIR is not writable by this process")


class S3Store(Store):
    """Objects in an S3 bucket under a prefix. boto3 retries transient errors itself (standard mode);
    whatever still fails surfaces as StoreUnavailable, never as a half-written object."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None):
        self.bucket, self.prefix = bucket, prefix
        self.client = _s3_client(endpoint)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, source: Path) -> None:
        with _translated(key):
            self.client.upload_file(str(source), self.bucket, self._key(key))  # multipart above 8 MiB
        Path(source).unlink(missing_ok=True)

    def size(self, key: str) -> int | None:
        try:
            with _translated(key):
                return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except FileNotFoundError:
            return None

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            return
        with _translated(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key),
                                          Range=f"bytes={start}-{end - 1}")["Body"]
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

    def local_copy(self, key: str) -> Path | None:
        size = self.size(key)
        if size is None:
            return None
        path = self.local_path(key)
        try:
            if path.stat().st_size == size:  # keys are never rewritten with other bytes of the same size: a hit
                os.utime(path)  # used now: scratch eviction (service/scratch.py) takes the least recent first
                return path
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.partial")  # two workers of a host may fetch it
        try:
            with _translated(key):
                self.client.download_file(self.bucket, self._key(key), str(partial))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def forget_local(self, prefix: str) -> None:
        self._delete_local(prefix)

    def delete_prefix(self, prefix: str) -> None:
        check_key(prefix.rstrip("/"))
        with _translated(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self.prefix + prefix)
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])
                        if prefix.endswith("/") or item["Key"] == self.prefix + prefix]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        self._delete_local(prefix)  # and this host's copies

    def download_url(self, key: str, disposition: str, seconds: int) -> str | None:
        with _translated(key):
            return self.client.generate_presigned_url("get_object", ExpiresIn=seconds, Params={
                "Bucket": self.bucket, "Key": self._key(key), "ResponseContentDisposition": disposition})

    def check(self) -> None:
        try:
            with _translated(""):
                self.client.head_bucket(Bucket=self.bucket)
        except FileNotFoundError:
            raise StoreUnavailable(f"the artifact store has no bucket {self.bucket!r}") from None


class _translated:
    """botocore's errors as ours: a missing object is FileNotFoundError, anything else StoreUnavailable."""

    def __init__(self, key: str):
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> Literal[False]:  # translates, never swallows
        if error is None or isinstance(error, (FileNotFoundError, GeneratorExit)):
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"no stored object {self.key}") from None
            raise StoreUnavailable(f"the artifact store refused the request ({code or 'no code'})") from None
        if isinstance(error, (BotoCoreError, OSError)) and not isinstance(error, FileNotFoundError):
            raise StoreUnavailable(f"the artifact store cannot be reached ({type(error).__name__})") from None
        return False


def _s3_client(endpoint: str | None):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise RuntimeError("ARTIFACT_STORE=s3://... needs boto3: pip install 'adalora-service[s3]'") from None
    # SigV4 always: botocore still presigns with SigV2 in us-east-1, which AWS refuses on buckets made since
    # June 2020. The region must be the bucket's (a presigned URL is signed for it); boto3 reads only
    # AWS_DEFAULT_REGION, while ECS and Lambda may set just AWS_REGION.
    config = Config(signature_version="s3v4", retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5,
                    read_timeout=60)
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def get_store() -> Store:
    """The configured store; cheap to call (the S3 client is built once per process)."""
    url = get_settings().artifact_store
    return _s3_store(url, os.environ.get("AWS_ENDPOINT_URL")) if url else FolderStore()


@lru_cache
def _s3_store(url: str, endpoint: str | None) -> S3Store:
    return S3Store(*parse_store_url(url), endpoint or None)
