"""Fixtures of the worker tests that run jobs in-process on a SQLite database of their own; the API's client
and tenants too, for the routing test that submits a job over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import client, new_tenant, sessions  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def data_dir(service_env) -> Path:
    """The allow-listed data folder of this module's services: tests write their datasets into it."""
    return Path(service_env["DATA_DIRS"])
