"""What a user submits to start a training job, validated before anything is queued.

Errors name the field and the fix; unknown fields are rejected so a typo is a 422, not a silent default.
Importable without torch: the API validates specs without loading any model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

# The core's settings module is torch-free: its defaults and rules are the spec's, written once.
from adalora_core.config import COMPILE_AUTO_MIN_STEPS, AdaLoraConfig, TrainArgs, default_target_r, steps_of
from service.dataset import DataError
from service.dataset.formats import SUFFIX_FORMATS
from service.model_problems import WEIGHT_FILES, has_weights, some_model_folders
from service.settings import get_settings

Task = Literal["sequence_classification", "causal_lm", "seq2seq"]
DataFormat = Literal["csv", "tsv", "jsonl", "json"]
# The suffixes a file in DATA_DIRS may have: those of the one map (service.dataset.formats) whose format a spec
# may name (an upload may also be Parquet).
SERVER_SUFFIX_FORMATS: dict[str, DataFormat] = {suffix: cast(DataFormat, fmt)  # the filter keeps DataFormats
                                                for suffix, fmt in SUFFIX_FORMATS.items()
                                                if fmt in get_args(DataFormat)}
# A Hugging Face hub id: `name` or `org/name`.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class Strict(BaseModel):
    # NaN and Infinity (which JSON parsers accept) are no setting: refused as "should be a finite number".
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _reject_parent_steps(path: str, field: str) -> None:
    """No `..` anywhere; where the path may point is then checked against the allow-list by the caller."""
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"{field} must not contain '..': name a path inside an allowed folder")


def _reject_local_path(value: str, field: str, fix: str) -> None:
    """The hub loaders read a local folder of the same name first; never let a hub id reach server files."""
    if Path(value).exists():
        raise ValueError(f"{field}: {value!r} names a folder on this server, not a hub id; {fix}")


def _leads_outside(entry: Path, root: Path) -> bool:
    """Whether `entry` exists (as a link at least) but resolves outside `root`."""
    return os.path.lexists(entry) and not entry.resolve().is_relative_to(root)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _require_model_folder(value: str, folder: Path, roots: list[Path]) -> None:
    """A folder a job may name holds a saved model (its config.json) inside MODEL_DIRS, not a root itself."""
    if folder in roots:
        raise ValueError(f"model: {value!r} names MODEL_DIRS itself, not a model folder inside it; "
                         f"{some_model_folders()}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"model: the folder {value!r} in MODEL_DIRS has no config.json, so it holds no saved "
                         f"model; name a model folder ({some_model_folders()}) or save one there with save_pretrained")
    _reject_pickle_only_weights(folder)


def _reject_pickle_only_weights(folder: Path) -> None:
    """Weights load only from safetensors (adalora_core.build_model): say so at submission rather than fail
    in the worker with a loader's message. Another *.safetensors file beside a pickle is no weights file."""
    if not has_weights(folder) and (pickles := sorted(
            p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)):
        raise ValueError(f"model: {folder.name!r} has only pickle weights ({', '.join(pickles)}), which can run "
                         f"code when loaded; this server loads safetensors only ({' or '.join(WEIGHT_FILES)}): "
                         "convert them, e.g. model.save_pretrained(folder, safe_serialization=True)")


def find_under(path: str, roots: list[Path], *, want_dir: bool) -> Path | None:
    """The existing file or folder `path` names inside one of `roots`, or None. Never leaves the roots."""
    for root in roots:
        candidate = (Path(path) if Path(path).is_absolute() else root / path).resolve()
        if not candidate.is_relative_to(root):
            continue
        if candidate.is_dir() if want_dir else candidate.is_file():
            return candidate
    return None


class DatasetCommon(Strict):
    """Which columns hold the inputs (left empty, the worker picks them by common names), and how much of
    the training rows to hold out for evaluation when no validation set is named."""

    # sequence_classification
    text_column: str | None = None       # sentence / text ... (also causal_lm plain text)
    text_pair_column: str | None = None  # second sentence of a pair task (NLI, paraphrase)
    label_column: str | None = None      # label / score ...
    label_type: Literal["auto", "classes", "regression"] = Field(
        default="auto", description="auto: labels with fractional numbers (STS-B scores) train a regression "
                                    "head, integers and strings are classes")
    # causal_lm: text_column (packed into blocks), prompt + completion, or chat messages
    prompt_column: str | None = None
    completion_column: str | None = None  # the loss covers these tokens only
    messages_column: str | None = None    # a list of {role, content}; the loss covers assistant turns only
    # seq2seq
    source_column: str | None = None
    target_column: str | None = None
    validation_split: float | None = Field(default=0.1, ge=0, lt=1,
                                           description="fraction held out for evaluation when no validation "
                                                       "set is named; 0 for none")


