"""Writing what a run reports, in batches. Rows are keyed by (job, step) and upserted, so a rerun or a
resumed run overwrites its earlier rows instead of duplicating them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.tables import RUNNING_STATUSES, Checkpoint, Job, JobEvent, Metric, RankSnapshot, utcnow

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class Snapshot(NamedTuple):
    """One allocation: the budget (in the job's budget unit), each module's rank, and the parameters kept."""

    budget: float
    ranks: dict[str, int]
    final: bool
    adapter_params: int | None = None


@dataclass(frozen=True)
class BudgetState:
    """Where the job's budget stands: now, in its unit ("params" or "ranks"), against the target."""

    current: float | None = None
    adapter_params: int | None = None
    unit: str | None = None
    target: float | None = None


def _upsert(session: Session, model: type, rows: list[dict[str, Any]], update_columns: list[str]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in _INSERTS:
        raise NotImplementedError(f"no upsert for database dialect {dialect!r}: use PostgreSQL or SQLite")
    # mypy joins _INSERTS's values to plain Insert; both dialects' inserts have excluded and on_conflict_do_update.
    stmt = _INSERTS[dialect](model).values(rows)
    excluded = stmt.excluded  # type: ignore[attr-defined]
    stmt = stmt.on_conflict_do_update(index_elements=["job_id", "step"],  # type: ignore[attr-defined]
                                      set_={col: excluded[col] for col in update_columns})
    session.execute(stmt)


def upsert_metrics(session: Session, job_id: str, by_step: Mapping[int, dict[str, float]]) -> None:
    """Non-finite values (an eval perplexity that overflowed) are left out: JSON has no NaN or infinity, and
    Postgres refuses them. A diverged training loss never gets here: the loop stops the run first."""
    rows = [{"job_id": job_id, "step": step, "values": {k: v for k, v in values.items() if math.isfinite(v)}}
            for step, values in sorted(by_step.items())]
    _upsert(session, Metric, rows, ["values"])


def upsert_rank_snapshots(session: Session, job_id: str, by_step: Mapping[int, Snapshot]) -> None:
    rows = [{"job_id": job_id, "step": step, **Snapshot(*snapshot)._asdict()}
            for step, snapshot in sorted(by_step.items())]
    _upsert(session, RankSnapshot, rows, ["budget", "ranks", "final", "adapter_params"])


def upsert_checkpoints(session: Session, job_id: str, by_step: Mapping[int, str]) -> None:
    rows = [{"job_id": job_id, "step": step, "path": path, "created_at": utcnow()}
            for step, path in sorted(by_step.items())]
    _upsert(session, Checkpoint, rows, ["path", "created_at"])


def add_events(session: Session, job_id: str, events: list[tuple[datetime, str, str]]) -> None:
    session.add_all(JobEvent(job_id=job_id, ts=ts, level=level, message=message) for ts, level, message in events)


def record_progress(session: Session, job_id: str, step: int, total_steps: int | None,
                    budget: BudgetState = BudgetState(), lr_probe: dict | None = None,
                    trained_tokens: int | None = None) -> None:
    """The job row's progress fields and heartbeat; only while the run is active."""
    values: dict[str, Any] = {"step": step, "heartbeat_at": utcnow()}
    fields = {"total_steps": total_steps, "current_budget": budget.current, "adapter_params": budget.adapter_params,
              "budget_unit": budget.unit, "budget_target": budget.target, "lr_probe": lr_probe,
              "trained_tokens": trained_tokens}
    values.update({column: value for column, value in fields.items() if value is not None})
    session.execute(update(Job).where(Job.id == job_id, Job.status.in_(RUNNING_STATUSES)).values(**values)
                    .execution_options(synchronize_session=False))
