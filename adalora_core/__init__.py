"""Our AdaLoRA: SVD-shaped adapters, the sensitivity-based rank allocator, its training loop and export.

No web or database code lives here; see docs/CORE_API.md for how the worker drives it. The names below load
on first use (PEP 562), so `adalora_core.config` (the settings and their rules) imports without torch: the
API validates job specs with it and must not load torch at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the submodule that defines it
_EXPORTS = {
    "Allocation": "allocator", "BudgetSchedule": "allocator", "RankAllocator": "allocator",
    "AdaLoraConfig": "config", "ConfigError": "config", "TrainArgs": "config", "default_target_modules": "config",
    "merged_state_dict": "export", "save_merged": "export", "save_peft_adapter": "export",
    "base_dtype": "hf", "build_model": "hf", "enable_gradient_checkpointing": "hf", "parameter_count": "hf",
    "Adapted": "inject", "inject_adalora": "inject", "unload": "inject",
    "SVDLinear": "layer",
    "keeps_packed_examples_apart": "model_inputs", "model_inputs": "model_inputs",
    "SERVING_RANKS": "lora_format", "save_lora_adapter": "lora_format", "save_serving_adapter": "lora_format",
    "TrainCallbacks": "loop", "TrainingDiverged": "step_metrics", "TrainResult": "loop", "save_checkpoint": "loop",
    "save_warm_start": "loop", "train": "loop",
    "plan_run": "plan",
    "orthogonal_penalty": "regularizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # what type checkers and editors see
    from .allocator import Allocation, BudgetSchedule, RankAllocator
    from .config import AdaLoraConfig, ConfigError, TrainArgs, default_target_modules
    from .export import merged_state_dict, save_merged, save_peft_adapter
    from .hf import base_dtype, build_model, enable_gradient_checkpointing, parameter_count
    from .inject import Adapted, inject_adalora, unload
    from .layer import SVDLinear
    from .loop import TrainCallbacks, TrainResult, save_checkpoint, save_warm_start, train
    from .lora_format import SERVING_RANKS, save_lora_adapter, save_serving_adapter
    from .model_inputs import keeps_packed_examples_apart, model_inputs
    from .plan import plan_run
    from .regularizer import orthogonal_penalty
    from .step_metrics import TrainingDiverged
