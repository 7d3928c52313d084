"""`adalora-svc` as an operator runs it: migrate, create and revoke keys, and the embedded `dev` mode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from service.db import make_engine
from tests.conftest import REPO, wait_for


def cli(*args: str, cwd, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def sqlite_env(tmp_path) -> dict:
    return {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite'}", "PYTHONPATH": str(REPO)}


def test_migrate_then_create_and_revoke_a_key(tmp_path, sqlite_env):
    assert cli("migrate", cwd=tmp_path, env=sqlite_env).returncode == 0
    created = cli("create-key", "--tenant", "acme", cwd=tmp_path, env=sqlite_env)
    key = created.stdout.strip()
    assert created.returncode == 0 and key.startswith("ada_")

    engine = make_engine(sqlite_env["DATABASE_URL"])
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT prefix, key_hash FROM api_keys").one()
    engine.dispose()
    assert stored[0] == key.split("_")[1] and key not in stored

    assert cli("revoke-key", stored[0], cwd=tmp_path, env=sqlite_env).returncode == 0
    again = cli("revoke-key", stored[0], cwd=tmp_path, env=sqlite_env)
    assert again.returncode == 1 and "no active key" in again.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dev_mode_starts_api_and_worker_on_the_embedded_defaults(tmp_path):
    """No configuration at all: a SQLite file and SQLite broker under ./var, and a key that works."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "ARTIFACT_DIR", "MODEL_DIRS", "DATA_DIRS")}
    env["PYTHONPATH"] = str(REPO)
    port = free_port()
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "dev", "--port", str(port)], cwd=tmp_path,
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 60, interval=0.5, what=f"the dev API to answer; log:\n{log}")
        printed = log.read_text()
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        assert f"API key  {key}" in printed and f"http://127.0.0.1:{port}/docs" in printed
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        wait_for(lambda: "ready." in log.read_text(), 30, what="the dev worker to connect")
        assert (tmp_path / "var" / "adalora.sqlite").exists() and (tmp_path / "var" / "broker.sqlite").exists()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert "Warm shutdown" in log.read_text()  # the worker was stopped with the API
