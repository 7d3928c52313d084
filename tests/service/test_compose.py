"""docker-compose.yml validates (Debian's docker-compose checks it without a Docker engine) and has the
production shape: migrations before the API and worker, a GPU for each worker, no default password."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose)")


def compose_config(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"} | env
    return subprocess.run([COMPOSE, "-f", str(REPO / "docker-compose.yml"), "config"], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_compose_file_validates_and_wires_the_services():
    result = compose_config(POSTGRES_PASSWORD="s3cret")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    assert services["migrate"]["command"] == ["adalora-svc", "migrate"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    [gpu] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    mounts = {volume.split(":")[1] for volume in services["worker"]["volumes"]}  # source:target:mode
    assert {"/data/artifacts", "/cache/huggingface", "/models", "/datasets"} <= mounts


def test_compose_refuses_to_start_without_a_database_password():
    result = compose_config()
    assert result.returncode != 0 and "set POSTGRES_PASSWORD" in result.stderr
