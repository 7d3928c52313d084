"""No API key and no database password in any log line: a real API process and a real worker, on Postgres with
a password in DATABASE_URL, go through a whole flow (a key made with the CLI, good and bad authentication, a job
trained to the end, the key revoked) while their output is captured; then every captured line is searched."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import make_url

from cli.main import without_password
from tests.conftest import (
    REPO,
    fresh_postgres_database,
    migrate,
    postgres_server_url,
    start_worker,
    stop_process,
    tiny_job_spec,
    wait_for,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def secret_env(tmp_path, tiny_model_dir, tiny_dataset_file) -> Iterator[tuple[dict[str, str], str]]:
    """The service's environment with a password in DATABASE_URL: the server's real one if the test server
    has one, else a made-up one (the test server trusts local connections, so any password gets in)."""
    if not postgres_server_url() or not os.environ.get("TEST_REDIS_URL"):
        pytest.skip("needs TEST_POSTGRES_URL and TEST_REDIS_URL (scripts/test.sh sets them)")
    with fresh_postgres_database() as url:
        migrate(url)
        password = make_url(url).password or f"pw-{uuid.uuid4().hex}"
        env = {"DATABASE_URL": make_url(url).set(password=password).render_as_string(hide_password=False),
               "BROKER_URL": os.environ["TEST_REDIS_URL"], "QUEUE_NAME": f"training-test-{uuid.uuid4().hex[:8]}",
               "ARTIFACT_DIR": str(tmp_path / "artifacts"), "MODEL_DIRS": str(tiny_model_dir.parent),
               "DATA_DIRS": str(tiny_dataset_file.parent), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        yield env, password


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "cli", *args], env={**os.environ, **env}, cwd=REPO,
                          capture_output=True, text=True, check=True).stdout


def test_keys_and_the_database_password_never_reach_the_logs(secret_env, tmp_path):
    env, password = secret_env
    port = free_port()
    api_log = tmp_path / "api.log"
    with open(api_log, "wb") as out:
        api = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)], cwd=REPO,
                               env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    (tmp_path / "worker").mkdir()
    worker = start_worker(env, tmp_path / "worker")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/readyz"), 60, interval=0.3, what="the API to start")
        key = cli(env, "create-key", "--tenant", "secrets", "--name", "log test").strip()
        prefix, secret = key.split("_", 2)[1:]
        wrong = f"ada_{prefix}_{'x' * len(secret)}"
        stranger = f"ada_{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/v1/jobs", headers=auth).status_code == 200
            for header in (f"Bearer {wrong}", f"Bearer {stranger}", f"Bearer {key}x", key,
                           "Basic " + base64.b64encode(f"user:{key}".encode()).decode()):
                assert http.get("/v1/jobs", headers={"Authorization": header}).status_code == 401
            # A client that puts the key in the URL is refused, and the access log line must not keep it.
            assert http.get("/v1/jobs", params={"api_key": key}).status_code == 401
            assert http.get(f"/v1/jobs/{key}", headers=auth).status_code == 404
            assert http.post("/v1/jobs", json={**tiny_job_spec(), "model": "../etc"}, headers=auth).status_code == 422
            created = http.post("/v1/jobs", json=tiny_job_spec(max_steps=12), headers=auth)
            assert created.status_code == 201, created.text
            job = created.json()
            wait_for(lambda: http.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "succeeded", 120,
                     interval=0.5, what="the job to succeed")
            assert http.get(f"/v1/jobs/{job['id']}/events", headers=auth).status_code == 200
            cli(env, "revoke-key", prefix)
            assert http.get("/v1/jobs", headers=auth).status_code == 401
    finally:
        stop_process(api)
        stop_process(worker.process)

    logs = {"api": api_log.read_text(errors="replace"), "worker": worker.log_path.read_text(errors="replace")}
    assert "GET /v1/jobs HTTP/1.1\" 401" in logs["api"] and "POST /v1/jobs HTTP/1.1\" 201" in logs["api"]
    assert f"ada_{prefix}_***" in logs["api"]  # the URL's key, redacted in the access log
    assert "adalora.run_job[" in logs["worker"] and "succeeded" in logs["worker"]  # real, full logs
    for name, text in logs.items():
        for label, secret_text in (("the API key", key), ("the key's secret", secret), ("a wrong key", wrong),
                                   ("an unknown key", stranger), ("the database password", password)):
            assert secret_text not in text, f"{label} appears in the {name} log"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("url,shown", [
    ("postgresql+psycopg://svc:s3cret@db:5432/adalora", "postgresql+psycopg://svc:**@db:5432/adalora"),
    ("redis://:s3cret@redis:6379/0", "redis://:**@redis:6379/0"),
    ("sqlite:///var/adalora.sqlite", "sqlite:///var/adalora.sqlite")])
def test_the_dev_banner_prints_urls_without_their_password(url, shown):
    assert without_password(url) == shown
