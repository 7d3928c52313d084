"""Our AdaLoRA: SVD-shaped adapters, the sensitivity-based rank allocator, its training loop and export.

No web or database code lives here; see docs/CORE_API.md for how the worker drives it.
"""

from .allocator import Allocation, BudgetSchedule, RankAllocator
from .config import AdaLoraConfig, ConfigError, default_target_modules
from .export import merged_state_dict, save_merged, save_peft_adapter
from .hf import base_dtype, build_model, enable_gradient_checkpointing, parameter_count
from .inject import Adapted, inject_adalora, unload
from .layer import SVDLinear
from .lora_format import SERVING_RANKS, save_lora_adapter, save_serving_adapter
from .loop import TrainArgs, TrainCallbacks, TrainingDiverged, TrainResult, save_checkpoint, save_warm_start, train
from .plan import plan_run
from .regularizer import orthogonal_penalty

__all__ = [
    "Adapted", "AdaLoraConfig", "Allocation", "BudgetSchedule", "ConfigError", "RankAllocator", "SERVING_RANKS",
    "SVDLinear", "TrainArgs", "TrainCallbacks", "TrainResult", "TrainingDiverged", "base_dtype", "build_model",
    "default_target_modules", "enable_gradient_checkpointing", "inject_adalora", "merged_state_dict",
    "orthogonal_penalty", "parameter_count", "plan_run", "save_checkpoint", "save_lora_adapter", "save_merged",
    "save_peft_adapter", "save_serving_adapter", "save_warm_start", "train", "unload",
]
