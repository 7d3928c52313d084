"""AdaLoRA configuration: one dataclass, validated on creation and when the run length is known."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

Init = Literal["lora", "svd", "orthogonal", "gaussian"]
BudgetUnit = Literal["params", "ranks"]
OrthTarget = Literal["orthogonal", "orthonormal"]

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


class ConfigError(ValueError):
    """An invalid setting; the message says what to change."""


@dataclass
class AdaLoraConfig:
    init_r: int = 12                      # rank every adapted module starts with
    target_r: float | None = 8.0          # average rank per module at the end of budgeting
    target_params: int | None = None      # or: total adapter parameters at the end of budgeting
    # What the budget counts. "params": adapter parameters, a triplet of a module costing in + out + 1, so
    # target_r=2 keeps exactly what rank 2 everywhere would cost (LoRA r=2 plus the singular values);
    # "ranks": triplets, whatever their size (the paper's and PEFT's; an MLP rank then costs 2.5x an
    # attention rank and the kept parameters drift above the target).
    budget_unit: BudgetUnit = "params"
    lora_alpha: float = 12.0              # dW is scaled by lora_alpha / init_r (bench: 16 and up let runs collapse)
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
        if (self.target_r is None) == (self.target_params is None):
            raise ConfigError("give exactly one budget: target_r (average final rank) or target_params")
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

    def schedule_steps(self, total_step: int) -> tuple[int, int]:
        """(tinit, tfinal) in steps for a run of total_step optimizer steps; raises if no budgeting phase."""
        if total_step < 1:
            raise ConfigError(f"total_step must be >= 1, got {total_step}")
        tinit, tfinal = _steps(self.tinit, total_step), _steps(self.tfinal, total_step)
        if tinit + tfinal >= total_step:
            raise ConfigError(f"tinit + tfinal ({tinit} + {tfinal}) must be below total_step ({total_step}): "
                              "lower tinit or tfinal, or train longer")
        return tinit, tfinal

    def with_total_step(self, total_step: int) -> AdaLoraConfig:
        return AdaLoraConfig(**{**asdict(self), "total_step": total_step})

    def to_dict(self) -> dict:
        return asdict(self)


def _steps(value: float, total_step: int) -> int:
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

