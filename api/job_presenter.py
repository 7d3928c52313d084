"""How a job row reads to a client of /v1: its public fields, the learning rate in use and the ETA. The OpenAI
surface (api/openai_compat/translate.py) presents the same row in OpenAI's shape with the same ETA."""

from __future__ import annotations

from api.schemas import JobPublic
from service.tables import Job, utcnow


def eta_seconds(job: Job) -> float | None:
    """Remaining steps at the average step rate since the run started. Steps rather than tokens: the tokens of the
    steps to come are not known before their batches are made, and batch lengths are shuffled across each epoch,
    so the average step so far is what a remaining step takes. The wall time also counts evaluations and
    checkpoints, which the rest of the run pays too (the metrics' tokens_per_s leaves them out)."""
    if job.status != "running" or not job.started_at or not job.total_steps or job.step <= 0:
        return None
    elapsed = (utcnow() - job.started_at).total_seconds()
    return max(0.0, elapsed / job.step * (job.total_steps - job.step))


def learning_rate(job: Job) -> float | None:
    """The rate the run trains at: the spec's number, or what the "auto" probe chose once it has."""
    given = job.spec.get("training", {}).get("learning_rate")
    if given == "auto":
        return job.lr_probe["learning_rate"] if job.lr_probe else None
    return given


def job_public(job: Job, model: type[JobPublic] = JobPublic, **extra) -> JobPublic:
    return model(
        id=job.id, name=job.spec.get("name"), status=job.status, model=job.spec["model"], task=job.spec["task"],
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at, step=job.step,
        total_steps=job.total_steps, current_budget=job.current_budget, budget_unit=job.budget_unit,
        budget_target=job.budget_target, adapter_params=job.adapter_params, learning_rate=learning_rate(job),
        lr_probe=job.lr_probe, trained_tokens=job.trained_tokens, error=job.error, attempts=job.attempts,
        eta_seconds=eta_seconds(job), spec=job.spec, **extra)

