"""RankAllocator: sensitivity-scored triplets, the cubic budget schedule, one global ranking.

The budget counts adapter parameters (each triplet of a module costs in + out + 1: a row of A, a column of
B, one singular value) or, as in the paper, triplets (`AdaLoraConfig.budget_unit`). Either way one global
ranking of all triplets of all modules decides what is kept: by score per parameter for a parameter
budget, by score for a triplet budget (where every triplet costs the same, so the two agree).

Call `update(step)` after `optimizer.step()` and before `zero_grad()`, with `step` the 0-based index of
the optimizer step just taken (gradient accumulation therefore never skews the schedule); it consumes
the adapters' gradients. The per-step work is six `torch._foreach_*` calls over all adapter tensors at
once, not a Python loop of small ops per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import AdaLoraConfig, ConfigError
from .layer import SVDLinear


@dataclass(frozen=True)
class Allocation:
    """What one allocation step decided: the budget (in the allocator's unit), the kept rank of each module
    and the adapter parameters those ranks hold."""

    step: int
    budget: int
    ranks: dict[str, int]
    final: bool  # True at the step after which the mask is frozen
    params: int  # adapter parameters kept: sum over modules of rank x (in + out + 1)
    warning: str | None = None  # set when the allocation looks broken (see RankAllocator._guard)


class BudgetSchedule:
    """b(t): init budget until tinit, cubic decay to the target, then the target for the last tfinal steps."""

    def __init__(self, init_budget: int, target_budget: int, total_step: int, tinit: int, tfinal: int,
                 delta_t: int) -> None:
        self.init_budget, self.target_budget = init_budget, target_budget
        self.total_step, self.tinit, self.tfinal, self.delta_t = total_step, tinit, tfinal, delta_t
        # Masks freeze at T - tfinal; with tfinal = 0 that step never comes, so use the last step.
        self.final_step = min(total_step - tfinal, total_step - 1)

    def budget(self, step: int) -> int:
        if step >= self.final_step:
            return self.target_budget
        if step <= self.tinit:
            return self.init_budget
        progress = (step - self.tinit) / (self.total_step - self.tfinal - self.tinit)
        spread = self.init_budget - self.target_budget
        return int(spread * (1 - progress) ** 3 + self.target_budget)

    def allocates_at(self, step: int) -> bool:
        return step == self.final_step or (self.tinit < step < self.final_step and step % self.delta_t == 0)

    def points(self) -> list[tuple[int, int]]:
        """(step, budget) at every allocation step: the whole plan, for dry runs and charts."""
        return [(s, self.budget(s)) for s in range(self.tinit + 1, self.final_step + 1) if self.allocates_at(s)]


class RankAllocator:
    def __init__(self, modules: dict[str, SVDLinear], config: AdaLoraConfig, total_step: int,
                 skip_pruned_modules: bool = True) -> None:
        """`skip_pruned_modules`: once the mask is final, modules left with no rank skip their adapter (see
        _skip_empty_modules). A data-parallel run passes False: DDP expects a gradient for every parameter."""
        if not modules:
            raise ValueError("no adapted modules: check target_modules")
        ranks = {m.r for m in modules.values()}
        if len(ranks) != 1:
            raise ValueError(f"all modules must share init_r, got ranks {sorted(ranks)}")
        self.names = list(modules)
        self.modules = [modules[n] for n in self.names]
        self.r = ranks.pop()
        self.beta1, self.beta2 = config.beta1, config.beta2
        tinit, tfinal = config.schedule_steps(total_step)
        n = len(self.modules)
        self.unit = config.budget_unit
        # (n, 1) parameters per triplet of each module; integers so that budgets are met exactly.
        device = modules[self.names[0]].lora_E.device
        self.cost = torch.tensor([[m.in_features + m.out_features + 1] for m in self.modules], device=device)
        if self.unit == "params":
            init_budget, target_budget = rank_cost(self.modules) * self.r, target_params(config, self.modules)
        else:
            init_budget, target_budget = self.r * n, round(target_rank(config, self.modules) * n)
        self.schedule = BudgetSchedule(init_budget, target_budget, total_step, tinit, tfinal, config.delta_t)
        self._kept_params = rank_cost(self.modules) * self.r  # recounted only when the mask changes
        # Parameters in a fixed order: A of every module, then E, then B.
        self.params: list[torch.Tensor] = [*(m.lora_A for m in self.modules), *(m.lora_E for m in self.modules),
                                           *(m.lora_B for m in self.modules)]
        self.ema_ipt = [torch.zeros_like(p) for p in self.params]
        self.ema_unc = [torch.zeros_like(p) for p in self.params]
        self.mask = torch.ones(n, self.r, dtype=torch.bool, device=self.params[0].device)
        self.frozen = False
        self.skip_pruned_modules = skip_pruned_modules
        self.current_budget = self.schedule.init_budget
        self.allocations = 0  # allocation steps taken before the final one

    # -- the hot path -------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, step: int) -> Allocation | None:
        """Update sensitivities and, on allocation steps, prune to the scheduled budget.

        Call it last before zero_grad(): it overwrites the adapters' gradients with their sensitivities.
        """
        if self.frozen:
            self._apply_mask()  # the optimizer may have moved pruned singular values; hold them at zero
            return None
        # Scores stop once the final phase starts (step >= T - tfinal), as in the paper's code and PEFT: the
        # final mask comes from budgeting-phase scores. With tfinal = 0 the last step still updates.
        if step < self.schedule.total_step - self.schedule.tfinal:
            self._update_scores()
        # `>=` rather than `==`: a caller that skips the final step must still get a frozen target mask.
        final = step >= self.schedule.final_step
        if not (final or self.schedule.allocates_at(step)):
            return None
        budget = self.schedule.budget(step)
        scores = self._prune_to(budget)
        self.current_budget = budget
        warning = self._guard(scores) if final else None
        if final:
            self.frozen = True  # the scores stay: a later run started from this one carries them over
            self._skip_empty_modules()
        else:
            self.allocations += 1
        return Allocation(step, budget, self.ranks(), final, self.kept_params(), warning)

    def _guard(self, scores: torch.Tensor) -> str | None:
        """The classic AdaLoRA failure: the allocator never ran while budgeting, or saw no gradient at all."""
        if self.schedule.init_budget == self.schedule.target_budget:
            return None
        if self.allocations == 0 and len(self.schedule.points()) > 1:
            return ("rank allocation never ran during the budgeting phase, so ranks went from init_r straight to "
                    "the target at the end: call update(step) after every optimizer step, with the step index")
        if not bool((scores > 0).any()):
            return ("every sensitivity score is zero: the adapters received no gradient, so pruning was arbitrary; "
                    "check that the loss depends on the adapted modules and update() runs before zero_grad()")
        return None

    def _update_scores(self) -> None:
        # Six passes over the adapter tensors, each one foreach call for all of them. The sensitivity is
        # computed into the gradients themselves: no fresh adapter-sized allocations on every step (see
        # `update`). Flat buffers were measured slower on CPU: concatenating costs two more passes.
        ipt = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch._foreach_mul_(ipt, self.params)
        torch._foreach_abs_(ipt)                                 # sensitivity |w * grad|
        torch._foreach_lerp_(self.ema_ipt, ipt, 1 - self.beta1)  # ema = beta * ema + (1 - beta) * x
        torch._foreach_sub_(ipt, self.ema_ipt)
        torch._foreach_abs_(ipt)                                 # uncertainty |I - ema|
        torch._foreach_lerp_(self.ema_unc, ipt, 1 - self.beta2)

    def triplet_scores(self) -> torch.Tensor:
        """(n_modules, r): s(E_i) + mean_j s(A_ij) + mean_k s(B_ki), with s = sensitivity EMA × uncertainty."""
        n = len(self.modules)
        scores = torch._foreach_mul(self.ema_ipt, self.ema_unc)
        s_a, s_e, s_b = scores[:n], scores[n:2 * n], scores[2 * n:]
        # One small mean per tensor (allocation steps only): a stacked batch would cross torch's intra-op
        # threshold and pay a thread fork/join that costs more than the means (measured in bench/core_step.py).
        return (torch.stack(s_e).view(n, self.r) + torch.stack([s.mean(dim=1) for s in s_a])
                + torch.stack([s.mean(dim=0) for s in s_b]))

    def _prune_to(self, budget: int) -> torch.Tensor:
        scores = self.triplet_scores()
        if self.unit == "params":
            # Ranked by score per parameter: an MLP triplet must be worth 2.5 attention triplets to displace
            # them (the greedy answer to "most score within a parameter budget"; bench/results_quality.md).
            self.mask = keep_within(scores / self.cost, self.cost.expand_as(scores), budget)
        else:
            k = self.mask.numel() - budget
            if k <= 0:
                self.mask.fill_(True)
            else:
                threshold = torch.kthvalue(scores.view(-1), k).values
                self.mask = scores > threshold
        self._kept_params = int((self.mask * self.cost).sum())
        self._apply_mask()
        return scores

    def _skip_empty_modules(self) -> None:
        """Once the mask is final, a module that kept no rank adds nothing for the rest of the run: it skips its
        adapter's forward and backward passes (SVDLinear.pruned)."""
        if not self.skip_pruned_modules:
            return
        for module, kept in zip(self.modules, self.mask.any(dim=1).tolist()):
            module.pruned = not kept

    def _apply_mask(self) -> None:
        keep = self.mask.to(self.params[0].dtype).unsqueeze(-1).unbind(0)  # n tensors of (r, 1)
        torch._foreach_mul_([m.lora_E for m in self.modules], list(keep))

    # -- reporting and resume -----------------------------------------------------------------------

    def ranks(self) -> dict[str, int]:
        return dict(zip(self.names, self.mask.sum(dim=1).tolist()))

    def kept_params(self) -> int:
        """Adapter parameters the mask keeps. The loop reports it every step: a cached count, so reading it
        costs no device sync."""
        return self._kept_params

    def rank_pattern(self) -> dict[str, list[bool]]:
        return dict(zip(self.names, self.mask.tolist()))

    def state_dict(self) -> dict:
        return {"names": self.names, "mask": self.mask.cpu(), "frozen": self.frozen,
                "current_budget": self.current_budget, "allocations": self.allocations,
                "ema_ipt": [t.cpu() for t in self.ema_ipt], "ema_unc": [t.cpu() for t in self.ema_unc]}

    def carry_over(self, state: dict) -> None:
        """Start from another run's rank pattern and importance scores (its state_dict()), with this run's own
        budget schedule: the pattern holds until this run's first allocation, which re-scores every triplet."""
        if state["names"] != self.names:
            raise ValueError("the earlier run adapted other modules")
        device = self.params[0].device
        self.mask = state["mask"].to(device)
        self._kept_params = int((self.mask * self.cost).sum())
        if state["ema_ipt"]:  # an older final state may have none: the scores then start afresh
            self.ema_ipt = [t.to(device) for t in state["ema_ipt"]]
            self.ema_unc = [t.to(device) for t in state["ema_unc"]]

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names:
            raise ValueError("allocator state was saved for different modules")
        device = self.params[0].device
        self.mask = state["mask"].to(device)
        self._kept_params = int((self.mask * self.cost).sum())
        self.frozen = state["frozen"]
        if self.frozen:
            self._skip_empty_modules()
        self.current_budget, self.allocations = state["current_budget"], state["allocations"]
        self.ema_ipt = [t.to(device) for t in state["ema_ipt"]]
        self.ema_unc = [t.to(device) for t in state["ema_unc"]]


def keep_within(priority: torch.Tensor, cost: torch.Tensor, budget: int) -> torch.Tensor:
    """The mask of the highest-priority triplets whose costs fit in `budget`: walk the triplets from the
    highest priority down and keep each one that still fits (greedy, skipping the ones too big for what is
    left). Batched: each pass keeps the longest run of fitting candidates with one cumsum, and the next
    pass only looks at cheaper triplets, so there are at most as many passes as distinct costs."""
    order = torch.argsort(priority.reshape(-1), descending=True, stable=True)
    cost = cost.reshape(-1)[order]
    keep = torch.zeros_like(cost, dtype=torch.bool)
    left = torch.tensor(budget, device=cost.device)
    while True:
        candidate = ~keep & (cost <= left)
        if not bool(candidate.any()):
            break
        take = candidate & (torch.cumsum(cost * candidate, 0) <= left)
        keep |= take
        left = left - (cost * take).sum()
    mask = torch.empty_like(keep)
    mask[order] = keep
    return mask.view(priority.shape)


def rank_cost(modules: list[SVDLinear]) -> int:
    """Adapter parameters of one rank in every module: a row of A, a column of B and one E each."""
    return sum(m.in_features + m.out_features + 1 for m in modules)


def target_params(config: AdaLoraConfig, modules: list[SVDLinear]) -> int:
    """The final budget in parameters: target_params, or what rank target_r in every module costs."""
    per_rank = rank_cost(modules)
    if config.target_params is None:
        assert config.target_r is not None, "AdaLoraConfig sets target_r when target_params is None"
        return round(config.target_r * per_rank)
    if config.target_params > per_rank * config.init_r:
        raise ConfigError(f"target_params={config.target_params} exceeds the adapters' size at init_r="
                          f"{config.init_r} ({per_rank * config.init_r}): lower target_params or raise init_r")
    return config.target_params


def target_rank(config: AdaLoraConfig, modules: list[SVDLinear]) -> float:
    """Average final rank: target_r, or the rank whose A, E and B sizes add up to target_params."""
    if config.target_r is not None:
        return config.target_r
    return target_params(config, modules) / rank_cost(modules)

