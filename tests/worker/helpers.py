"""Helpers of the worker tests that run jobs in this process (no Celery): a job spec over a file of the
data folder, a run that must succeed, and what a finished job left behind."""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path

from sqlalchemy import select

from service.db import session_scope
from service.store import get_store
from service.tables import Artifact, Job, JobEvent, Metric
from tests.conftest import tiny_job_spec
from worker.runner import claim_and_run


def write_jsonl(folder: Path, rows: list[dict]) -> str:
    name = f"{uuid.uuid4().hex[:8]}.jsonl"
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return name


def spec(task: str, path: str, model: str = "tiny-bert", dataset: dict | None = None, **training) -> dict:
    job = tiny_job_spec(**training)
    job.update(task=task, model=model)
    job["dataset"] = {"source": "server", "path": path, "validation_split": 0.25, **(dataset or {})}
    return job


def succeeded(job_id: str) -> None:
    status = claim_and_run(job_id)
    assert status == "succeeded", finished(job_id)[0].error


def finished(job_id: str) -> tuple[Job, list[str], dict]:
    """The job row, its event messages in order, and its last metrics."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)
                                 .order_by(JobEvent.id)).all()
        last = session.scalars(select(Metric.values).where(Metric.job_id == job_id)
                               .order_by(Metric.step.desc())).first()
    return job, events, last or {}


def extract(job_id: str, kind: str, into: Path) -> Path:
    with session_scope() as session:
        artifact = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind))
    with tarfile.open(get_store().local_copy(artifact.path)) as tar:
        tar.extractall(into, filter="data")
    return into / kind
