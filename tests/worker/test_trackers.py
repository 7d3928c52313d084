"""Experiment trackers named in a job spec receive the metrics, evaluation scores and rank snapshots the
database receives. The real libraries in their local modes: an MLflow file store, W&B offline run files and
TensorBoard event files, each read back."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.settings import get_settings
from service.tables import Job, JobEvent, Metric, RankSnapshot
from tests.conftest import sqlite_only_database_url, tiny_job_spec
from tests.helpers import new_job
from worker.runner import claim_and_run

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("tensorboard")

database_url = sqlite_only_database_url()
STEPS = 24


def mlflow_experiment(name: str, folder: Path) -> None:
    """Created beforehand, as a team's server would have it, so its artifacts land in the test's folder."""
    from mlflow import MlflowClient
    MlflowClient().create_experiment(name, artifact_location=(folder / "mlflow-artifacts").as_uri())


@pytest.fixture
def tracker_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # MLflow's local store
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TENSORBOARD_DIR", str(tmp_path / "tensorboard"))
    get_settings.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    get_settings.cache_clear()


def stored(job_id: str):
    with session_scope() as session:
        metrics = {m.step: m for m in session.scalars(select(Metric).where(Metric.job_id == job_id))}
        snapshots = session.scalars(select(RankSnapshot).where(RankSnapshot.job_id == job_id)
                                    .order_by(RankSnapshot.step)).all()
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        job = session.get(Job, job_id)
        return job, metrics, [(s.step, dict(s.ranks)) for s in snapshots], events


def wandb_history(folder: Path) -> list[dict]:
    """The history rows of an offline W&B run, read from its .wandb file: a LevelDB-style log of protobuf
    records (a 7-byte file header, 32 KiB blocks, 7-byte chunk headers)."""
    from wandb.proto import wandb_internal_pb2

    [path] = folder.glob("wandb/offline-run-*/run-*.wandb")
    data, records, pending, pos = path.read_bytes(), [], b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_every_tracker_gets_the_metrics_evals_and_ranks(engine, tracker_env):
    spec = {**tiny_job_spec(max_steps=STEPS, eval_every=12), "name": "tracked",
            "integrations": [{"type": "mlflow", "project": "sentiment"}, {"type": "wandb", "project": "sentiment"},
                             {"type": "tensorboard"}]}
    mlflow_experiment("sentiment", tracker_env)
    job_id = new_job(spec)
    assert claim_and_run(job_id) == "succeeded"
    job, metrics, snapshots, events = stored(job_id)
    assert not [e for e in events if e.startswith("integrations:")], events
    losses = {step: m.values["loss"] for step, m in metrics.items() if "loss" in m.values}
    evals = {step: {k.removeprefix("eval_"): v for k, v in m.values.items() if k.startswith("eval_")}
             for step, m in metrics.items() if any(k.startswith("eval_") for k in m.values)}
    assert sorted(losses) == list(range(1, STEPS + 1)) and set(evals) == {0, 12, 24}  # 0: before training
    final_step, final_ranks = snapshots[-1]
    some_module = sorted(final_ranks)[0]

    # MLflow: the run in its experiment, each loss once per step, the evaluations, every module's rank.
    from mlflow import MlflowClient
    client = MlflowClient()
    [run] = client.search_runs([client.get_experiment_by_name("sentiment").experiment_id])
    assert (run.info.run_name, run.info.status, run.data.tags["adalora.job_id"]) == ("tracked", "FINISHED", job_id)
    assert run.data.params["training.max_steps"] == str(STEPS)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses) and len(history) == STEPS
    eval_name = "accuracy"
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"eval_{eval_name}")} == \
        pytest.approx({step: scores[eval_name] for step, scores in evals.items()})
    ranks = client.get_metric_history(run.info.run_id, f"ranks/{some_module}")
    assert {m.step: int(m.value) for m in ranks} == {s: r[some_module] for s, r in snapshots if s > 0}
    pattern = client.download_artifacts(run.info.run_id, "rank_pattern.json", str(tracker_env))
    assert json.loads(Path(pattern).read_text())["ranks"] == final_ranks

    # W&B offline: the same history, step by step.
    rows = wandb_history(tracker_env)
    wandb_losses = {row["_step"]: row["loss"] for row in rows if "loss" in row}
    assert wandb_losses == pytest.approx(losses)
    assert {row["_step"]: row[f"ranks/{some_module}"] for row in rows if f"ranks/{some_module}" in row}[final_step] \
        == final_ranks[some_module]

    # TensorBoard: event files under TENSORBOARD_DIR/<job id>.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events_read = EventAccumulator(str(tracker_env / "tensorboard" / job_id))
    events_read.Reload()
    assert {e.step: e.value for e in events_read.Scalars("loss")} == pytest.approx(losses)
    assert {e.step for e in events_read.Scalars(f"eval_{eval_name}")} == {0, 12, 24}
    assert events_read.Scalars(f"ranks/{some_module}")[-1].value == final_ranks[some_module]


def test_a_tracker_that_fails_is_a_warning_not_a_failed_job(engine, tracker_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    job_id = new_job({**tiny_job_spec(max_steps=12), "integrations": [{"type": "mlflow"}, {"type": "tensorboard"}]})
    assert claim_and_run(job_id) == "succeeded"
    job, metrics, _, events = stored(job_id)
    assert len(metrics) == 13  # the evaluation before training, then 12 steps
    [warning] = [e for e in events if e.startswith("integrations:")]
    assert warning.startswith("integrations: mlflow failed (") and "receives nothing more from this job" in warning
    assert "127.0.0.1" not in warning  # the tracking server's address stays in the worker's log
    assert (tracker_env / "tensorboard" / job_id).is_dir()  # the other tracker went on


def test_a_tracker_missing_or_unconfigured_on_the_worker_says_so(engine, tracker_env, monkeypatch):
    from worker import trackers
    monkeypatch.setitem(trackers.LIBRARIES, "wandb", "wandb_not_installed_here")  # a real failed import
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    job_id = new_job({**tiny_job_spec(max_steps=12), "integrations": [{"type": "wandb"}, {"type": "mlflow"}]})
    assert claim_and_run(job_id) == "succeeded"
    _, _, _, events = stored(job_id)
    assert ("integrations: wandb is not installed on this worker, so it receives nothing (pip install "
            "'adalora-service[trackers]' on the worker)") in events
    assert ("integrations: mlflow is not configured on this worker (MLFLOW_TRACKING_URI is not set), so it "
            "receives nothing; the operator sets it in the worker's environment") in events
