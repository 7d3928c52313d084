"""Shared fixtures: real databases (SQLite file, and Postgres when TEST_POSTGRES_URL is set), Redis,
a tiny BERT classifier saved to disk, a small CSV dataset, and a real Celery worker process.

scripts/test.sh sets TEST_POSTGRES_URL to a fresh database per run; each test module gets its own
database on that server, created and dropped here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, make_url

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["sqlite", "postgres"]

POSITIVE = ["good", "great", "fine", "happy", "lovely", "superb", "nice", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "ugly", "terrible", "dull", "grim"]
FILLER = ["the", "movie", "was", "very", "plot", "acting", "and", "really", "a", "story", "film", "quite"]


# -- databases -------------------------------------------------------------------------------------

def postgres_server_url() -> str | None:
    return os.environ.get("TEST_POSTGRES_URL")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the TEST_POSTGRES_URL server, dropped afterwards."""
    import psycopg

    base = make_url(postgres_server_url())
    name = f"{base.database}_{uuid.uuid4().hex[:8]}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def empty_database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'service-{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    if not postgres_server_url():
        pytest.skip("TEST_POSTGRES_URL is not set (scripts/test.sh sets it when PostgreSQL is running)")
    with fresh_postgres_database() as url:
        yield url


def migrate(url: str, revision: str = "head", direction: str = "upgrade") -> None:
    from alembic import command
    from alembic.config import Config

    from service.db import make_engine

    config = Config(str(REPO / "alembic.ini"))
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, direction)(config, revision)
    finally:
        engine.dispose()


@pytest.fixture
def empty_database_url(request, tmp_path) -> Iterator[str]:
    """An empty database; parametrize indirectly with "sqlite" or "postgres"."""
    with empty_database(request.param, tmp_path) as url:
        yield url


