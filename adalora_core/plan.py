"""A dry run: parameter counts and the budget schedule for a model and a config, without training."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .allocator import RankAllocator, target_rank
from .config import AdaLoraConfig
from .inject import inject_adalora


def plan_run(model: nn.Module, config: AdaLoraConfig, total_step: int) -> dict:
    """Injects into `model` (pass a throwaway one, e.g. build_model(..., empty=True)) and reports the plan."""
    config = replace(config, init="gaussian", total_step=total_step)  # no SVD on meta tensors
    adapted = inject_adalora(model, config)
    modules = list(adapted.modules.values())
    allocator = RankAllocator(adapted.modules, config, total_step)
    per_rank = sum(m.in_features + m.out_features + 1 for m in modules)
    final_rank = target_rank(config, modules)
    counts = adapted.parameter_counts()
    final_adapter = round(per_rank * final_rank)
    schedule = allocator.schedule
    return {
        "adapted_modules": len(modules),
        "adapter_params_init": counts["adapter"],
        "adapter_params_final": final_adapter,
        "head_params": counts["heads"],
        "trainable_params_init": counts["trainable"],
        "trainable_params_final": final_adapter + counts["heads"],
        "target_r": final_rank,
        "budget_init": schedule.init_budget,
        "budget_final": schedule.target_budget,
        "total_step": total_step,
        "tinit": schedule.tinit,
        "tfinal": schedule.tfinal,
        "schedule": [[step + 1, budget] for step, budget in schedule.points()],
    }
