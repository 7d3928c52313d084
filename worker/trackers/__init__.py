"""Experiment trackers a job spec names (`integrations`): they receive what the database receives.

Each tracker is a small class with four calls (start, metrics, ranks, finish) over its own library, imported
only when a job asks for it. Credentials and addresses come from the worker's environment. A tracker never
fails a job: a missing library or a tracker error becomes a job warning, and that tracker gets nothing more.

    mlflow_tracker.py       MLflow (MLFLOW_TRACKING_URI: a server, or a local folder / file: store)
    wandb_tracker.py        Weights & Biases (WANDB_API_KEY; WANDB_MODE=offline writes local run files)
    tensorboard_tracker.py  TensorBoard event files under TENSORBOARD_DIR/<job id>
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from service.jobspec import Integration, JobSpec

INSTALL_HINT = "pip install 'adalora-service[trackers]' on the worker"
# Without it MLflow would write to a database file in the worker's working folder, which nobody reads.
REQUIRED_ENVIRONMENT = {"mlflow": "MLFLOW_TRACKING_URI"}
log = logging.getLogger(__name__)
LIBRARIES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}


class Tracker(Protocol):
    def start(self, plan: dict[str, Any]) -> None: ...
    def metrics(self, step: int, values: dict[str, float]) -> None: ...
    def ranks(self, step: int, budget: float, ranks: dict[str, int], params: int, final: bool) -> None: ...
    def finish(self, status: str) -> None: ...


def open_tracker(integration: Integration, job_id: str, spec: JobSpec) -> Tracker:
    module = importlib.import_module(f"worker.trackers.{integration.type}_tracker")
    return module.open_run(integration, job_id, spec)


class Trackers:
    """The spec's trackers, each called behind a guard: its first error drops it with one warning."""

    def __init__(self, job_id: str, spec: JobSpec, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self.live: dict[str, Tracker] = {}
        for integration in spec.integrations:
            name = integration.type
            try:
                importlib.import_module(LIBRARIES[name])
            except ImportError:
                warn(f"integrations: {name} is not installed on this worker, so it receives nothing ({INSTALL_HINT})")
                continue
            if (missing := REQUIRED_ENVIRONMENT.get(name)) and not os.environ.get(missing):
                warn(f"integrations: {name} is not configured on this worker ({missing} is not set), so it receives "
                     "nothing; the operator sets it in the worker's environment")
                continue

            def start(name: str = name, integration: Integration = integration) -> None:
                self.live[name] = open_tracker(integration, job_id, spec)

            self._guard(name, start)

    def _guard(self, name: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as exc:  # a tracker's outage or bug: the training goes on without it
            self.live.pop(name, None)
            # The details stay in the worker's log: they may name the tracking server, its credentials or paths.
            log.warning("integrations: %s failed", name, exc_info=True)
            self.warn(f"integrations: {name} failed ({type(exc).__name__}); it receives nothing more from this "
                      "job (the worker's log has the details)")

    def each(self, call: Callable[[Tracker], object]) -> None:
        for name, tracker in list(self.live.items()):
            self._guard(name, partial(call, tracker))

    def around(self, callbacks):
        """The training loop's callbacks: `callbacks` (the database reporter) first, then every tracker."""
        return TrackedCallbacks(callbacks, self) if self.live else callbacks

    def finish(self, status: str) -> None:
        self.each(lambda t: t.finish(status))
        self.live.clear()


class TrackedCallbacks:
    """adalora_core.TrainCallbacks that forward the run's plan, metrics and allocations to the trackers; the
    rest (events, checkpoints, stop requests) is the reporter's alone."""

    def __init__(self, reporter, trackers: Trackers) -> None:
        self.reporter, self.trackers = reporter, trackers

    def __getattr__(self, name: str):
        return getattr(self.reporter, name)

    def on_start(self, total_steps: int, plan: dict) -> None:
        self.reporter.on_start(total_steps, plan)
        self.trackers.each(lambda t: t.start({**plan, "total_steps": total_steps}))

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.reporter.on_metrics(step, metrics)
        self.trackers.each(lambda t: t.metrics(step, metrics))

    def on_allocation(self, step: int, budget: int, ranks: dict[str, int], final: bool, params: int) -> None:
        self.reporter.on_allocation(step, budget, ranks, final, params)
        self.trackers.each(lambda t: t.ranks(step, float(budget), ranks, params, final))


def flat_spec(spec: JobSpec) -> dict[str, str]:
    """The spec as `section.field` strings: the run's parameters in a tracker's table."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif value is not None:
            flat[prefix] = str(value)[:500]

    walk("", spec.model_dump(mode="json", exclude={"integrations"}))
    return flat


def run_name(integration: Integration, job_id: str, spec: JobSpec) -> str:
    return integration.run_name or spec.name or job_id
