"""A dry run: parameter counts and the budget schedule for a model and a config, without training."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .allocator import RankAllocator, rank_cost, target_rank
from .config import AdaLoraConfig
from .inject import Adapted, inject_adalora


def plan_run(model: nn.Module, config: AdaLoraConfig, total_step: int) -> dict:
    """Injects into `model` (pass a throwaway one, e.g. build_model(..., empty=True)) and reports the plan.

    Budgets are in `budget_unit`. With a parameter budget `adapter_params_final` is the most the run keeps
    (it ends within one triplet of it); with a rank budget it is what target_r in every module would cost,
    and the run keeps more or less depending on where the allocator puts the ranks.
    """
    config = replace(config, init="gaussian", total_step=total_step)  # no SVD on meta tensors
    adapted = inject_adalora(model, config)
    return describe_plan(adapted, RankAllocator(adapted.modules, config, total_step), config)


def describe_plan(adapted: Adapted, allocator: RankAllocator, config: AdaLoraConfig) -> dict:
    """The plan of a run whose adapters are injected and whose allocator is built (what `train` reports to
    `TrainCallbacks.on_start`, and what `plan_run` answers for a dry run)."""
    modules = list(adapted.modules.values())
    schedule = allocator.schedule
    total_step = schedule.total_step
    counts = adapted.parameter_counts()
    final_rank = target_rank(config, modules)
    final_adapter = schedule.target_budget if config.budget_unit == "params" else round(rank_cost(modules) * final_rank)
    return {
        "adapted_modules": len(modules),
        "adapter_params_init": counts["adapter"],
        "adapter_params_final": final_adapter,
        "head_params": counts["heads"],
        "trainable_params_init": counts["trainable"],
        "trainable_params_final": final_adapter + counts["heads"],
        "target_r": final_rank,
        "budget_unit": config.budget_unit,
        "budget_init": schedule.init_budget,
        "budget_final": schedule.target_budget,
        "total_step": total_step,
        "tinit": schedule.tinit,
        "tfinal": schedule.tfinal,
        "schedule": [[step + 1, budget] for step, budget in schedule.points()],
        # init_r everywhere, or the pattern a warm start carried over (a dry run's meta model has no mask values)
        "ranks_init": ({name: config.init_r for name in adapted.modules} if allocator.mask.is_meta
                       else allocator.ranks()),
        "adapter_params_start": allocator.kept_params(),
    }