class HubDataset(DatasetCommon):
    source: Literal["hub"]
    path: str = Field(description="dataset id on the Hugging Face hub, e.g. `nyu-mll/glue`")
    name: str | None = Field(default=None, description="configuration, e.g. `sst2`")
    split: str = "train"
    revision: str | None = None
    validation_name: str | None = Field(default=None, description="a split to evaluate on, e.g. `validation`")

    @field_validator("path")
    @classmethod
    def _hub_dataset_id(cls, value: str) -> str:
        # `org/name` only: a bare name may be a builder (`csv`, `json`) that reads local files.
        if not HUB_ID.match(value) or "/" not in value:
            raise ValueError(f"dataset.path: {value!r} is not a hub dataset id like `org/name`; "
                             "for a file on this server use source: server")
        _reject_local_path(value, "dataset.path", "use source: server with a path inside DATA_DIRS")
        return value


class ServerDataset(DatasetCommon):
    source: Literal["server"]
    path: str = Field(description="a file inside one of the server's DATA_DIRS, relative to that folder")
    format: DataFormat | None = Field(default=None, description="inferred from the file suffix when omitted")
    column_names: list[str] | None = Field(default=None, min_length=1,
                                           description="csv/tsv without a header row: the name of each column")
    validation_path: str | None = Field(default=None, description="a second file to evaluate on")

    @field_validator("path", "validation_path")
    @classmethod
    def _inside_data_dirs(cls, value: str | None, info) -> str | None:
        if value is None:
            return value
        field = f"dataset.{info.field_name}"
        _reject_parent_steps(value, field)
        roots = get_settings().resolved_data_dirs()
        if not roots:
            raise ValueError(f"{field}: this server has no DATA_DIRS configured; use a hub dataset "
                             "or ask the operator to set DATA_DIRS")
        if find_under(value, roots, want_dir=False) is None:
            raise ValueError(f"{field}: no file {value!r} inside the allowed data folders; "
                             "give a path relative to one of DATA_DIRS")
        return value

    @model_validator(mode="after")
    def _infer_format(self) -> ServerDataset:
        if self.format is None:
            suffix = PurePosixPath(self.path).suffix.lower()
            if suffix not in SERVER_SUFFIX_FORMATS:
                raise ValueError(f"dataset.format: cannot infer it from {suffix or 'no suffix'!r}; "
                                 "set format to csv, tsv, jsonl or json")
            self.format = SERVER_SUFFIX_FORMATS[suffix]
        if self.column_names and self.format not in ("csv", "tsv"):
            raise ValueError("dataset.column_names: only csv and tsv files can lack a header row; "
                             "remove column_names")
        return self

    def resolved_path(self) -> Path:
        return _data_file(self.path, "dataset.path")

    def resolved_validation_path(self) -> Path | None:
        if self.validation_path is None:
            return None
        return _data_file(self.validation_path, "dataset.validation_path")


def _data_file(path: str, field: str) -> Path:
    """The file a validated `path` names, looked up again where the job reads it: it may have gone since the
    spec was checked (or this host's DATA_DIRS lack it), which must not read as "no validation file"."""
    found = find_under(path, get_settings().resolved_data_dirs(), want_dir=False)
    if found is None:
        raise DataError(f"{field}: no file {path!r} inside this server's data folders any more; "
                        "restore the file or submit the job again with another path")
    return found


FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")


class FileDataset(DatasetCommon):
    """An uploaded file (POST /v1/files); the API checks it belongs to the caller and holds the columns."""

    source: Literal["file"]
    file_id: str = Field(description="id of an uploaded file, e.g. `file-3f2a...`")
    validation_file_id: str | None = Field(default=None, description="an uploaded file to evaluate on")

    @field_validator("file_id", "validation_file_id")
    @classmethod
    def _looks_like_file_id(cls, value: str | None, info) -> str | None:
        if value is not None and not FILE_ID.match(value):
            raise ValueError(f"dataset.{info.field_name}: {value!r} is not a file id; upload the data with "
                             "POST /v1/files and use the id it returns")
        return value


