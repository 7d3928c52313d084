"""`adalora-svc` as an operator runs it: migrate, create and revoke keys, and the embedded `dev` mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.orm import Session

from service.db import make_engine
from service.tables import IdempotentRequest, Job, Tenant, utcnow
from tests.conftest import REPO, free_port, wait_for
from tests.raw_http import exchange, request, status_of


def cli(*args: str, cwd, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env,
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


def test_list_keys_then_revoke_a_whole_tenant(tmp_path, sqlite_env):
    assert cli("migrate", cwd=tmp_path, env=sqlite_env).returncode == 0
    acme = [cli("create-key", "--tenant", "acme", "--name", f"ci {i}", cwd=tmp_path, env=sqlite_env).stdout.strip()
            for i in range(2)]
    other = cli("create-key", "--tenant", "other", cwd=tmp_path, env=sqlite_env).stdout.strip()

    listed = cli("list-keys", cwd=tmp_path, env=sqlite_env).stdout.splitlines()
    assert [line.split("\t")[:3] for line in listed] == [
        ["acme", acme[0].split("_")[1], "active"], ["acme", acme[1].split("_")[1], "active"],
        ["other", other.split("_")[1], "active"]]
    assert not any(key.split("_", 2)[2] in "\n".join(listed) for key in [*acme, other])  # never a secret

    revoked = cli("revoke-tenant", "acme", cwd=tmp_path, env=sqlite_env)
    assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked 2 key(s) of 'acme'"
    states = [line.split("\t")[2] for line in cli("list-keys", "--tenant", "acme", cwd=tmp_path,
                                                   env=sqlite_env).stdout.splitlines()]
    assert len(states) == 2 and all(state.startswith("revoked ") for state in states)
    assert cli("list-keys", "--tenant", "other", cwd=tmp_path, env=sqlite_env).stdout.split("\t")[2] == "active"
    unknown = cli("revoke-tenant", "nobody", cwd=tmp_path, env=sqlite_env)
    assert unknown.returncode == 1 and "no tenant named 'nobody'" in unknown.stderr


def test_reconcile_runs_one_pass_and_says_what_it_did(tmp_path, sqlite_env):
    env = {**sqlite_env, "BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
           "QUEUED_GRACE_SECONDS": "60", "STALE_JOB_SECONDS": "60", "MAX_ATTEMPTS": "2",
           "IDEMPOTENCY_TTL_HOURS": "1"}
    assert cli("migrate", cwd=tmp_path, env=env).returncode == 0
    hour_ago = utcnow() - timedelta(hours=1, seconds=1)
    engine = make_engine(env["DATABASE_URL"])
    with Session(engine) as session:
        tenant = Tenant(name="ops")
        session.add(tenant)
        session.flush()
        jobs = {name: Job(tenant_id=tenant.id, spec={}, status=status, attempts=attempts, heartbeat_at=hour_ago)
                for name, status, attempts in (("lost", "queued", 0), ("died", "running", 1),
                                               ("died twice", "running", 2), ("stopping", "cancelling", 1),
                                               ("live", "running", 1))}
        jobs["live"].heartbeat_at = utcnow()
        session.add_all([*jobs.values(),
                         IdempotentRequest(tenant_id=tenant.id, key="old", request_hash="0" * 64, status_code=201,
                                           response_body={}, created_at=hour_ago),
                         IdempotentRequest(tenant_id=tenant.id, key="new", request_hash="0" * 64, status_code=201,
                                           response_body={})])
        session.commit()
        ids = {name: job.id for name, job in jobs.items()}

    done = cli("reconcile", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"re-sent (queued, message presumed lost): 1 ({ids['lost']})",
        f"requeued (worker stopped responding): 1 ({ids['died']})",
        f"failed (worker stopped responding MAX_ATTEMPTS times): 1 ({ids['died twice']})",
        f"cancelled (cancel requested, then the worker stopped): 1 ({ids['stopping']})",
        "expired idempotency keys deleted: 1"]
    with engine.connect() as conn:
        statuses = dict(conn.exec_driver_sql("SELECT id, status FROM jobs").all())
        keys = conn.exec_driver_sql("SELECT key FROM idempotent_requests").scalars().all()
    engine.dispose()
    assert {name: statuses[job_id] for name, job_id in ids.items()} == {
        "lost": "queued", "died": "queued", "died twice": "failed", "stopping": "cancelled", "live": "running"}
    assert keys == ["new"]
    again = cli("reconcile", cwd=tmp_path, env=env)  # nothing left to do (the re-sent ones were just sent)
    assert again.stdout.splitlines()[0] == "re-sent (queued, message presumed lost): 0"
    assert again.stdout.splitlines()[-1] == "expired idempotency keys deleted: 0"


def dev_env() -> dict:
    """No configuration at all, as on a fresh clone."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "ARTIFACT_DIR", "MODEL_DIRS", "DATA_DIRS", "PORT")}
    return {**env, "PYTHONPATH": str(REPO)}


