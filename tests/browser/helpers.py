"""Helpers of the browser tests: the Chromium to drive, reading the page's state, signing in, and jobs written
straight into the database (a finished job's metrics, rank snapshots and events without a minute of training)."""

from __future__ import annotations

import math
import os
import random
import shutil
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from service.artifacts import archive_folder, record_archive
from service.db import session_scope
from service.tables import Checkpoint, Job, JobEvent, Metric, RankSnapshot, utcnow
from tests.conftest import tiny_bert_rank_cost, tiny_job_spec

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra (pip install -e .[test])")

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# Without the background-networking flags Chromium calls Google's hosts at start-up (refused here).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps"]
KEY_ITEM = "adalora-api-key"  # where the dashboard keeps the key (sessionStorage)


def js(page, expression: str):
    return page.evaluate(f"() => {expression}")


def wait_js(page, condition: str, timeout: float = 60_000):
    page.wait_for_function(f"() => {condition}", timeout=timeout)


def open_dashboard(page, server: str, key: str, route: str = "#/jobs") -> None:
    """Signed in with `key` (as the sign-in form leaves it) on `route`."""
    page.goto(f"{server}/dashboard/")
    page.evaluate("([item, key]) => sessionStorage.setItem(item, key)", [KEY_ITEM, key])
    page.goto(f"{server}/dashboard/{route}")


def wait_until_settled(page) -> None:
    """A finished job's page has stopped polling and streaming, and no request is in flight."""
    wait_js(page, "dashboard.route === 'jobPage' && dashboard.heatmap && dashboard.pending === 0 && "
                  "!dashboard.polling && !dashboard.streaming")


def console_errors(page) -> list[str]:
    """The page's console errors but Chromium's "Failed to load resource" for each 4xx answer, which the pages ask
    for knowingly (the size of each kind of archive, most of which a job has not)."""
    return [e for e in page.console_errors if not e.startswith("Failed to load resource")]


def foreign_requests(requests, server: str) -> list[str]:
    own = urlparse(server).netloc
    return [r.url for r in requests if urlparse(r.url).scheme not in ("blob", "data") and urlparse(r.url).netloc != own]


# -- seeded jobs ---------------------------------------------------------------------------------------------

TINY_BERT_MODULES = [f"bert.encoder.layer.{layer}.{name}" for layer in (0, 1) for name in (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "intermediate.dense", "output.dense")]
RANK_UNIT = sum(tiny_bert_rank_cost(m) for m in TINY_BERT_MODULES)  # rank 1 in every module: 908 parameters


def seed_job(tenant_id: int, *, status: str = "succeeded", total_steps: int = 150, step: int | None = None,
             tinit: int = 10, tfinal: int = 50, delta_t: int = 5, eval_every: int = 50, name: str = "seeded",
             grad_norm_scale: float = 1.0) -> str:
    """A job of the tiny model with what a run writes: metrics at every step to `step` (a warmup to lr 1e-3, then a
    linear decay), evaluations every `eval_every`, a rank snapshot every `delta_t` steps from `tinit` to the frozen
    budget at total_steps - tfinal (marked final), and events. Ranks go from 4 to 2 and one module to 0."""
    step = total_steps if step is None else step
    rng = random.Random(0)
    spec = tiny_job_spec(max_steps=total_steps, eval_every=eval_every, learning_rate=1e-3, warmup_ratio=0.1)
    spec |= {"name": name, "schedule": {"tinit": tinit, "tfinal": tfinal, "delta_t": delta_t}}
    freeze = total_steps - tfinal
    warmup = int(0.1 * total_steps)

    def budget(s: int) -> float:  # 4 ranks per module to 2, cubically, as the schedule does
        if s < tinit:
            return 4 * RANK_UNIT
        progress = min(1.0, (s - tinit) / (freeze - tinit))
        return 2 * RANK_UNIT + 2 * RANK_UNIT * (1 - progress) ** 3

    def ranks(s: int) -> dict[str, int]:
        progress = min(1.0, (s - tinit) / (freeze - tinit))
        out = {m: max(2, 4 - int(progress * 2.99 * (1 + i % 3) / 3)) for i, m in enumerate(TINY_BERT_MODULES)}
        out[TINY_BERT_MODULES[0]] = 0 if progress >= 1 else out[TINY_BERT_MODULES[0]]
        return out

    def params(r: dict[str, int]) -> int:
        return sum(rank * tiny_bert_rank_cost(m) for m, rank in r.items())

    with session_scope() as session:
        job = Job(tenant_id=tenant_id, spec=spec, status=status, step=step, total_steps=total_steps,
                  budget_unit="params", budget_target=2 * RANK_UNIT, current_budget=budget(step),
                  adapter_params=params(ranks(step)) if step >= tinit else None, attempts=1,
                  started_at=utcnow() - timedelta(minutes=5), finished_at=utcnow() if status != "running" else None,
                  error="CUDA out of memory" if status == "failed" else None)
        session.add(job)
        session.flush()
        for s in range(1, step + 1):
            values = {"loss": 0.7 * math.exp(-s / 60) + 0.05 + 0.08 * rng.random(),
                      "orth_loss": 0.02 * math.exp(-s / 40),
                      "grad_norm": grad_norm_scale * (1 + rng.random()), "lr": 1e-3 * (s / warmup if s <= warmup else
                                                               (total_steps - s) / (total_steps - warmup)),
                      "budget": budget(s)}
            if s >= tinit:
                values["adapter_params"] = params(ranks(min(s, freeze) // delta_t * delta_t))
            if s % eval_every == 0:
                values |= {"eval_loss": 0.6 - s / 1000, "eval_accuracy": 0.5 + s / 400, "eval_f1": 0.45 + s / 400,
                           "eval_mcc": s / 300}
            session.add(Metric(job_id=job.id, step=s, values=values))
        for s in range(tinit, min(step, freeze) + 1, delta_t):
            r = ranks(s)
            session.add(RankSnapshot(job_id=job.id, step=s, budget=budget(s), ranks=r, final=s == freeze,
                                     adapter_params=params(r)))
        for message in ["started on test", f"step {step}/{total_steps}", status]:
            session.add(JobEvent(job_id=job.id, message=message))
        if status in ("cancelled", "failed"):
            session.add(Checkpoint(job_id=job.id, step=step // 50 * 50, path=f"jobs/{job.id}/checkpoint"))
        return job.id


def add_metric_steps(job_id: str, first: int, last: int) -> None:
    """More steps of a running job's loss and learning rate, as its worker would flush them."""
    with session_scope() as session:
        for s in range(first, last + 1):
            session.add(Metric(job_id=job_id, step=s, values={"loss": 1 / s, "lr": 1e-3}))
        session.get(Job, job_id).step = last


def seed_archive(job_id: str, folder: Path, size: int) -> None:
    """An adapter archive of `size` random bytes, stored and on record as the worker's export leaves it."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(random.Random(1).randbytes(size))
    archive = archive_folder(job_id, "adapter", folder / "adapter")
    with session_scope() as session:
        record_archive(session, job_id, archive)