DatasetSpec = Annotated[HubDataset | ServerDataset | FileDataset, Field(discriminator="source")]


class Budget(Strict):
    init_r: int = Field(default=AdaLoraConfig.init_r, ge=1, le=256, description="rank every adapted module starts with")
    target_r: float | None = Field(default=None, ge=0, description="average rank per module at the end; with "
                                   "neither target given, two thirds of init_r (8 for the default 12)")
    target_params: int | None = Field(default=None, ge=0, description="or: total adapter parameters at the end")
    unit: Literal["params", "ranks"] = Field(
        default=AdaLoraConfig.budget_unit,
        description="what the budget counts: adapter parameters, met exactly (a rank of a "
        "module costs in + out + 1; target_r then means what that rank everywhere would cost), or ranks "
        "whatever their size (the AdaLoRA paper's)")
    lora_alpha: float = Field(default=AdaLoraConfig.lora_alpha, gt=0, description="with scaling, what dW is "
                              "multiplied by: lora_alpha / sqrt(init_r) (rank_stabilized) or lora_alpha / init_r")
    scaling: Literal["rank_stabilized", "standard"] = Field(
        default=AdaLoraConfig.scaling, description="rank_stabilized (the default; rsLoRA's rule): raising init_r "
        "does not shrink the update; standard: the AdaLoRA paper's and PEFT's lora_alpha / init_r")
    lora_dropout: float = Field(default=AdaLoraConfig.lora_dropout, ge=0, lt=1)
    target_modules: list[str] | None = Field(default=None, description="module-name suffixes; default per model family")
    init: Literal["lora", "svd", "orthogonal", "gaussian"] = Field(
        default=AdaLoraConfig.init,
        description="lora: B = 0, E = 1 (LoRA's start, the default); svd; orthogonal; gaussian "
        "(the AdaLoRA paper's, E = 0)")
    e_lr_multiplier: float = Field(default=AdaLoraConfig.e_lr_multiplier, gt=0,
                                   description="learning-rate multiplier for the singular values")

    @model_validator(mode="after")
    def _exactly_one_target(self) -> Budget:
        if self.target_r is not None and self.target_params is not None:
            raise ValueError("budget: give one of target_r (average final rank, e.g. 8) "
                             "or target_params (total adapter parameters at the end), not both")
        if self.target_r is None and self.target_params is None:
            self.target_r = default_target_r(self.init_r)
        if self.unit == "ranks" and self.target_params is not None:
            raise ValueError("budget: target_params counts parameters; drop unit: ranks, or give target_r")
        if self.target_r is not None and self.target_r > self.init_r:
            raise ValueError(f"budget.target_r ({self.target_r}) must not exceed budget.init_r ({self.init_r}): "
                             "lower target_r or raise init_r")
        return self


class Schedule(Strict):
    """When the budget shrinks, in optimizer steps; a value in (0, 1) is a fraction of the run."""

    tinit: float = Field(default=AdaLoraConfig.tinit, ge=0,
                         description="steps at the initial budget before pruning starts")
    tfinal: float = Field(default=AdaLoraConfig.tfinal, ge=0, description="final steps with the rank pattern frozen")
    delta_t: int = Field(default=AdaLoraConfig.delta_t, ge=1, description="re-allocate ranks every delta_t steps")
    beta1: float = Field(default=AdaLoraConfig.beta1, gt=0, lt=1)
    beta2: float = Field(default=AdaLoraConfig.beta2, gt=0, lt=1)
    orth_reg_weight: float = Field(default=AdaLoraConfig.orth_reg_weight, ge=0)
    orth_target: Literal["orthogonal", "orthonormal"] = Field(
        default=AdaLoraConfig.orth_target,
        description="what the regulariser pulls A's rows and B's columns to: orthogonal to "
        "each other (lengths free), or the paper's orthonormal")

    @field_validator("tinit", "tfinal")
    @classmethod
    def _fraction_or_whole_steps(cls, value: float, info) -> float:
        if value >= 1 and value != int(value):
            raise ValueError(f"schedule.{info.field_name}: {value} is neither a fraction in (0, 1) "
                             "nor a whole number of steps")
        return value

    def steps(self, total_steps: int) -> tuple[int, int]:
        return steps_of(self.tinit, total_steps), steps_of(self.tfinal, total_steps)


