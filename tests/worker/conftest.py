"""Fixtures of the worker tests that run jobs in-process on a SQLite database of their own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def data_dir(service_env) -> Path:
    """The allow-listed data folder of this module's services: tests write their datasets into it."""
    return Path(service_env["DATA_DIRS"])
