"""A real S3 HTTP endpoint for the tests: `moto_server` (from PyPI) in its own process on loopback, a fresh
bucket per use, and a TCP relay in front of it that can be cut to stage a store outage (moto keeps its
objects in memory, so the server itself is never stopped mid-test)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port, stop_process, wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_server(log_path: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """The endpoint URL of a moto S3 server listening on `host`, for the `with` block."""
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    assert executable, "moto_server is missing: pip install 'moto[server]' (the test extra has it)"
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([executable, "-H", host, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://{host}:{port}"

    def answers() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(url, timeout=2).status_code < 500
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, 60, what="moto_server to answer")
        yield url
    finally:
        stop_process(process)


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"adalora-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, **_lower(CREDENTIALS)).create_bucket(Bucket=name)
    return name


def store_env(endpoint: str, bucket: str, prefix: str = "service") -> dict[str, str]:
    """The variables that point the service at `bucket` on `endpoint`."""
    return {"ARTIFACT_STORE": f"s3://{bucket}/{prefix}", "AWS_ENDPOINT_URL": endpoint, **CREDENTIALS}


def objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object under `prefix`: key -> size."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_lower(CREDENTIALS))
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return found


def _lower(credentials: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
            "region_name": credentials["AWS_DEFAULT_REGION"]}


class Relay:
    """A TCP relay on loopback to `target` ("http://host:port"); `cut()` drops every connection and refuses
    new ones (a store outage as a client sees it), `restore()` lets them through again. `pause` seconds
    after each 64 KiB slows transfers down, so a test can cut one halfway."""

    def __init__(self, target: str, pause: float = 0.0):
        self.pause = pause
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.up = True
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            self.up = False
            for connection in self.open:
                _close(connection)
            self.open.clear()

    def restore(self) -> None:
        with self.lock:
            self.up = True

    def close(self) -> None:
        self.cut()
        _close(self.listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.up:
                    _close(client)
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    _close(client)
                    continue
                self.open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                if self.pause:
                    time.sleep(self.pause)
        except OSError:
            pass
        finally:
            for connection in (source, sink):
                _close(connection)
                with self.lock:
                    self.open.discard(connection)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


def stored_keys(prefix: str) -> set[str]:
    """The keys under `prefix` in the store the current settings name (the folder, or the S3 bucket)."""
    from service.settings import get_settings, parse_store_url
    from service.store import get_store

    settings = get_settings()
    if not settings.artifact_store:
        root = get_store().local_path("x").parent
        folder = root / prefix
        return {p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()
    import os

    bucket, base = parse_store_url(settings.artifact_store)
    return {key.removeprefix(base) for key in objects(os.environ["AWS_ENDPOINT_URL"], bucket, base + prefix)}


def relayed_store():
    """`relay, artifact_store_env = relayed_store()` in a test module: its services reach their S3 store through a
    Relay, which the tests cut and restore to make the store go away and come back."""
    import pytest

    @pytest.fixture(scope="module", name="relay")
    def relay_fixture(s3_endpoint):
        relay = Relay(s3_endpoint)
        yield relay
        relay.close()

    @pytest.fixture(scope="module", name="artifact_store_env")
    def store_fixture(relay, s3_endpoint):
        return store_env(relay.url, new_bucket(s3_endpoint))

    return relay_fixture, store_fixture