# The worker's, not the training loop's.
MEMORY_FIELDS = ("gradient_checkpointing", "base_dtype", "packing", "quantization")
MAX_GRAD_ACCUM = 1024


class Training(Strict):
    epochs: float | None = Field(default=None, gt=0, description="passes over the data (default 1 without max_steps)")
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; instead of epochs")
    batch_size: int = Field(default=TrainArgs.batch_size, ge=1, le=4096)
    grad_accum: int = Field(default=TrainArgs.grad_accum, ge=1, le=MAX_GRAD_ACCUM)
    learning_rate: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = Field(
        default=TrainArgs.learning_rate, description="the peak rate, or \"auto\": a short range test on the "
        "job's own data picks it before training (about 5 % of the steps, at least 16; the job's lr_probe shows it)")

    @field_validator("learning_rate", mode="wrap")
    @classmethod
    def _rate_or_auto(cls, value, handler):
        """One error for either branch of the union, saying both ways to write it."""
        try:
            return handler(value)
        except ValidationError as exc:
            if any(e["type"] == "finite_number" for e in exc.errors()):  # NaN or Infinity: said as for any number
                raise PydanticCustomError("finite_number", "Input should be a finite number") from None
            raise ValueError(f"training.learning_rate: {value!r} is neither a number in (0, 1] (e.g. 1e-3) nor "
                             "\"auto\"") from None
    weight_decay: float = Field(default=TrainArgs.weight_decay, ge=0)
    warmup_ratio: float = Field(default=TrainArgs.warmup_ratio, ge=0, lt=1)
    lr_schedule: Literal["linear", "cosine", "constant"] = TrainArgs.lr_schedule
    max_seq_len: int = Field(default=128, ge=8, le=32768)
    max_grad_norm: float | None = Field(default=TrainArgs.max_grad_norm, gt=0)
    eval_every: int | None = Field(default=None, ge=1, description="evaluate every N steps (always at the end)")
    seed: int = TrainArgs.seed
    packing: bool = Field(default=False, description="causal_lm prompt/completion and chat: join examples into "
                          "rows of max_seq_len tokens (fewer pad tokens, faster); attention and loss never cross "
                          "from one example into the next. Plain text is always packed into blocks")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        default="auto", description="recompute activations in the backward pass: less memory, about a third more "
                                    "compute. auto: on only when the worker's estimate of the step's peak memory "
                                    "does not fit its device without it")
    compile: bool | Literal["auto"] = Field(
        default=TrainArgs.compile, description="torch.compile each decoder layer: faster steps after a compile of "
                                               "a minute or so. auto: on a GPU, for runs of at least "
                                               f"{COMPILE_AUTO_MIN_STEPS} steps, on weights that are not 4-bit")
    quantization: Literal["none", "nf4"] = Field(
        default="none", description="nf4: load the base's linear layers in 4-bit NF4 (bitsandbytes, as QLoRA) "
                                    "under fp32 adapters; base_dtype is then the compute dtype. The merged "
                                    "download folds dW into the full-precision base")
    base_dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="the frozen base model's weights; the adapters stay fp32. auto: bf16 on a "
                                    "GPU that supports it, else fp32")

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _null_is_auto(cls, value: object) -> object:
        return "auto" if value is None else value  # specs stored before "auto" existed said null for the default

    @field_validator("base_dtype")
    @classmethod
    def _no_fp16_yet(cls, value: str) -> str:
        if value == "fp16":
            raise ValueError("training.base_dtype: fp16 training needs loss scaling, which this service does not do "
                             "yet; use bf16 (GPUs from Ampere on) or fp32")
        return value

    @model_validator(mode="after")
    def _epochs_or_max_steps(self) -> Training:
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("training: give epochs or max_steps, not both")
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1.0
        cap = get_settings().max_steps_cap
        if self.max_steps is not None and self.max_steps > cap:
            raise ValueError(f"training.max_steps ({self.max_steps}) exceeds this server's cap of {cap}: "
                             "lower max_steps")
        return self


# Which task kinds read each column-mapping field.
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "text_column": ("sequence_classification", "causal_lm"),
    "text_pair_column": ("sequence_classification",),
    "label_column": ("sequence_classification",),
    "prompt_column": ("causal_lm",),
    "completion_column": ("causal_lm",),
    "messages_column": ("causal_lm",),
    "source_column": ("seq2seq",),
    "target_column": ("seq2seq",),
}


