"""How a run reports back: progress buffered on the training thread and written in batches from a thread.

The hot path (one call per optimizer step) only appends to buffers; a writer thread sends them in one
transaction per flush, with idempotent upserts keyed by (job, step), and reads the job's status for a cancel.
When the database goes away the run trains on: the buffers are kept, every write is retried with capped
exponential backoff, and everything is written when the database is back (worker/db_link.py). Only an
outage longer than DATABASE_OUTAGE_LIMIT_SECONDS ends the run. Checkpoints go into the store from a thread of
their own (worker/checkpoint_upload.py) and are put on record once stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.progress import (
    BudgetState,
    Snapshot,
    add_events,
    record_progress,
    upsert_checkpoints,
    upsert_metrics,
    upsert_rank_snapshots,
)
from service.tables import RUNNING_STATUSES, Job, utcnow
from worker.checkpoint_upload import CheckpointUploader
from worker.db_link import DatabaseLink, run_link

# Set when this worker process is told to shut down (SIGTERM: a deploy); the run checkpoints and hands the job
# back to the queue at the next step boundary (worker/celery_app.py sets it).
SHUTDOWN = threading.Event()


@dataclass
class Batch:
    """What one flush writes: the buffers taken at once, and the progress they bring the job row to."""

    metrics: dict[int, dict[str, float]]
    snapshots: dict[int, Snapshot]
    checkpoints: dict[int, str]
    events: list[tuple[datetime, str, str]]
    step: int
    total_steps: int | None
    budget: BudgetState
    lr_probe: dict | None = None
    trained_tokens: int | None = None

    def write(self, session: Session, job_id: str) -> None:
        upsert_metrics(session, job_id, self.metrics)
        upsert_rank_snapshots(session, job_id, self.snapshots)
        upsert_checkpoints(session, job_id, self.checkpoints)
        add_events(session, job_id, self.events)
        record_progress(session, job_id, self.step, self.total_steps, self.budget, self.lr_probe, self.trained_tokens)


@dataclass
class ProgressReporter:
    """adalora_core.TrainCallbacks (duck-typed, so this module imports no torch) that buffer what the loop
    reports. Inside `with reporter:` a writer thread writes the buffers in one transaction every `flush_steps`
    steps or `flush_seconds` seconds, and re-reads the job status every `poll_seconds` for should_stop; the
    training thread never waits for the database, nor for the store (on_checkpoint hands the file to an upload
    thread). `flush()` writes everything buffered now, waiting for it."""

    job_id: str
    flush_steps: int
    flush_seconds: float
    poll_seconds: float
    attempt: int | None = None  # the job's attempts count after this worker's claim: a change means a takeover
    link: DatabaseLink | None = None
    step: int = 0
    total_steps: int | None = None
    budget: BudgetState = field(default_factory=BudgetState)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    checkpoints: dict[int, str] = field(default_factory=dict)
    events: list[tuple[datetime, str, str]] = field(default_factory=list)
    last_flush_step: int = 0
    last_flush_time: float = field(default_factory=time.monotonic)
    last_poll_time: float = 0.0
    lr_probe: dict | None = None  # learning_rate "auto": the plan's range test
    trained_tokens: int | None = None  # the loop's `tokens` metric: non-padding input tokens trained so far
    start_scores: dict[str, float] = field(default_factory=dict)  # the evaluation at step 0, before any update
    stop: bool = False          # the job was cancelled
    shutdown: bool = False      # this worker is shutting down: checkpoint, and the job runs again elsewhere
    lost: bool = False          # the job is no longer this run's (requeued or failed while the database was away)
    failure: BaseException | None = None  # what stopped the writer thread, raised on the training thread
    event_steps: int = 100
    event_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic  # for the timed progress events
    last_event_step: int = 0
    last_event_time: float | None = None  # set at on_start

    def __post_init__(self) -> None:
        self.link = self.link or run_link(self.job_id)
        self._buffer_lock = threading.Lock()   # the buffers, between the training and the writer thread
        self._write_lock = threading.Lock()    # one write at a time, so the job row's step never goes back
        self._wake, self._closed = threading.Event(), threading.Event()
        self._flush_wanted = False
        self._outage_step: int | None = None  # the step the run was at when the current outage began
        self._thread: threading.Thread | None = None
        self.uploads = CheckpointUploader(self.job_id, self._checkpoint_stored,
                                          warn=lambda message: self.event("warning", message))

    # -- the writer thread ----------------------------------------------------------------------------

    def __enter__(self) -> ProgressReporter:
        self._thread = threading.Thread(target=self._write_loop, name=f"progress-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self.uploads.join()  # the run's last checkpoint goes on record with the rest
        self._closed.set()
        self._wake.set()
        self._thread.join()
        if exc_type is None:
            self._raise_failure()

    def _write_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self._sync()
            except Exception as e:  # DatabaseUnavailable, or a write the database rejected
                self.failure = e
                return

    def _sync(self) -> None:
        """One pass: the buffers if a flush is due, and the job status if a poll is due; one transaction."""
        if not self.link.due():
            self.link.check_limit()
            return
        now = time.monotonic()
        write = self._flush_wanted or (now - self.last_flush_time >= self.flush_seconds and self._pending())
        poll = now - self.last_poll_time >= self.poll_seconds
        if not (write or poll):
            return
        with self._write_lock:
            batch = self._take() if write else None

            def work(session: Session):
                if batch is not None:
                    batch.write(session, self.job_id)
                return self._job_state(session) if poll else None

            done, row = self.link.try_once(work, "writing progress", commit=batch is not None)
            if not done:
                self._outage_step = self.step if self._outage_step is None else self._outage_step
                if batch is not None:
                    self._put_back(batch)
                return
        self._after_outage()
        if poll:
            self.last_poll_time = now
            self._read_status(row)

    def _job_state(self, session: Session):
        """(status, attempts) of the job row, or None when it is gone: what _read_status judges."""
        return session.execute(select(Job.status, Job.attempts).where(Job.id == self.job_id)).one_or_none()

    def _read_status(self, row) -> None:
        status, attempts = row or (None, None)
        if status not in RUNNING_STATUSES or (self.attempt is not None and attempts != self.attempt):
            self.lost = self.stop = True  # e.g. requeued by a reconciler that saw no heartbeat during an outage
        elif status == "cancelling":
            self.stop = True

    def _after_outage(self) -> None:
        """Once the database is back, an event on the job says how long it was away and what went on."""
        if self._outage_step is None or not self.link.outages:
            return
        lasted, since = self.link.outages[-1], self._outage_step
        self._outage_step = None
        self.event("warning", f"the database was unreachable for {lasted:.0f} s; training went on from step "
                              f"{since} to step {self.step}, and its progress was written when it came back")

    # -- buffers ---------------------------------------------------------------------------------------

    def _pending(self) -> bool:
        return bool(self.metrics or self.snapshots or self.checkpoints or self.events
                    or self.step != self.last_flush_step)

    def _take(self) -> Batch:
        with self._buffer_lock:
            batch = Batch(self.metrics, self.snapshots, self.checkpoints, self.events, self.step,
                          self.total_steps, self.budget, self.lr_probe, self.trained_tokens)
            self.metrics, self.snapshots, self.checkpoints, self.events = {}, {}, {}, []
            self._flush_wanted = False
            self.last_flush_step, self.last_flush_time = self.step, time.monotonic()
        return batch

    def _put_back(self, batch: Batch) -> None:
        """A write failed: its rows go back in front of anything buffered since (a newer value wins)."""
        with self._buffer_lock:
            self.metrics = batch.metrics | self.metrics
            self.snapshots = batch.snapshots | self.snapshots
            self.checkpoints = batch.checkpoints | self.checkpoints
            self.events = batch.events + self.events
            self._flush_wanted = True  # the next attempt writes them

    def flush(self) -> None:
        """Everything buffered, plus the job's progress and heartbeat, in one commit; waits through an
        outage, and raises DatabaseUnavailable when it outlasts the limit (the buffers are kept)."""
        with self._write_lock:
            batch, outages_before = self._take(), len(self.link.outages)
            try:
                self.link.write(lambda session: batch.write(session, self.job_id), "writing progress")
            except BaseException:
                self._put_back(batch)
                raise
            if len(self.link.outages) > outages_before and self._outage_step is None:
                self._outage_step = batch.step  # this write, not the writer thread, met the outage
        self._after_outage()

    def _request_flush(self) -> None:
        self._flush_wanted = True
        if self._thread is None:
            self.flush()  # no writer thread (a reporter used on its own): write on this thread
        else:
            self._wake.set()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure
        self.uploads.raise_failure()

    def wait_for_uploads(self) -> None:
        """Until every checkpoint handed over so far is stored and in the buffers (or dropped): before the run
        discards its checkpoints. Leaving `with reporter:` waits for them too."""
        self.uploads.wait()

    # -- TrainCallbacks --------------------------------------------------------------------------------

    def on_start(self, total_steps: int, plan: dict) -> None:
        """`plan`: adalora_core's plan of this run (budgets, unit, parameters, initial ranks)."""
        ranks, unit = plan["ranks_init"], plan["budget_unit"]
        self.total_steps = total_steps
        self.lr_probe = plan.get("lr_probe")
        self.budget = BudgetState(float(plan["budget_init"]), plan["adapter_params_init"], unit,
                             float(plan["budget_final"]))
        with self._buffer_lock:
            self.snapshots[0] = Snapshot(float(plan["budget_init"]), ranks, False, plan["adapter_params_start"])
        self.event("info", f"training {total_steps} steps, {len(ranks)} adapted modules, budget "
                           f"{plan['budget_init']:,} -> {plan['budget_final']:,} {unit} "
                           f"({plan['adapter_params_init']:,} adapter parameters at the start)")
        self.last_event_time = self.clock()
        self.flush()

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._raise_failure()
        with self._buffer_lock:
            self.step = step
            if "budget" in metrics:
                kept = metrics.get("adapter_params")  # 0 when every rank was pruned: a count, not a missing value
                self.budget = replace(self.budget, current=metrics["budget"],
                                      adapter_params=None if kept is None else int(kept))
            if "tokens" in metrics:
                self.trained_tokens = int(metrics["tokens"])
            self.metrics[step] = metrics
        self._progress_events(step, metrics)
        if self.step - self.last_flush_step >= self.flush_steps and not self._flush_wanted:
            self._request_flush()

    def _progress_events(self, step: int, metrics: dict[str, float]) -> None:
        now = self.clock()
        started = self.last_event_time if self.last_event_time is not None else now
        of = f"{step}/{self.total_steps}" if self.total_steps else f"{step}"
        if step - self.last_event_step >= self.event_steps or now - started >= self.event_seconds:
            self.last_event_step, self.last_event_time = step, now
            parts = [f"{name} {metrics[name]:.4g}" for name in ("loss",) if name in metrics]
            if "budget" in metrics:
                unit = self.budget.unit or ""
                kept = (f" ({int(metrics['adapter_params']):,} {'' if unit == 'params' else 'parameters '}kept)"
                        if metrics.get("adapter_params") is not None else "")
                parts.append(f"budget {metrics['budget']:,.0f} {unit}".rstrip() + kept)
            self.event("info", f"step {of}: {', '.join(parts) or 'no loss reported'}")
        scores = {name: value for name, value in metrics.items() if name.startswith("eval_")}
        if not scores:
            return
        if step == 0:
            self.start_scores = scores
            self.event("info", f"evaluation before training (step 0): {self._scores(scores)}")
        else:
            self.event("info", f"evaluation at step {of}: {self._scores(scores)}")

    def _scores(self, scores: dict[str, float]) -> str:
        """`loss 0.91 (-0.41 from step 0)`: each score with its change since the start, when known."""
        def one(name: str, value: float) -> str:
            start = self.start_scores.get(name)
            change = (f" ({value - start:+.4g} from step 0)"
                      if start is not None and scores is not self.start_scores else "")
            return f"{name.removeprefix('eval_')} {value:.4g}{change}"
        return ", ".join(one(name, value) for name, value in scores.items())

    def on_allocation(self, step: int, budget: int, ranks: dict[str, int], final: bool, params: int) -> None:
        with self._buffer_lock:
            self.snapshots[step] = Snapshot(float(budget), dict(ranks), final, params)

    def on_event(self, level: str, message: str) -> None:
        self.event(level, message)

    def on_checkpoint(self, step: int, path: str) -> None:
        """Handed to the upload thread: training goes on while the file goes into the store, and it is put on
        record only once stored (_checkpoint_stored), so a takeover on any host resumes only from whole, stored
        files. A store outage costs this checkpoint, not the run: the next one tries again."""
        self.uploads.upload(step, path)

    def _checkpoint_stored(self, step: int, key: str) -> None:
        with self._buffer_lock:
            self.checkpoints[step] = key
        self._request_flush()  # a takeover can only resume from checkpoints that are on record

    def should_stop(self) -> bool:
        self._raise_failure()
        if SHUTDOWN.is_set() and not self.stop:
            self.shutdown = True
            return True
        if self._thread is None:  # no writer thread to poll the status: read it here
            now = time.monotonic()
            if not self.stop and now - self.last_poll_time >= self.poll_seconds:
                self.last_poll_time = now
                done, row = self.link.try_once(self._job_state, "polling the status", commit=False)
                if done:
                    self._read_status(row)
        return self.stop

    def checkpoint_on_stop(self) -> bool:
        return self.shutdown

    def event(self, level: str, message: str) -> None:
        with self._buffer_lock:
            self.events.append((utcnow(), level, message))
