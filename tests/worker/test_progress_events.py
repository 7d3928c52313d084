"""The event log is no longer silent while a job trains: a "step n/N: loss, budget" event every
PROGRESS_EVENT_STEPS steps or PROGRESS_EVENT_SECONDS seconds, and one per evaluation, written by the
worker's reporter: a real worker on a tiny job, and the reporter on a clock of the test's."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.tables import JobEvent
from tests.conftest import claimed_job as claimed_job_row
from tests.conftest import start_worker, stop_process, tiny_job_spec
from tests.helpers import submit, wait_until_finished
from worker.reporting import ProgressReporter

PLAN = {"ranks_init": {"a": 4, "b": 4}, "budget_unit": "ranks", "budget_init": 8, "budget_final": 4,
        "adapter_params_init": 520, "adapter_params_start": 520}


def messages(job_id: str) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


@pytest.fixture(scope="module")
def worker(service_env, tmp_path_factory):
    """A worker that reports progress every 5 steps (and, by time, only after an hour)."""
    process = start_worker(service_env, tmp_path_factory.mktemp("worker"),
                           extra_env={"PROGRESS_EVENT_STEPS": "5", "PROGRESS_EVENT_SECONDS": "3600"})
    yield process
    stop_process(process.process)


def test_a_training_job_logs_progress_every_n_steps_and_each_evaluation(worker):
    job_id = submit(tiny_job_spec(eval_every=12))
    job = wait_until_finished(job_id, worker)
    assert job.status == "succeeded", job.error
    log = messages(job_id)
    progress = [m for m in log if m.startswith("step ")]
    assert [m.split(":")[0] for m in progress] == ["step 5/24", "step 10/24", "step 15/24", "step 20/24"]
    for message in progress:  # the tiny job's budget is in parameters: 908 per rank, init_r 4 -> target_r 2
        loss, budget, kept = re.fullmatch(r"step \d+/24: loss ([\d.]+), budget ([\d,]+) params \(([\d,]+) kept\)",
                                          message).groups()
        assert 0 < float(loss) < 5 and 2 * 908 <= int(budget.replace(",", "")) <= 4 * 908
        assert int(kept.replace(",", "")) <= int(budget.replace(",", ""))
    evaluations = [m for m in log if m.startswith("evaluation at step")]
    assert [m.split(":")[0] for m in evaluations] == ["evaluation at step 12/24", "evaluation at step 24/24"]
    assert all(re.search(r"accuracy 0?\.\d+|accuracy 1\b", m) and "loss" in m for m in evaluations)
    # in order: between "training ..." and the adapter being written
    assert log.index(progress[0]) > next(i for i, m in enumerate(log) if m.startswith("training 24 steps"))
    assert log.index(evaluations[-1]) < next(i for i, m in enumerate(log) if m.startswith("adapter ready"))


@pytest.fixture
def claimed_job(service_env) -> str:
    return claimed_job_row("events")


def test_a_slow_run_logs_progress_every_t_seconds_between_the_step_events(claimed_job):
    now = [100.0]
    reporter = ProgressReporter(claimed_job, flush_steps=1000, flush_seconds=3600, poll_seconds=3600,
                                event_steps=50, event_seconds=30, clock=lambda: now[0])
    reporter.on_start(200, PLAN)
    for step in range(1, 61):
        now[0] += 7.0 if step <= 10 else 0.01   # 10 slow steps (70 s), then fast ones
        metrics = {"loss": 1.0 / step, "budget": 8.0, "adapter_params": 520.0}
        reporter.on_metrics(step, metrics | ({"eval_accuracy": 0.75} if step == 40 else {}))
    reporter.flush()
    log = messages(claimed_job)
    assert [m for m in log if m.startswith(("step", "evaluation"))] == [
        "step 5/200: loss 0.2, budget 8 ranks (520 parameters kept)",     # 35 s after the start
        "step 10/200: loss 0.1, budget 8 ranks (520 parameters kept)",    # 35 s after that
        "evaluation at step 40/200: accuracy 0.75",
        "step 60/200: loss 0.01667, budget 8 ranks (520 parameters kept)",  # 50 steps after step 10
    ]