# Tests whose variants exercise the same code: one runs by default, the rest only with TEST_ALL (marked slow).
# A SIGTERM hand-back costs ~30 s a variant; the default one is production's shape (Postgres, Redis, solo).
ONE_VARIANT_BY_DEFAULT = {
    "test_a_sigterm_checkpoints_requeues_and_the_next_worker_resumes": {"pool": "solo", "database_url": "postgres"},
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kept = ONE_VARIANT_BY_DEFAULT.get(getattr(item, "originalname", item.name))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if kept is not None and any(params.get(name) != value for name, value in kept.items()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request, tmp_path_factory) -> Iterator[str]:
    """A migrated database for this test module, on each backend."""
    with empty_database(request.param, tmp_path_factory.mktemp("db")) as url:
        migrate(url)
        yield url


def sqlite_only_database_url():
    """`database_url = sqlite_only_database_url()` in a module runs it on SQLite alone: for the modules that
    train models, where a second backend costs minutes and tests nothing more of the database."""
    @pytest.fixture(scope="module", name="database_url")
    def sqlite_database_url(tmp_path_factory) -> Iterator[str]:
        with empty_database("sqlite", tmp_path_factory.mktemp("db")) as url:
            migrate(url)
            yield url
    return sqlite_database_url


def reset_service_caches() -> None:
    """Forget settings, engines and the Celery app so the next use reads the current environment."""
    from service import db
    from service.queue import get_celery
    from service.settings import get_settings

    get_settings.cache_clear()
    db.reset()
    get_celery.cache_clear()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real S3 HTTP endpoint on loopback (moto_server), shared by the session; each user makes a bucket."""
    from tests.s3 import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture(scope="module")
def artifact_store_env() -> dict[str, str]:
    """The store a module's service uses: ARTIFACT_DIR alone. A module runs against S3 as well with
        @pytest.fixture(scope="module", params=STORES)
        def artifact_store_env(request): return store_env_for(request)"""
    return {}


STORES = ["folder", "s3"]


def store_env_for(request) -> dict[str, str]:
    """The environment of the store named by request.param: {} for the folder, a new bucket on moto for s3."""
    if request.param == "folder":
        return {}
    from tests.s3 import new_bucket, store_env

    endpoint = request.getfixturevalue("s3_endpoint")
    return store_env(endpoint, new_bucket(endpoint))


@pytest.fixture(scope="module")
def service_env(database_url, artifact_store_env, tmp_path_factory, tiny_model_dir,
                tiny_dataset_file) -> Iterator[dict[str, str]]:
    """Environment for this process and any worker: the module's database, its own artifact folder and
    queue, the tiny model and dataset folders allow-listed. Postgres modules use Redis as the broker;
    SQLite modules use the embedded SQLite broker, as `adalora-svc dev` does."""
    root = tmp_path_factory.mktemp("service")
    env = {
        **artifact_store_env,
        "DATABASE_URL": database_url,
        "ARTIFACT_DIR": str(root / "artifacts"),
        "MODEL_DIRS": str(tiny_model_dir.parent),
        "DATA_DIRS": str(tiny_dataset_file.parent),
        "QUEUE_NAME": f"training-test-{uuid.uuid4().hex[:8]}",  # concurrent test runs never share a queue
        "BROKER_URL": broker_for(database_url, root),
        "METRICS_FLUSH_STEPS": "5",
        "METRICS_FLUSH_SECONDS": "1",
        "CANCEL_POLL_SECONDS": "0.2",
    }
    with service_environment(env):
        yield env


@contextmanager
def service_environment(env: dict[str, str]) -> Iterator[None]:
    """Sets `env` for this process (and the workers it starts), with the service's cached settings,
    engine and Celery app rebuilt on the way in and out."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        reset_service_caches()
        yield
    reset_service_caches()


def broker_for(database_url: str, folder: Path) -> str:
    if database_url.startswith("postgresql"):
        redis_url = os.environ.get("TEST_REDIS_URL")
        if not redis_url:
            pytest.skip("TEST_REDIS_URL is not set (scripts/test.sh sets it)")
        return redis_url
    return f"sqla+sqlite:///{folder / 'broker.sqlite'}"


@pytest.fixture(scope="module")
def engine(service_env) -> Iterator[Engine]:
    from service.db import get_engine

    yield get_engine()


# -- a tiny model and dataset ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT classifier (hidden size 32) with a WordPiece tokenizer over the dataset's words,
    saved like a hub model."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("models") / "tiny-bert"
    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    assert tokenizer("good film")["input_ids"] == [2, vocab.index("good"), vocab.index("film"), 3]
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    return folder


CHAT_TEMPLATE = ("{% for m in messages %}{{ m.role }} : {{ m.content }} [SEP] {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


@pytest.fixture(scope="session")
def tiny_chat_gpt2_dir(tiny_model_dir) -> Path:
    """A 2-layer GPT-2 beside the tiny BERT, with the BERT word tokenizer and a chat template."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tiny_model_dir.parent / "tiny-chat-gpt2"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                               pad_token_id=0)).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tiny_model_dir) -> Path:
    """A 2-layer GPT-2 beside the tiny BERT (same MODEL_DIRS), reusing its word-level tokenizer."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tiny_model_dir.parent / "tiny-gpt2"
    if not folder.exists():
        shutil.copytree(tiny_model_dir, folder)
        for weights in folder.glob("*.safetensors"):
            weights.unlink()
        (folder / "config.json").unlink()
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=33, n_embd=32, n_layer=2, n_head=2, n_positions=64, pad_token_id=0)
        GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(sentence, "positive"|"negative"): the label is the polarity of the one sentiment word."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def tiny_dataset_file(tmp_path_factory) -> Path:
    """96 rows of `sentence,label` with string labels, in a data folder of its own."""
    path = tmp_path_factory.mktemp("data") / "sentiment.csv"
    path.write_text("sentence,label\n" + "".join(f"{s},{y}\n" for s, y in sentiment_rows(96)))
    return path


def tiny_bert_rank_cost(module: str) -> int:
    """Parameters one rank of a tiny-bert module holds (in + out + 1): 32 -> 32 attention linears, and the
    MLP's 32 -> 64 and 64 -> 32. Rank 1 in all 12 modules costs 908."""
    mlp = module.endswith("intermediate.dense") or (module.endswith("output.dense") and "attention" not in module)
    return 97 if mlp else 65


def assert_kept_params(snapshot_ranks: dict[str, int], adapter_params: int, budget: float) -> None:
    """A snapshot of a parameter budget: its count is what its ranks hold, and it fits the budget with less
    than the largest triplet (97) left over."""
    assert adapter_params == sum(r * tiny_bert_rank_cost(m) for m, r in snapshot_ranks.items())
    assert budget - 97 < adapter_params <= budget


def tiny_job_spec(**training) -> dict:
    """A job on the tiny model and dataset, small enough for a few seconds on a CPU."""
    return {
        "model": "tiny-bert",
        "task": "sequence_classification",
        "dataset": {"source": "server", "path": "sentiment.csv", "validation_split": 0.25},
        "budget": {"init_r": 4, "target_r": 2, "lora_alpha": 8},
        "schedule": {"tinit": 4, "tfinal": 6, "delta_t": 2},
        "training": {"max_steps": 24, "batch_size": 8, "learning_rate": 5e-3, "warmup_ratio": 0.0,
                     **training},
    }


# -- a real Celery worker --------------------------------------------------------------------------

@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_worker(service_env: dict[str, str], folder: Path, pool: str = "solo",
                 extra_env: dict[str, str] | None = None, queues: list[str] | None = None,
                 name: str | None = None) -> WorkerProcess:
    """`celery -A worker.celery_app worker` as a subprocess on the given database, broker and queues (default:
    the module's QUEUE_NAME)."""
    log_path = folder / "worker.log"
    env = {**os.environ, **service_env, **(extra_env or {}), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
               "-Q", ",".join(queues or [service_env["QUEUE_NAME"]]), "-c", "1", "--pool", pool, "--without-heartbeat",
               "--without-gossip", "--without-mingle", "-n", name or f"test-{uuid.uuid4().hex[:6]}@%h", "-l", "info"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return WorkerProcess(process, log_path)


@pytest.fixture(scope="module")
def celery_worker(service_env, tmp_path_factory) -> Iterator[WorkerProcess]:
    """A solo-pool worker (the job runs in the worker process itself) for this module's services."""
    worker = start_worker(service_env, tmp_path_factory.mktemp("worker"))
    yield worker
    stop_process(worker.process)


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(condition: Callable[[], object], timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll until `condition()` is truthy and return it; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


# -- a live API over HTTP --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    """`uvicorn api.main:app` on 127.0.0.1:`port`, answering /healthz when this returns."""
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 60, interval=0.2, what="the API to answer /healthz")
    return process


def claimed_job(tenant_prefix: str) -> str:
    """A job row claimed by 'this test' (attempt 1), as claim_and_run leaves it just before training."""
    from service.db import session_scope
    from service.lifecycle import claim_job
    from tests.helpers import new_job

    job_id = new_job(tiny_job_spec(), tenant_prefix)
    with session_scope() as session:
        assert claim_job(session, job_id, "this test", None, stale_after_seconds=60)
    return job_id


@dataclass
class LiveService:
    """A uvicorn API process and a Celery worker process on this module's database and broker."""

    url: str
    log_path: Path
    worker: WorkerProcess

    def new_key(self, tenant: str | None = None) -> str:
        """An API key of a new tenant (or of `tenant`)."""
        from service.db import session_scope
        from service.keys import create_api_key

        with session_scope() as session:
            return create_api_key(session, tenant or f"tenant-{uuid.uuid4().hex[:8]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] + "\n" + self.worker.log_tail()


@pytest.fixture(scope="module")
def live_service(service_env, celery_worker, tmp_path_factory) -> Iterator[LiveService]:
    port, log_path = free_port(), tmp_path_factory.mktemp("api") / "api.log"
    api = start_api(service_env, port, log_path)
    yield LiveService(f"http://127.0.0.1:{port}", log_path, celery_worker)
    stop_process(api)