MAX_METADATA_PAIRS = 16
GPU_CLASS = r"^[a-z0-9][a-z0-9-]{0,62}$"  # a worker queue's class name (service.routing)


class Resources(Strict):
    gpus: int = Field(default=1, ge=1, le=8, description="devices to train on, data-parallel (one process per "
                      "device, DDP); batch_size stays the whole batch and must divide by gpus. The worker must "
                      "see that many GPUs; on a CPU-only worker, processes")
    queue: str | None = Field(default=None, pattern=GPU_CLASS, description="the GPU class to run on: one of the "
                              "classes workers are started with (`adalora-svc worker --queues gpu-80g`); default: "
                              "any worker")
TRACKER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$"
# Where a tracker's secrets and addresses come from: the worker's environment, never a spec (a spec is
# stored, shown back and shared; a tracking URI in it would also let a user point a worker at any host).
TRACKER_ENVIRONMENT = {"mlflow": "MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN", "wandb": "WANDB_API_KEY, WANDB_MODE",
                       "tensorboard": "TENSORBOARD_DIR"}


class Integration(Strict):
    """An experiment tracker that receives the job's metrics, evaluation scores and rank snapshots."""

    type: Literal["mlflow", "wandb", "tensorboard"]
    project: str | None = Field(default=None, pattern=TRACKER_NAME, description="mlflow: the experiment; wandb: "
                                "the project (default: adalora). TensorBoard writes to TENSORBOARD_DIR/<job id>")
    run_name: str | None = Field(default=None, pattern=TRACKER_NAME, description="default: the job's name or id")

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, value: object) -> object:
        if isinstance(value, dict):
            extra = sorted(set(value) - {"type", "project", "run_name"})
            if extra:
                kind = value.get("type")
                where = TRACKER_ENVIRONMENT.get(kind, "the tracker's own variables") if isinstance(kind, str) else \
                    "the tracker's own variables"
                raise ValueError(f"integrations: {', '.join(map(str, extra))[:80]}: an integration takes only type, "
                                 f"project and run_name; credentials and server addresses come from the worker's "
                                 f"environment ({where}), never from a job spec")
        return value

    @model_validator(mode="after")
    def _tensorboard_has_no_project(self) -> Integration:
        if self.type == "tensorboard" and self.project is not None:
            raise ValueError("integrations: tensorboard takes no project (its event files go to the worker's "
                             "TENSORBOARD_DIR/<job id>); remove project")
        return self


