"""What the API accepts and returns, kept apart from the tables in service.tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.gpu_cards import CARDS, Card, find_card
from service.jobspec import JobSpec


class JobCreate(JobSpec):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "minilm-sst2",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "task": "sequence_classification",
        "dataset": {"source": "server", "path": "glue/SST-2/train.tsv", "validation_path": "glue/SST-2/dev.tsv"},
        "budget": {"init_r": 12, "target_r": 8},
        "schedule": {"tinit": 0.1, "tfinal": 0.2, "delta_t": 10},
        "training": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-3},
        "dry_run": True,
    }]})

    dry_run: bool = Field(default=False, description="only report parameter counts, steps, the budget "
                                                     "schedule and the memory estimate; nothing is queued")
    gpu: str | None = Field(default=None, max_length=64,
                            description="with dry_run: the card to check the memory estimate "
                            f"against, by name ({', '.join(c.name for c in CARDS)}) or by size (\"24GB\")")

    @field_validator("gpu")
    @classmethod
    def _known_card(cls, value: str | None) -> str | None:
        if value is not None:
            find_card(value)  # its ValueError names the cards this server knows
        return value

    @model_validator(mode="after")
    def _gpu_for_dry_runs(self) -> JobCreate:
        if self.gpu is not None and not self.dry_run:
            raise ValueError("gpu: only a dry run checks a job against a card; add \"dry_run\": true, or remove gpu")
        return self

    def card(self) -> Card | None:
        return None if self.gpu is None else find_card(self.gpu)


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    status: str
    model: str
    task: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    step: int
    total_steps: int | None
    current_budget: float | None = Field(description="the budget right now, in budget_unit")
    budget_unit: str | None = Field(description="what the budget counts: params (adapter parameters) or ranks")
    budget_target: float | None = Field(description="the budget at the end of budgeting, in budget_unit")
    adapter_params: int | None = Field(description="adapter parameters the kept ranks hold right now")
    learning_rate: float | None = Field(description="the peak learning rate: the spec's, or with \"auto\" the "
                                        "rate the probe chose (null until it has)")
    lr_probe: dict[str, Any] | None = Field(description="learning_rate \"auto\": the range test (the rate at "
                                            "each probe step and the smoothed loss) and the rate it chose")
    trained_tokens: int | None = Field(description="non-padding input tokens trained so far (null until the first "
                                       "step is recorded); the tokens per second are in the metrics (tokens_per_s)")
    error: str | None
    attempts: int
    eta_seconds: float | None = Field(description="estimated time to finish, from the step rate so far")
    spec: dict[str, Any]


class JobDetail(JobPublic):
    latest_metrics: MetricPublic | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="jobs matching the filter, across all pages")


class CardPublic(BaseModel):
    name: str
    memory_bytes: int
    bf16: bool


class MemoryPublic(BaseModel):
    """A training step's estimated peak GPU memory. The activations come from tracing the model's forward pass
    at full batches of max_seq_len tokens (real batches are padded only to their longest row)."""

    dtype: str = Field(description="the base weights' dtype the estimate is for (adapters and heads are fp32)")
    dtype_from: str = Field(description="how that dtype was chosen")
    batch_size: int
    seq_len: int = Field(description="training.max_seq_len, or the model's positions where those are fewer")
    notes: list[str] = Field(description="what the estimate assumed that the spec may want to change")
    quantization: str
    gradient_checkpointing: bool = Field(description="whether the job trains with it (its own choice or the default)")
    weights_bytes: int = Field(description="the frozen base weights")
    trainable_bytes: int = Field(description="adapters and task heads, fp32")
    gradients_bytes: int
    optimizer_bytes: int = Field(description="AdamW's two moments")
    allocator_bytes: int = Field(description="the rank allocator's two sensitivity averages per adapter parameter")
    activations_bytes: int = Field(description="what the forward pass keeps for the backward pass")
    backward_bytes: int = Field(description="the largest gradient the backward pass holds at once")
    peak_bytes: int = Field(description="the sum: tensor memory at the peak of a step")
    peak_checkpointing_off_bytes: int
    peak_checkpointing_on_bytes: int | None = Field(description="None: the model does not support checkpointing")
    card: CardPublic | None = Field(description="the card asked in `gpu`")
    fits: bool | None = Field(description="whether the peak fits the card, leaving 10 % for allocator "
                              "fragmentation and 0.5 GiB for the CUDA context; None without a card")
    advice: list[str] = Field(description="when it does not fit: each knob, and the peak it gives")


class DryRunPublic(BaseModel):
    """The plan for a spec, computed on the model's architecture without reading weights."""

    dry_run: bool = True
    model: str
    adapted_modules: int
    trainable_params_init: int = Field(description="adapter and task-head parameters at the initial budget")
    trainable_params_final: int = Field(description="... and once the budget reached its target")
    adapter_params_init: int
    adapter_params_final: int = Field(description="with a params budget, the most the run keeps (it ends within "
                                      "one rank of it); with a ranks budget, what target_r everywhere costs")
    head_params: int
    target_r: float = Field(description="average final rank per module")
    budget_unit: str = Field(description="what the budget counts: params (adapter parameters) or ranks")
    budget_init: float = Field(description="the budget at the start, in budget_unit")
    budget_final: float = Field(description="the budget at the end of budgeting, in budget_unit")
    total_steps: int
    total_steps_from: str = Field(description="how total_steps was found: max_steps, or the counted examples")
    tinit: int
    tfinal: int
    schedule: list[tuple[int, float]] = Field(description="[step, budget] points where the budget changes")
    scale: float = Field(description="what dW = B (A ⊙ E) is multiplied by: budget.lora_alpha / sqrt(init_r) "
                         "(scaling rank_stabilized) or / init_r (standard)")
    warnings: list[str] = Field(default_factory=list, description="settings that are valid but likely a mistake, "
                                "e.g. a scale far from the defaults' (too slow to learn, or unstable)")
    memory: MemoryPublic | None = Field(description="the estimated peak GPU memory; None when the model could "
                                        "not be traced (memory_problem says why)")
    memory_problem: str | None = None


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ts: datetime
    level: str
    message: str


