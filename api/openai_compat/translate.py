"""OpenAI's fine-tuning request → our job spec, and our rows → OpenAI's objects.

What OpenAI has no field for, AdaLoRA's budget, comes in `metadata` (string values, as OpenAI requires):
adalora_init_r, adalora_target_r or adalora_target_params, adalora_budget_unit, adalora_lora_alpha, and the
run-length knobs adalora_max_steps and adalora_max_seq_len. Absent, each takes the job spec's default.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

from api.openai_compat.errors import OpenAIError
from api.openai_compat.schemas import (
    ErrorDetail,
    FileObject,
    FineTuningJob,
    Hyperparameters,
    JobCreateRequest,
    SupervisedHyperparameters,
)
from service.jobspec import Training
from service.tables import File, Job

DEFAULT_LEARNING_RATE = Training.model_fields["learning_rate"].default  # learning_rate_multiplier 1
DEFAULT_BATCH_SIZE = Training.model_fields["batch_size"].default
STATUSES = {"queued": "queued", "running": "running", "cancelling": "running",  # still stopping: not final yet
            "succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}
METADATA_FIELDS: dict[str, tuple[str, type]] = {
    "adalora_init_r": ("budget.init_r", int),
    "adalora_target_r": ("budget.target_r", float),
    "adalora_target_params": ("budget.target_params", int),
    "adalora_budget_unit": ("budget.unit", str),
    "adalora_lora_alpha": ("budget.lora_alpha", float),
    "adalora_max_steps": ("training.max_steps", int),
    "adalora_max_seq_len": ("training.max_seq_len", int),
}
# Our field → the request parameter a user wrote, for error messages.
PARAMS = {"dataset.file_id": "training_file", "from_checkpoint": "model",
          "dataset.validation_file_id": "validation_file", "model": "model",
          "name": "suffix", "training.epochs": "method.supervised.hyperparameters.n_epochs",
          "training.batch_size": "method.supervised.hyperparameters.batch_size",
          "training.learning_rate": "method.supervised.hyperparameters.learning_rate_multiplier",
          "training.seed": "seed", **{field: f"metadata.{key}" for key, (field, _) in METADATA_FIELDS.items()}}


def param_for(field: str) -> str:
    """The OpenAI-side name of one of our spec fields (`budget.target_r` → `metadata.adalora_target_r`)."""
    return next((param for ours, param in PARAMS.items() if field == ours or field.startswith(ours + ".")), field)


def unix(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp())


def dataset_columns(file: File) -> dict[str, str]:
    """The columns of OpenAI's training formats: chat ({"messages": [...]}), prompt/completion, or plain text."""
    names = {column["name"] for column in file.columns}
    if "messages" in names:
        return {"messages_column": "messages"}
    if {"prompt", "completion"} <= names:
        return {"prompt_column": "prompt", "completion_column": "completion"}
    if "text" in names:
        return {"text_column": "text"}
    raise OpenAIError(400, f"{file.id} has columns {sorted(names)}: use OpenAI's chat format (one "
                      '{"messages": [{"role": ..., "content": ...}, ...]} per line) or prompt/completion lines '
                      '({"prompt": ..., "completion": ...})', "training_file", "invalid_file_format")


def hyperparameters(request: JobCreateRequest) -> Hyperparameters:
    method = request.method
    if request.integrations:
        raise OpenAIError(400, "integrations are not taken on this route: remove `integrations`, or create the "
                          "job with POST /v1/jobs, whose `integrations` name MLflow, W&B or TensorBoard (metrics "
                          "and rank snapshots are also at /v1/jobs/<id>/metrics and /ranks)", "integrations",
                          "unsupported_parameter")
    if method is not None and method.type != "supervised":
        raise OpenAIError(400, f"method.type {method.type!r} is not supported: this server fine-tunes with "
                          "supervised AdaLoRA only; use method={'type': 'supervised', ...}", "method.type",
                          "unsupported_parameter")
    given = method.supervised.hyperparameters if method and method.supervised else None
    if given is not None and request.hyperparameters is not None:
        raise OpenAIError(400, "give hyperparameters once, in method.supervised.hyperparameters (the top-level "
                          "`hyperparameters` is its legacy form)", "hyperparameters")
    chosen = given or request.hyperparameters or Hyperparameters()
    if chosen.beta is not None:
        raise OpenAIError(400, "beta is a DPO hyperparameter; supervised AdaLoRA has none",
                          "method.supervised.hyperparameters.beta", "unsupported_parameter")
    return chosen


