"""MLflow: one run per job in the experiment `project` (default adalora), tagged with the job id so that a job
resumed on another attempt goes on logging into the same run. The tracking server (or a local store) is
MLFLOW_TRACKING_URI in the worker's environment, with its token variables. Metrics go in batches: one request
per BATCH values or FLUSH_SECONDS, not one per step."""

from __future__ import annotations

import os
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from service.jobspec import Integration, JobSpec
from worker.trackers import flat_spec, run_name

JOB_TAG = "adalora.job_id"
BATCH, FLUSH_SECONDS = 500, 10.0
STATUSES = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}  # else: resumes later


def open_run(integration: Integration, job_id: str, spec: JobSpec) -> MlflowTracker:
    # An unreachable server costs seconds, not MLflow's default minutes of retries, while the GPU waits.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    client = MlflowClient()
    name = integration.project or "adalora"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1)
    if earlier:
        run_id = earlier[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(experiment_id, run_name=run_name(integration, job_id, spec),
                                   tags={JOB_TAG: job_id, "adalora.model": spec.model}).info.run_id
        params = [Param(key, value) for key, value in flat_spec(spec).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a request
            client.log_batch(run_id, params=params[i:i + 100])
    return MlflowTracker(client, run_id)


class MlflowTracker:
    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.pending: list[Metric] = []
        self.sent = time.monotonic()

    def start(self, plan: dict) -> None:
        self.client.log_dict(self.run_id, {k: v for k, v in plan.items() if k != "ranks_init"}, "plan.json")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(key, float(value), now, step) for key, value in values.items()]
        if len(self.pending) >= BATCH or time.monotonic() - self.sent >= FLUSH_SECONDS:
            self.flush()

    def ranks(self, step: int, budget: float, ranks: dict[str, int], params: int, final: bool) -> None:
        self.metrics(step, {**{f"ranks/{module}": rank for module, rank in ranks.items()},
                            "ranks/adapter_params": params, "ranks/budget": budget})
        if final:
            self.client.log_dict(self.run_id, {"step": step, "ranks": ranks}, "rank_pattern.json")

    def flush(self) -> None:
        for i in range(0, len(self.pending), 1000):  # and at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending, self.sent = [], time.monotonic()

    def finish(self, status: str) -> None:
        self.flush()
        if status in STATUSES:
            self.client.set_terminated(self.run_id, status=STATUSES[status])