class JobSpec(Strict):
    name: str | None = Field(default=None, max_length=200, description="a label for listings")
    model: str = Field(description="a hub id (`org/name`) or a folder inside one of the server's MODEL_DIRS")
    task: Task
    dataset: DatasetSpec
    budget: Budget = Field(default_factory=Budget)
    schedule: Schedule = Field(default_factory=Schedule)
    training: Training = Field(default_factory=Training)
    from_checkpoint: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(:[0-9]{1,9})?$",
        description="start from an earlier job of yours: `<job id>` (a succeeded job's final weights) or "
                    "`<job id>:<step>` (one of its checkpoints, e.g. of a cancelled job). The weights, the rank "
                    "pattern and the importance scores carry over; this job runs its own budget schedule. Same "
                    "model, task, budget.init_r and target modules as that job")
    metadata: dict[str, str] | None = Field(default=None, description="up to 16 string pairs of your own (keys up "
                                            "to 64 characters, values up to 512), returned with the job")
    resources: Resources = Field(default_factory=Resources)
    integrations: list[Integration] = Field(
        default_factory=list, max_length=3, description="experiment trackers (mlflow, wandb, tensorboard) that "
        "receive the same metrics, evaluation scores and rank snapshots as this service; one of each at most")

    @field_validator("integrations")
    @classmethod
    def _one_of_each(cls, value: list[Integration]) -> list[Integration]:
        kinds = [i.type for i in value]
        if len(set(kinds)) != len(kinds):
            raise ValueError("integrations: name each tracker once")
        return value

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata: {len(value)} pairs; keep at most {MAX_METADATA_PAIRS}")
        for key, item in value.items():
            if not key or len(key) > 64 or len(item) > 512 or "\x00" in key + item:
                raise ValueError(f"metadata: {key[:70]!r}: keys must be 1-64 characters and values at most 512, "
                                 "without NUL bytes")
        return value

    @field_validator("model")
    @classmethod
    def _hub_id_or_allowed_folder(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"model: empty; name a model folder ({some_model_folders()}) or a hub id (`org/name`)")
        _reject_parent_steps(value, "model")
        roots = get_settings().resolved_model_dirs()
        if (folder := find_under(value, roots, want_dir=True)) is not None:
            _require_model_folder(value, folder, roots)
            return value
        if not Path(value).is_absolute() and any(_leads_outside(root / value, root) for root in roots):
            # A symbolic link inside MODEL_DIRS that leads out of it: never read it, nor take it for a hub id.
            raise ValueError(f"model: {value!r} inside MODEL_DIRS leads outside MODEL_DIRS (a symbolic link); "
                             "name a folder that really lies inside one of MODEL_DIRS")
        if Path(value).is_absolute():
            raise ValueError(f"model: {value!r} is not a folder inside the server's MODEL_DIRS; "
                             "name a hub id or a folder relative to one of MODEL_DIRS")
        if not HUB_ID.match(value):
            raise ValueError(f"model: {value!r} is neither a hub id (`org/name`) nor a folder inside MODEL_DIRS")
        _reject_local_path(value, "model", "name a folder inside MODEL_DIRS")
        return value

    @model_validator(mode="after")
    def _columns_fit_the_task(self) -> JobSpec:
        ds = self.dataset
        for field, tasks in TASK_COLUMNS.items():
            if getattr(ds, field) is not None and self.task not in tasks:
                raise ValueError(f"dataset.{field} does not apply to task {self.task}: remove it "
                                 f"(it is for {' or '.join(tasks)})")
        if self.training.batch_size % self.resources.gpus:
            raise ValueError(f"training.batch_size ({self.training.batch_size}) must divide by resources.gpus "
                             f"({self.resources.gpus}): each device takes an equal share of every batch")
        if self.training.packing and self.task != "causal_lm":
            raise ValueError("training.packing applies to causal_lm only: remove it")
        if ds.label_type != "auto" and self.task != "sequence_classification":
            raise ValueError("dataset.label_type applies to sequence_classification only: remove it")
        if (ds.prompt_column is None) != (ds.completion_column is None):
            raise ValueError("dataset: give prompt_column and completion_column together")
        chosen = [f for f in ("text_column", "prompt_column", "messages_column") if getattr(ds, f)]
        if self.task == "causal_lm" and len(chosen) > 1:
            raise ValueError(f"dataset: {' and '.join(chosen)} are alternatives for causal_lm: keep one")
        return self

    @model_validator(mode="after")
    def _schedule_fits_fixed_run(self) -> JobSpec:
        # With epochs the run length depends on the data; the worker re-checks once it is known.
        total = self.training.max_steps
        if total is not None:
            tinit, tfinal = self.schedule.steps(total)
            if tinit + tfinal >= total:
                raise ValueError(f"schedule: tinit + tfinal ({tinit} + {tfinal} steps) must be below "
                                 f"training.max_steps ({total}): lower tinit or tfinal, or train longer")
        return self

    def checkpoint_source(self) -> tuple[str, int | None] | None:
        """(job id, step or None) of from_checkpoint."""
        if self.from_checkpoint is None:
            return None
        job_id, _, step = self.from_checkpoint.partition(":")
        return job_id, int(step) if step else None

    def model_source(self) -> str:
        """The local folder when the model lives under MODEL_DIRS, otherwise the hub id."""
        folder = find_under(self.model, get_settings().resolved_model_dirs(), want_dir=True)
        return str(folder) if folder is not None else self.model

    def to_adalora_kwargs(self) -> dict:
        """Keyword arguments for adalora_core.AdaLoraConfig."""
        budget = self.budget.model_dump()
        budget["budget_unit"] = budget.pop("unit")
        return {**budget, **self.schedule.model_dump()}

    def to_train_kwargs(self) -> dict:
        """Keyword arguments for adalora_core.TrainArgs (max_seq_len is applied by the tokenizer instead)."""
        kwargs = self.training.model_dump(exclude={"max_seq_len", *MEMORY_FIELDS})
        if kwargs["epochs"] is None:  # max_steps decides the length; TrainArgs keeps its own epochs default
            del kwargs["epochs"]
        return kwargs
