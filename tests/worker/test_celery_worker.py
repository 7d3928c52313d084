"""A real `celery worker` process takes jobs off the broker: Postgres + Redis, and the embedded
SQLite database + SQLite broker. The test process only writes job rows and sends job ids."""

from __future__ import annotations

import hashlib
import tarfile

from sqlalchemy import select

from service.db import session_scope
from service.lifecycle import request_cancel
from service.store import get_store
from service.tables import Artifact, Metric, RankSnapshot
from tests.conftest import assert_kept_params, tiny_job_spec, wait_for
from tests.helpers import JOB_TIMEOUT, job_row, submit, wait_until_finished


def test_worker_trains_a_queued_job_to_succeeded(celery_worker):
    job_id = submit(tiny_job_spec())
    job = wait_until_finished(job_id, celery_worker)
    assert (job.status, job.error, job.step, job.total_steps) == ("succeeded", None, 24, 24)
    assert job.attempts == 1 and job.worker.startswith("test-")

    with session_scope() as session:
        metrics = session.scalars(select(Metric).where(Metric.job_id == job_id).order_by(Metric.step)).all()
        snapshots = session.scalars(select(RankSnapshot).where(RankSnapshot.job_id == job_id)
                                    .order_by(RankSnapshot.step)).all()
        artifacts = {a.kind: a for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}

    assert [m.step for m in metrics] == list(range(0, 25))  # step 0: the evaluation before training
    assert {"loss", "lr", "budget", "orth_loss"} <= metrics[1].values.keys()
    assert "eval_accuracy" in metrics[0].values and "eval_accuracy" in metrics[-1].values

    # 2 layers x 6 adapted linears; init_r 4 -> target_r 2, a budget in parameters (908 per rank everywhere).
    init_budget, target_budget = 4 * 908, 2 * 908
    budgets = [s.budget for s in snapshots]
    assert snapshots[0].step == 0 and budgets[0] == init_budget == snapshots[0].adapter_params
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == target_budget
    assert snapshots[-1].final and not any(s.final for s in snapshots[:-1])
    for snapshot in snapshots[1:]:
        assert_kept_params(snapshot.ranks, snapshot.adapter_params, snapshot.budget)
    assert (job.budget_unit, job.budget_target, job.current_budget) == ("params", target_budget, target_budget)
    assert job.adapter_params == snapshots[-1].adapter_params

    assert set(artifacts) == {"adapter", "merged", "lora", "lora-serving"}
    for kind, artifact in artifacts.items():
        path = get_store().local_copy(artifact.path)
        assert path.stat().st_size == artifact.size
        assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact.sha256
        with tarfile.open(path) as tar:
            names = tar.getnames()
        expected = "config.json" if kind == "merged" else "adapter_config.json"
        assert f"{kind}/{expected}" in names, names


def test_unknown_model_fails_with_a_readable_message(celery_worker):
    spec = tiny_job_spec()
    spec["model"] = "no-such-org/no-such-model"
    job = wait_until_finished(submit(spec), celery_worker)
    assert job.status == "failed"
    assert job.error.startswith("model 'no-such-org/no-such-model' is not a folder in MODEL_DIRS"), job.error
    assert "which this server cannot reach" in job.error


def test_cancelling_a_running_job_stops_it_and_the_worker_takes_the_next(celery_worker):
    long_job = submit(tiny_job_spec(max_steps=20_000))
    wait_for(lambda: job_row(long_job).step > 0, JOB_TIMEOUT, what="the long job to start training")
    next_job = submit(tiny_job_spec(max_steps=12))

    with session_scope() as session:
        assert request_cancel(session, long_job) == "cancelling"
    cancelled = wait_until_finished(long_job, celery_worker, timeout=15)
    assert cancelled.status == "cancelled" and cancelled.step < 20_000
    assert cancelled.finished_at is not None

    assert wait_until_finished(next_job, celery_worker).status == "succeeded"
