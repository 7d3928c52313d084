"""docker-compose.yml validates (Debian's docker-compose checks it without a Docker engine) and has the
production shape: migrations and the MinIO bucket before the API and worker, the artifacts in MinIO (no disk
shared between the API and the workers), a GPU for each worker, no default password."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(COMPOSE is None,
                                reason="docker-compose is not installed (apt-get install docker-compose)")


PASSWORDS = {"POSTGRES_PASSWORD": "s3cret", "MINIO_ROOT_PASSWORD": "an0ther"}


def compose_config(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in PASSWORDS} | env
    return subprocess.run([COMPOSE, "-f", str(REPO / "docker-compose.yml"), "config"], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_compose_file_validates_and_wires_the_services():
    result = compose_config(**PASSWORDS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"postgres", "redis", "minio", "bucket", "migrate", "api", "worker"}
    assert services["migrate"]["command"] == ["adalora-svc", "migrate"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["bucket"]["condition"] == "service_completed_successfully"
        environment = services[name]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert (environment["ARTIFACT_STORE"], environment["AWS_ENDPOINT_URL"]) == ("s3://adalora/artifacts",
                                                                                   "http://minio:9000")
        assert environment["AWS_SECRET_ACCESS_KEY"] == PASSWORDS["MINIO_ROOT_PASSWORD"]
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == PASSWORDS["MINIO_ROOT_PASSWORD"]
    [gpu] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    mounts = {volume.split(":")[1] for volume in services["worker"]["volumes"]}  # source:target:mode
    assert {"/data/scratch", "/cache/huggingface", "/models", "/datasets"} <= mounts


@pytest.mark.parametrize("missing", list(PASSWORDS))
def test_compose_refuses_to_start_without_each_password(missing):
    result = compose_config(**{k: v for k, v in PASSWORDS.items() if k != missing})
    assert result.returncode != 0 and f"set {missing}" in result.stderr