def job_spec(request: JobCreateRequest, training_file: File, continue_from: Job | None = None) -> dict[str, Any]:
    """The job spec (unvalidated) for a create request; "auto" and absent values take our defaults.
    `continue_from`: the succeeded job a `model="ft:..."` names; the new job starts from its final state, on
    its base model and with its budget (metadata may still change the target)."""
    chosen = hyperparameters(request)
    training: dict[str, Any] = {"seed": request.seed if request.seed is not None else random.randrange(2**31)}
    if chosen.n_epochs not in (None, "auto"):
        training["epochs"] = chosen.n_epochs
    if chosen.batch_size not in (None, "auto"):
        training["batch_size"] = chosen.batch_size
    if chosen.learning_rate_multiplier == "auto":  # our range test picks the rate (absent: our default rate)
        training["learning_rate"] = "auto"
    elif chosen.learning_rate_multiplier is not None:
        training["learning_rate"] = DEFAULT_LEARNING_RATE * chosen.learning_rate_multiplier
    dataset: dict[str, Any] = {"source": "file", "file_id": request.training_file, **dataset_columns(training_file)}
    if request.validation_file:
        dataset["validation_file_id"] = request.validation_file
    spec: dict[str, Any] = {"name": request.suffix, "model": request.model, "task": "causal_lm",
                            "dataset": dataset, "training": training, "metadata": request.metadata}
    if continue_from is not None:
        earlier = continue_from.spec
        spec.update(model=earlier["model"], from_checkpoint=continue_from.id,
                    budget={k: v for k, v in earlier.get("budget", {}).items()
                            if k in ("init_r", "target_modules", "target_r", "target_params", "unit", "lora_alpha")})
    for key, value in (request.metadata or {}).items():
        if key.startswith("adalora_"):
            _set(spec, key, value)
    return spec


def _set(spec: dict[str, Any], key: str, value: str) -> None:
    if key not in METADATA_FIELDS:
        raise OpenAIError(400, f"unknown AdaLoRA setting {key!r}: use one of {', '.join(METADATA_FIELDS)}",
                          f"metadata.{key}")
    field, kind = METADATA_FIELDS[key]
    try:
        parsed = kind(value)
    except ValueError:
        raise OpenAIError(400, f"metadata.{key} must be {'an integer' if kind is int else 'a number'}, not "
                          f"{value!r}", f"metadata.{key}") from None
    section, name = field.split(".")
    spec.setdefault(section, {})[name] = parsed


def continued_job_id(model: str) -> str | None:
    """The job id at the end of a fine-tuned model's name (`ft:<model>:<suffix>:<job id>`), if it is one."""
    return model.rsplit(":", 1)[-1] if model.startswith("ft:") else None


def fine_tuned_model(job: Job) -> str | None:
    """What a user downloads: the job id is the last part (GET /v1/jobs/<id>/artifacts/adapter or merged)."""
    if job.status != "succeeded":
        return None
    return f"ft:{job.spec['model']}:{job.spec.get('name') or 'adalora'}:{job.id}"


def present_job(job: Job, eta_seconds: float | None = None) -> FineTuningJob:
    spec, training = job.spec, job.spec.get("training", {})
    dataset = spec["dataset"]
    epochs = training.get("epochs")
    n_epochs = int(epochs) if epochs and float(epochs).is_integer() else ("auto" if epochs or
                                                                          training.get("max_steps") else 1)
    learning_rate = training.get("learning_rate", DEFAULT_LEARNING_RATE)
    if learning_rate == "auto" and job.lr_probe:
        learning_rate = job.lr_probe["learning_rate"]
    multiplier = "auto" if learning_rate == "auto" else learning_rate / DEFAULT_LEARNING_RATE
    return FineTuningJob(
        id=job.id, created_at=unix(job.created_at), finished_at=unix(job.finished_at), model=spec["model"],
        status=STATUSES[job.status], fine_tuned_model=fine_tuned_model(job), organization_id=f"org-{job.tenant_id}",
        error=ErrorDetail(code="job_failed", message=job.error or "the job failed") if job.status == "failed" else None,
        hyperparameters=SupervisedHyperparameters(n_epochs=n_epochs,
                                                  batch_size=training.get("batch_size", DEFAULT_BATCH_SIZE),
                                                  learning_rate_multiplier=multiplier),
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": n_epochs, "batch_size": training.get("batch_size", DEFAULT_BATCH_SIZE),
            "learning_rate_multiplier": multiplier}}},
        result_files=[], seed=training.get("seed", 0), trained_tokens=job.trained_tokens,
        training_file=dataset.get("file_id") or f"{dataset['source']}:{dataset.get('path')}",
        validation_file=dataset.get("validation_file_id"),
        estimated_finish=int(datetime.now(timezone.utc).timestamp() + eta_seconds) if eta_seconds is not None else None,
        metadata=spec.get("metadata"), user_provided_suffix=spec.get("name"))


def present_file(file: File) -> FileObject:
    return FileObject(id=file.id, bytes=file.size, created_at=unix(file.created_at), filename=file.filename,
                      purpose=file.purpose)
