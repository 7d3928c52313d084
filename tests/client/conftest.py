"""The SDK and the CLI against a live API process and a real worker (see tests/conftest.py's live_service),
with checkpoints every few steps so that a tiny job has some to list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import service_environment, tiny_job_spec


@pytest.fixture(scope="module")
def service_env(service_env) -> Iterator[dict[str, str]]:
    env = {**service_env, "CHECKPOINT_EVERY": "8"}
    with service_environment(env):
        yield env


def file_job_spec(file_id: str, **training) -> dict:
    """tiny_job_spec() on an uploaded file instead of the server's copy."""
    spec = tiny_job_spec(**training)
    spec["dataset"] = {"source": "file", "file_id": file_id, "validation_split": 0.25}
    return spec
