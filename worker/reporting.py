"""How a run reports back: buffered progress written in batches, and a heartbeat thread.

The hot path (one call per optimizer step) only appends to buffers; the database sees one transaction per
flush, with idempotent upserts keyed by (job, step).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from service import artifacts
from service.db import get_sessionmaker, session_scope
from service.lifecycle import beat
from service.models import Job, utcnow
from service.periodic import Periodic
from service.progress import add_events, record_progress, upsert_checkpoints, upsert_metrics, upsert_rank_snapshots

log = logging.getLogger(__name__)

# Set when this worker process is told to shut down (SIGTERM: a deploy); the run checkpoints and hands the job
# back to the queue at the next step boundary (worker/celery_app.py sets it).
SHUTDOWN = threading.Event()


def heartbeat(job_id: str, interval: float) -> Periodic:
    """Stamps the job row every `interval` seconds from a thread, so a long model load or evaluation never
    looks like a dead worker. Use as a context manager around the run."""
    def beat_once() -> None:
        with session_scope() as session:
            beat(session, job_id)
    return Periodic(f"heartbeat-{job_id}", interval, beat_once)


@dataclass
class ProgressReporter:
    """adalora_core.TrainCallbacks (duck-typed, so this module imports no torch) that buffer what the loop
    reports and write it in one transaction every `flush_steps` steps or `flush_seconds` seconds;
    should_stop re-reads the job status at most every `poll_seconds`."""

    job_id: str
    flush_steps: int
    flush_seconds: float
    poll_seconds: float
    step: int = 0
    total_steps: int | None = None
    budget: float | None = None
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    snapshots: dict[int, tuple[float, dict[str, int], bool]] = field(default_factory=dict)
    checkpoints: dict[int, str] = field(default_factory=dict)
    events: list[tuple[datetime, str, str]] = field(default_factory=list)
    last_flush_step: int = 0
    last_flush_time: float = field(default_factory=time.monotonic)
    last_poll_time: float = 0.0
    stop: bool = False          # the job was cancelled
    shutdown: bool = False      # this worker is shutting down: checkpoint, and the job runs again elsewhere

    def start(self, total_steps: int, initial: tuple[int, dict[str, int]]) -> None:
        self.total_steps, self.budget = total_steps, float(initial[0])
        self.snapshots[0] = (float(initial[0]), initial[1], False)
        self.event("info", f"training {total_steps} steps, {len(initial[1])} adapted modules, "
                           f"initial budget {initial[0]}")
        self.flush()

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.step, self.budget = step, metrics.get("budget", self.budget)
        self.metrics[step] = metrics
        self._maybe_flush()

    def on_allocation(self, step: int, budget: int, ranks: dict[str, int], final: bool) -> None:
        self.snapshots[step] = (float(budget), dict(ranks), final)

    def on_event(self, level: str, message: str) -> None:
        self.event(level, message)

    def on_checkpoint(self, step: int, path: str) -> None:
        self.checkpoints[step] = Path(path).resolve().relative_to(artifacts.artifact_root()).as_posix()
        self.flush()  # a takeover can only resume from checkpoints that are on record

    def should_stop(self) -> bool:
        if SHUTDOWN.is_set() and not self.stop:
            self.shutdown = True
            return True
        now = time.monotonic()
        if not self.stop and now - self.last_poll_time >= self.poll_seconds:
            self.last_poll_time = now
            with get_sessionmaker()() as session:  # a read: nothing to commit
                self.stop = session.scalar(select(Job.status).where(Job.id == self.job_id)) == "cancelling"
        return self.stop

    def checkpoint_on_stop(self) -> bool:
        return self.shutdown

    def event(self, level: str, message: str) -> None:
        self.events.append((utcnow(), level, message))

    def _maybe_flush(self) -> None:
        if (self.step - self.last_flush_step >= self.flush_steps
                or time.monotonic() - self.last_flush_time >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Everything buffered, plus the job's progress and heartbeat, in one commit."""
        with session_scope() as session:
            upsert_metrics(session, self.job_id, self.metrics)
            upsert_rank_snapshots(session, self.job_id, self.snapshots)
            upsert_checkpoints(session, self.job_id, self.checkpoints)
            add_events(session, self.job_id, self.events)
            record_progress(session, self.job_id, self.step, self.total_steps, self.budget)
        self.metrics, self.snapshots, self.checkpoints, self.events = {}, {}, {}, []
        self.last_flush_step, self.last_flush_time = self.step, time.monotonic()
