"""The request and response objects of OpenAI's fine-tuning and files APIs, as far as we serve them."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | int | None = None
    batch_size: Auto | int | None = None
    learning_rate_multiplier: Auto | float | None = None
    # Accepted for the `dpo`/`reinforcement` shapes only to refuse them with a clear message.
    beta: Auto | float | None = None


class MethodDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodDetail | None = None
    dpo: MethodDetail | None = None
    reinforcement: MethodDetail | None = None


class JobCreateRequest(BaseModel):
    """POST /fine_tuning/jobs as the `openai` client sends it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a model of this server (GET /v1/models) or a hub id")
    training_file: str = Field(description="an uploaded file: chat JSONL ({\"messages\": [...]}) or "
                                           "prompt/completion JSONL")
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = Field(default=None, description="the legacy form of "
                                                    "method.supervised.hyperparameters")
    method: Method | None = None
    suffix: str | None = Field(default=None, max_length=64, description="added to fine_tuned_model")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = Field(default=None, description="your own pairs, and AdaLoRA's budget: "
                                            "adalora_init_r, adalora_target_r, adalora_target_params ...")
    integrations: list[dict[str, Any]] | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class SupervisedHyperparameters(BaseModel):
    n_epochs: Auto | int
    batch_size: int
    learning_rate_multiplier: Auto | float  # "auto" until the range test has chosen


class FineTuningJob(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    created_at: int
    error: ErrorDetail | None
    fine_tuned_model: str | None = Field(description="ft:<model>:<suffix>:<job id> once succeeded; download it "
                                         "with GET /v1/jobs/<job id>/artifacts/adapter")
    finished_at: int | None
    hyperparameters: SupervisedHyperparameters
    method: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = Field(description="non-padding input tokens trained so far (it grows while the job "
                                       "runs); null until the first step is recorded")
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None
    user_provided_suffix: str | None = None


class FineTuningJobEvent(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class CheckpointMetrics(BaseModel):
    step: float
    train_loss: float | None = None
    valid_loss: float | None = None
    full_valid_loss: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class FileObject(BaseModel):
    object: Literal["file"] = "file"
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileDeleted(BaseModel):
    object: Literal["file"] = "file"
    id: str
    deleted: bool


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
