"""The settings of a run, torch-free so the API can validate a job spec with them: AdaLoraConfig (the
adapters, budget and schedule) and TrainArgs (the optimisation). Validated on creation and when the run
length is known."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

Init = Literal["lora", "svd", "orthogonal", "gaussian"]
BudgetUnit = Literal["params", "ranks"]
OrthTarget = Literal["orthogonal", "orthonormal"]
Scaling = Literal["rank_stabilized", "standard"]

# Attention and MLP linears of each architecture family, as module-name suffixes.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "xlm-roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "electra": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "deberta": ["in_proj", "attention.output.dense", "intermediate.dense", "output.dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "attention.output.dense",
                   "intermediate.dense", "output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "gpt2": ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "t5": ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"],
    "mt5": ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


LORA_ALPHA_DEFAULT = 8.0
# A scale this far (as a factor) from what the defaults give at the same init_r is probably a mistake:
# PEFT's AdaLoRA at init_r 64 and alpha 8 trains at 1/11 of it and lost 10 GSM8K points to LoRA.
SCALE_WARN_FACTOR = 4.0


class ConfigError(ValueError):
    """An invalid setting; the message says what to change."""


@dataclass
class AdaLoraConfig:
    init_r: int = 12                      # rank every adapted module starts with
    target_r: float | None = None         # average rank per module at the end; neither given: default_target_r
    target_params: int | None = None      # or: total adapter parameters at the end of budgeting
    # What the budget counts. "params": adapter parameters, a triplet of a module costing in + out + 1, so
    # target_r=2 keeps exactly what rank 2 everywhere would cost (LoRA r=2 plus the singular values);
    # "ranks": triplets, whatever their size (the paper's and PEFT's; an MLP rank then costs 2.5x an
    # attention rank and the kept parameters drift above the target).
    budget_unit: BudgetUnit = "params"
    # dW's multiplier. "rank_stabilized": lora_alpha / sqrt(init_r) (rsLoRA's rule), so raising init_r does not
    # shrink the update; "standard": the paper's and PEFT's lora_alpha / init_r, which at init_r 64 and alpha 8
    # trains with a scale of 0.125. Default from bench/results_quality_lm.md.
    lora_alpha: float = LORA_ALPHA_DEFAULT
    scaling: Scaling = "rank_stabilized"
    lora_dropout: float = 0.0             # dropout on the adapter's input
    target_modules: list[str] | str | None = None  # name suffixes, or a regex on full names; None: per family
    modules_to_save: list[str] | None = None        # extra trainable modules (task heads); None: auto
    # Schedule, in optimizer steps; a float in (0, 1) is a fraction of total_step.
    tinit: float = 0.1                    # warmup steps at the initial budget
    tfinal: float = 0.2                   # final steps with the mask frozen
    delta_t: int = 10                     # allocate every delta_t steps while budgeting
    beta1: float = 0.85                   # EMA of sensitivity
    beta2: float = 0.85                   # EMA of uncertainty
    orth_reg_weight: float = 0.1          # weight of the orthogonal regulariser
    # What it pulls A's rows and B's columns towards: "orthogonal" (to each other, lengths free) or the
    # paper's "orthonormal" (also unit length; with B = 0 at the start that grows B without the task).
    orth_target: OrthTarget = "orthogonal"
    total_step: int | None = None         # set by the loop when unknown at configuration time
    # Defaults from bench/results_quality.md. The paper's start (E = 0) lets only E learn at first, r scalars
    # per module, and sat at chance for a third of a short run; "lora" (B = 0, E = 1) starts as LoRA does.
    # Paper / PEFT settings: init="gaussian", e_lr_multiplier=1, budget_unit="ranks", orth_target="orthonormal".
    init: Init = "lora"                   # lora, svd (top singular vectors of W), orthogonal, gaussian (paper)
    e_lr_multiplier: float = 1.0          # learning-rate multiplier for the singular values E

    def __post_init__(self) -> None:
        if self.init_r < 1:
            raise ConfigError(f"init_r must be >= 1, got {self.init_r}: raise init_r")
        if self.target_r is not None and self.target_params is not None:
            raise ConfigError("give one budget: target_r (average final rank) or target_params, not both")
        if self.target_r is None and self.target_params is None:
            self.target_r = default_target_r(self.init_r)
        if self.target_r is not None and not 0 <= self.target_r <= self.init_r:
            raise ConfigError(f"target_r must be within [0, init_r={self.init_r}], got {self.target_r}: "
                              "lower target_r or raise init_r")
        if self.target_params is not None and self.target_params < 0:
            raise ConfigError("target_params must be >= 0")
        if self.budget_unit not in ("params", "ranks"):
            raise ConfigError(f"budget_unit must be params or ranks, got {self.budget_unit!r}")
        if self.budget_unit == "ranks" and self.target_params is not None:
            raise ConfigError("target_params is a parameter budget: use budget_unit='params', "
                              "or give target_r (an average rank) for a budget in ranks")
        for name in ("beta1", "beta2"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name} must be strictly between 0 and 1, got {getattr(self, name)}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if self.scaling not in ("rank_stabilized", "standard"):
            raise ConfigError(f"scaling must be rank_stabilized or standard, got {self.scaling!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.orth_reg_weight < 0:
            raise ConfigError(f"orth_reg_weight must be >= 0, got {self.orth_reg_weight}")
        if self.orth_target not in ("orthogonal", "orthonormal"):
            raise ConfigError(f"orth_target must be orthogonal or orthonormal, got {self.orth_target!r}")
        if self.delta_t < 1:
            raise ConfigError(f"delta_t must be >= 1 step, got {self.delta_t}")
        if self.tinit < 0 or self.tfinal < 0:
            raise ConfigError("tinit and tfinal must be >= 0")
        if self.init not in ("lora", "svd", "orthogonal", "gaussian"):
            raise ConfigError(f"init must be lora, svd, orthogonal or gaussian, got {self.init!r}")
        if self.e_lr_multiplier <= 0:
            raise ConfigError(f"e_lr_multiplier must be > 0, got {self.e_lr_multiplier}")
        if self.total_step is not None:
            self.schedule_steps(self.total_step)

    @property
    def scale(self) -> float:
        """What dW = B (A ⊙ E) is multiplied by."""
        return update_scale(self.lora_alpha, self.init_r, self.scaling)

    def scale_warning(self) -> str | None:
        """A sentence when the scale is far from the defaults' at this init_r (too slow, or too fast to be
        stable), else None."""
        default = update_scale(LORA_ALPHA_DEFAULT, self.init_r, "rank_stabilized")
        ratio = self.scale / default
        if 1 / SCALE_WARN_FACTOR <= ratio <= SCALE_WARN_FACTOR:
            return None
        effect = "trains slowly (the update is too small)" if ratio < 1 else "may diverge or collapse"
        return (f"the adapter's scale {self.scale:.3g} (lora_alpha {self.lora_alpha:g}, scaling {self.scaling}, "
                f"init_r {self.init_r}) is {ratio:.2g}x the default's {default:.3g} at this init_r and {effect}: "
                f"leave lora_alpha and scaling at their defaults, or set lora_alpha to about "
                f"{_alpha_for(default, self.init_r, self.scaling):.3g} for scaling {self.scaling}")

    def schedule_steps(self, total_step: int) -> tuple[int, int]:
        """(tinit, tfinal) in steps for a run of total_step optimizer steps; raises if no budgeting phase."""
        if total_step < 1:
            raise ConfigError(f"total_step must be >= 1, got {total_step}")
        tinit, tfinal = steps_of(self.tinit, total_step), steps_of(self.tfinal, total_step)
        if tinit + tfinal >= total_step:
            raise ConfigError(f"tinit + tfinal ({tinit} + {tfinal}) must be below total_step ({total_step}): "
                              "lower tinit or tfinal, or train longer")
        return tinit, tfinal

    def with_total_step(self, total_step: int) -> AdaLoraConfig:
        return AdaLoraConfig(**{**asdict(self), "total_step": total_step})

    def to_dict(self) -> dict:
        return asdict(self)


def default_target_r(init_r: int) -> float:
    """The final budget when none is given: a third of the starting ranks pruned, as in the paper's GLUE runs
    (12 -> 8), rounded down to whole ranks but never below 1."""
    return float(max(1, init_r * 2 // 3))


def update_scale(lora_alpha: float, init_r: int, scaling: str) -> float:
    return lora_alpha / (math.sqrt(init_r) if scaling == "rank_stabilized" else init_r)


def _alpha_for(scale: float, init_r: int, scaling: str) -> float:
    return scale * (math.sqrt(init_r) if scaling == "rank_stabilized" else init_r)


def steps_of(value: float, total_step: int) -> int:
    """A fraction in (0, 1) of the run, or an absolute step count."""
    if 0 < value < 1:
        return int(math.floor(value * total_step))
    if value != int(value):
        raise ConfigError(f"schedule value {value} is neither a fraction in (0, 1) nor a whole number of steps")
    return int(value)


def default_target_modules(model_type: str) -> list[str]:
    try:
        return DEFAULT_TARGET_MODULES[model_type]
    except KeyError:
        raise ConfigError(f"no default target_modules for model type {model_type!r}: "
                          "pass target_modules (module-name suffixes or a regex)") from None


METRICS_EVERY_ON_ACCELERATORS = 10
# compile "auto" compiles runs of at least this many optimizer steps (adalora_core.compile): compiling takes about
# a minute for a 1B-class decoder layer's graphs, and a faster step repays it only over a few hundred steps.
COMPILE_AUTO_MIN_STEPS = 300


@dataclass
class TrainArgs:
    learning_rate: float | Literal["auto"] = 1e-3  # "auto": a range test picks it (adalora_core.lr_probe)
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: float = 1.0                  # used when max_steps is None
    max_steps: int | None = None         # optimizer steps
    grad_accum: int = 1                  # micro-batches per optimizer step
    warmup_ratio: float = 0.06           # fraction of steps with a linear warmup from 0
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float | None = 1.0    # None: no clipping
    eval_every: int | None = None        # steps; the run always evaluates at the end when eval_fn is given
    checkpoint_every: int | None = None  # steps since the last checkpoint; needs checkpoint_dir
    checkpoint_every_seconds: float | None = None  # ... or seconds since it, whichever comes first
    checkpoint_dir: str | None = None
    seed: int = 0
    device: str | None = None            # None: cuda when available, else cpu
    bf16: bool | None = None             # None: bf16 autocast on CUDA devices that support it
    compile: bool | Literal["auto"] = "auto"  # torch.compile each decoder layer; auto: see adalora_core.compile
    # Steps between reads of the step metrics from the device: a read waits for the device to finish, so reading
    # every step keeps a GPU from running ahead of Python. None: every step on the CPU (a read costs nothing
    # there), every METRICS_EVERY_ON_ACCELERATORS steps elsewhere.
    metrics_every: int | None = None

    def __post_init__(self) -> None:
        if self.learning_rate != "auto" and (isinstance(self.learning_rate, str) or self.learning_rate <= 0):
            raise ConfigError(f"learning_rate must be > 0 or \"auto\", got {self.learning_rate!r}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("batch_size and grad_accum must be >= 1")
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError("give epochs > 0 or max_steps")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr_schedule not in ("linear", "cosine", "constant"):
            raise ConfigError(f"lr_schedule must be linear, cosine or constant, got {self.lr_schedule!r}")
        if self.checkpoint_every_seconds is not None and self.checkpoint_every_seconds <= 0:
            raise ConfigError(f"checkpoint_every_seconds must be > 0 (or None), got {self.checkpoint_every_seconds}")
        if self.compile not in (True, False, "auto"):
            raise ConfigError(f"compile must be true, false or \"auto\", got {self.compile!r}")
        if self.metrics_every is not None and self.metrics_every < 1:
            raise ConfigError(f"metrics_every must be >= 1 (or None), got {self.metrics_every}")
        if (self.checkpoint_every or self.checkpoint_every_seconds) and not self.checkpoint_dir:
            raise ConfigError("checkpoint_every and checkpoint_every_seconds need checkpoint_dir")

    def total_steps(self, n_examples: int) -> int:
        if n_examples < self.batch_size:
            raise ConfigError(f"the dataset has {n_examples} examples, fewer than batch_size={self.batch_size}: "
                              "lower batch_size or add data")
        if self.max_steps is not None:
            return self.max_steps
        steps_per_epoch = (n_examples // self.batch_size) / self.grad_accum
        return max(1, math.ceil(steps_per_epoch * self.epochs))