def start_dev(folder, port: int) -> tuple[subprocess.Popen, object]:
    """`adalora-svc dev --port` in `folder`, waited for until its API answers and its worker is ready."""
    log = folder / "dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "cli", "dev", "--port", str(port)], cwd=folder,
                                   env=dev_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def ready():
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 60, interval=0.5, what=f"the dev API to answer; log:\n{log}")
    wait_for(lambda: "ready." in log.read_text(), 30, what="the dev worker to connect")
    return process, log


def stop_dev(process: subprocess.Popen, signum: int) -> int:
    process.send_signal(signum)
    try:
        return process.wait(40)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def test_dev_mode_starts_api_and_worker_on_the_embedded_defaults(tmp_path):
    """A SQLite file and SQLite broker under ./var, a key that works, the example model in var/models."""
    port = free_port()
    process, log = start_dev(tmp_path, port)
    try:
        printed = log.read_text()
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        assert f"API key  {key}" in printed and f"http://127.0.0.1:{port}/docs" in printed
        assert f"http://127.0.0.1:{port}/dashboard/" in printed
        # The banner comes after uvicorn has bound the port, never before.
        assert printed.index(f"Uvicorn running on http://127.0.0.1:{port}") < printed.index("API key")
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        names = [model["name"] for model in answer.json()["data"]]
        assert names == ["sentence-transformers/all-MiniLM-L6-v2"], names  # from the package `make` installs
        assert (tmp_path / "var" / "adalora.sqlite").exists() and (tmp_path / "var" / "broker.sqlite").exists()
        # The embedded server bounds request heads as `serve` does (tests/service/test_header_limits.py).
        assert status_of(exchange(port, request([("X-Big", "a" * 200_000)]))) == 431
        assert status_of(exchange(port, request([(f"X-H{i}", "1") for i in range(3000)]))) == 431
    finally:
        code = stop_dev(process, signal.SIGINT)  # Ctrl+C
    assert code == 130 and "Warm shutdown" in log.read_text()  # the worker was stopped with the API


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_dev_mode_stopped_by_a_signal_stops_its_worker(tmp_path, signum):
    """kill, systemd and supervisors send SIGTERM, a closed terminal SIGHUP: both stop the worker too, so a
    second start never finds two workers on one broker."""
    import psutil

    process, log = start_dev(tmp_path, free_port())
    children = psutil.Process(process.pid).children(recursive=True)
    assert children, "dev started no worker process"
    code = stop_dev(process, signum)
    assert code == 128 + signum
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert "Warm shutdown" in log.read_text()


def test_dev_mode_on_a_taken_port_says_how_to_pick_another_and_starts_nothing(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "cli", "dev", "--port", str(port)], cwd=tmp_path,
                                env=dev_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and f"PORT={port + 1} make serve" in result.stderr
    assert "API key" not in result.stdout and not (tmp_path / "var" / "adalora.sqlite").exists()


def test_the_port_comes_from_the_environment(tmp_path, monkeypatch):
    from cli.main import parser

    monkeypatch.delenv("PORT", raising=False)
    assert parser().parse_args(["dev"]).port == 8000
    monkeypatch.setenv("PORT", "9123")
    assert parser().parse_args(["serve"]).port == 9123 and parser().parse_args(["dev", "--port", "1"]).port == 1
    env = {**dev_env(), "PORT": "not-a-port"}
    result = subprocess.run([sys.executable, "-m", "cli", "dev"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "invalid int value: 'not-a-port'" in result.stderr
