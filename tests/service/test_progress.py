"""Metrics and rank snapshots are upserted by (job, step): writing a step twice keeps one row, the latest."""

from __future__ import annotations

from sqlalchemy import select

from service.db import session_scope
from service.progress import upsert_metrics, upsert_rank_snapshots
from service.tables import Job, Metric, RankSnapshot
from tests.helpers import new_job


def test_metrics_upsert_is_idempotent_and_keeps_the_latest_values(engine):
    job_id = new_job()
    with session_scope() as session:
        upsert_metrics(session, job_id, {s: {"loss": 1.0 / s} for s in (1, 2, 3)})
    with session_scope() as session:  # a rerun reports steps 2..4 again
        upsert_metrics(session, job_id, {s: {"loss": 10.0 + s} for s in (2, 3, 4)})
    with session_scope() as session:
        rows = session.execute(select(Metric.step, Metric.values).where(Metric.job_id == job_id)
                               .order_by(Metric.step)).all()
    assert [(step, values["loss"]) for step, values in rows] == [(1, 1.0), (2, 12.0), (3, 13.0), (4, 14.0)]


def test_non_finite_metric_values_are_left_out_on_every_backend(engine):
    job_id = new_job()
    with session_scope() as session:
        upsert_metrics(session, job_id, {1: {"loss": 2.0, "eval_perplexity": float("inf"), "eval_x": float("nan")}})
    with session_scope() as session:
        values = session.scalar(select(Metric.values).where(Metric.job_id == job_id))
    assert values == {"loss": 2.0}


def test_rank_snapshot_upsert_is_idempotent(engine):
    job_id = new_job()
    first = {0: (8.0, {"a": 4, "b": 4}, False), 10: (6.0, {"a": 4, "b": 2}, False)}
    with session_scope() as session:
        upsert_rank_snapshots(session, job_id, first)
    with session_scope() as session:
        upsert_rank_snapshots(session, job_id, {10: (5.0, {"a": 3, "b": 2}, True)})
    with session_scope() as session:
        rows = session.scalars(select(RankSnapshot).where(RankSnapshot.job_id == job_id)
                               .order_by(RankSnapshot.step)).all()
    assert [(r.step, r.budget, r.ranks, r.final) for r in rows] == [
        (0, 8.0, {"a": 4, "b": 4}, False), (10, 5.0, {"a": 3, "b": 2}, True)]


def test_timestamps_read_back_timezone_aware(engine):
    job_id = new_job()
    with session_scope() as session:
        assert session.get(Job, job_id).created_at.utcoffset().total_seconds() == 0
