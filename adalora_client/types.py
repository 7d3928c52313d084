"""The API's answers as typed objects. Fields the server adds later are kept (extra="allow"), so an older
SDK keeps working against a newer server."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

FINISHED = ("succeeded", "failed", "cancelled")


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class FileColumn(Record):
    name: str
    type: str | None
    nulls: int
    distinct: int | None = None
    values: list[str] | None = None


class File(Record):
    id: str
    filename: str
    purpose: str
    format: str
    size: int
    sha256: str
    row_count: int
    columns: list[FileColumn]
    preview: list[dict[str, Any]]
    created_at: datetime


class Metric(Record):
    step: int
    values: dict[str, float]


class Job(Record):
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
    current_budget: float | None
    budget_unit: str | None
    budget_target: float | None
    adapter_params: int | None
    learning_rate: float | None = None  # the spec's, or what learning_rate "auto" chose
    lr_probe: dict[str, Any] | None = None
    trained_tokens: int | None = None  # non-padding input tokens trained so far (None from an older server)
    error: str | None
    attempts: int
    eta_seconds: float | None
    spec: dict[str, Any]
    latest_metrics: Metric | None = None  # only on a single job's read

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class Card(Record):
    name: str
    memory_bytes: int
    bf16: bool


class MemoryEstimate(Record):
    """A training step's estimated peak GPU memory, by part, and whether it fits the card asked."""

    dtype: str
    dtype_from: str
    batch_size: int
    seq_len: int
    notes: list[str]
    quantization: str
    gradient_checkpointing: bool
    weights_bytes: int
    trainable_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    allocator_bytes: int
    activations_bytes: int
    backward_bytes: int
    peak_bytes: int
    peak_checkpointing_off_bytes: int
    peak_checkpointing_on_bytes: int | None
    card: Card | None
    fits: bool | None
    advice: list[str]


class DryRun(Record):
    """The plan for a spec: parameter counts, steps, the budget schedule and the memory estimate; nothing was
    queued."""

    model: str
    adapted_modules: int
    adapter_params_init: int
    adapter_params_final: int
    trainable_params_init: int
    trainable_params_final: int
    head_params: int
    target_r: float
    budget_unit: str
    budget_init: float
    budget_final: float
    total_steps: int
    tinit: int
    tfinal: int
    schedule: list[tuple[int, float]]
    scale: float | None = None
    warnings: list[str] = []
    memory: MemoryEstimate | None = None
    memory_problem: str | None = None


class Event(Record):
    id: int
    ts: datetime
    level: str
    message: str


class RankSnapshot(Record):
    step: int
    budget: float
    ranks: dict[str, int]
    adapter_params: int | None
    final: bool


class Ranks(Record):
    data: list[RankSnapshot]
    final_rank_pattern: dict[str, int] | None


class ModulePlace(Record):
    name: str
    stack: str | None
    layer: int | None
    type: str
    kind: str


class RankColumns(Record):
    """Rank snapshots as a matrix: ranks[i][j] is modules[j]'s rank at steps[i]."""

    modules: list[ModulePlace]
    steps: list[int]
    budgets: list[float]
    adapter_params: list[int | None]
    final: list[bool]
    ranks: list[list[int | None]]
    final_rank_pattern: dict[str, int] | None


class Checkpoint(Record):
    step: int
    created_at: datetime


class Model(Record):
    name: str
    family: str
    architectures: list[str]
    parameters: int
    tasks: list[str]


class Download(Record):
    """A verified archive on disk, and where it was unpacked (None with unpack=False)."""

    archive: str | None
    sha256: str
    size: int
    unpacked: str | None