class EventsPublic(BaseModel):
    data: list[EventPublic]
    has_more: bool = Field(description="more events exist after the last one; pass its id as after_id")


class MetricPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    values: dict[str, float] = Field(description="loss, lr, budget, orth_loss, grad_norm, tokens (trained so far), "
                                     "tokens_per_s, eval_* ...")


class MetricsPublic(BaseModel):
    data: list[MetricPublic]
    has_more: bool = Field(description="more rows exist after the last step; pass it as after_step")


class MetricColumnsPublic(BaseModel):
    """The same rows as /metrics, a list per metric (for charts): columns[name][i] is at steps[i]."""

    steps: list[int]
    columns: dict[str, list[float | None]] = Field(description="null where a step did not report that metric "
                                                              "(eval_* only at evaluations)")
    has_more: bool = Field(description="more rows exist after the last step; pass it as after_step")


class ModulePlacePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    stack: str | None = Field(description="encoder or decoder, when the module's name says")
    layer: int | None
    type: str = Field(description="query, key, value, qkv, output (attention); ffn_in, ffn_out; other")
    kind: str = Field(description="attention, ffn or other")


class RankColumnsPublic(BaseModel):
    """The rank snapshots as a matrix (for a heatmap): ranks[i][j] is module j's rank at steps[i]."""

    modules: list[ModulePlacePublic] = Field(description="ordered by stack, layer, then type")
    steps: list[int]
    budgets: list[float]
    adapter_params: list[int | None]
    final: list[bool]
    ranks: list[list[int | None]] = Field(description="one row per snapshot, in the order of modules")
    final_rank_pattern: dict[str, int] | None


class RankSnapshotPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    budget: float
    ranks: dict[str, int] = Field(description="rank kept by each adapted module")
    adapter_params: int | None = Field(description="adapter parameters the kept ranks hold")
    final: bool


class RanksPublic(BaseModel):
    data: list[RankSnapshotPublic]
    final_rank_pattern: dict[str, int] | None = Field(
        description="the ranks of the exported adapter; null until the budget is frozen")


class ModelPublic(BaseModel):
    name: str = Field(description="what a job's `model` names: a folder inside the server's MODEL_DIRS")
    family: str = Field(description="the model type in its config.json (bert, llama, t5 ...)")
    architectures: list[str]
    parameters: int = Field(description="parameters in its weights (tensor elements in the safetensors files)")
    tasks: list[str] = Field(description="the task kinds transformers has a class for with this family")


class ModelsPublic(BaseModel):
    data: list[ModelPublic]


class CheckpointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    created_at: datetime


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]


class CancelPublic(BaseModel):
    id: str
    status: str


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class FileColumn(BaseModel):
    name: str
    type: str = Field(description="int, float, str, bool, list, dict (or null when every value is missing)")
    nulls: int = Field(description="rows without a value")
    nans: int = Field(description="rows whose value is NaN")
    infs: int = Field(default=0, description="rows whose value is Infinity or -Infinity")
    distinct: int | None = Field(description="distinct values, when there are at most 100 short ones")
    values: list[str] | None = Field(description="those distinct values (labels, say), as text")


class FilePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    filename: str = Field(description="the uploaded name, reduced to a plain file name")
    purpose: str
    format: str = Field(description="jsonl, json, csv, tsv or parquet")
    size: int = Field(description="bytes")
    sha256: str
    row_count: int
    columns: list[FileColumn]
    preview: list[dict[str, Any]] = Field(description="the first rows; long values are cut")
    created_at: datetime


class FilesPublic(BaseModel):
    data: list[FilePublic]
    count: int = Field(description="files of this tenant, across all pages")
