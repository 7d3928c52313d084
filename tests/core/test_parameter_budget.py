"""Budgets in parameters: each triplet of a module costs in + out + 1, and the allocator keeps the triplets
with the best score per parameter whose costs fit the scheduled budget, at every allocation step."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from adalora_core import AdaLoraConfig, RankAllocator, SVDLinear, TrainArgs, TrainCallbacks, save_peft_adapter, train
from adalora_core.allocator import keep_within
from tests.core.tiny import classification_data, collate, set_values_and_grads, tiny_bert


def greedy(priorities: list[float], costs: list[int], budget: int) -> list[bool]:
    """The rule in plain Python: highest priority first, keep a triplet whenever it still fits."""
    keep, left = [False] * len(priorities), budget
    for i in sorted(range(len(priorities)), key=lambda i: -priorities[i]):
        if costs[i] <= left:
            keep[i], left = True, left - costs[i]
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_batched_selection_equals_the_sequential_greedy(seed):
    g = torch.Generator().manual_seed(seed)
    n, r = 7, 5
    scores = torch.rand(n, r, generator=g)
    cost = torch.tensor([3, 40, 11, 11, 97, 3, 25])[:, None].expand(n, r)
    budget = int(torch.randint(0, int(cost.sum()) + 1, (1,), generator=g))
    mask = keep_within(scores, cost, budget)
    assert mask.view(-1).tolist() == greedy(scores.view(-1).tolist(), cost.reshape(-1).tolist(), budget)
    assert int((mask * cost).sum()) <= budget


def three_shapes(r=3):
    torch.manual_seed(0)  # triplets cost 8 + 4 + 1 = 13, 3 + 5 + 1 = 9 and 16 + 16 + 1 = 33 parameters
    return {"small": SVDLinear(nn.Linear(8, 4), r, scaling=1), "narrow": SVDLinear(nn.Linear(3, 5), r, scaling=1),
            "wide": SVDLinear(nn.Linear(16, 16), r, scaling=1)}


def test_parameters_kept_at_every_allocation_step_of_a_hand_computed_case():
    modules = three_shapes()
    costs = {"small": 13, "narrow": 9, "wide": 33}
    config = AdaLoraConfig(init_r=3, target_r=None, target_params=60, tinit=0, tfinal=2, delta_t=2)
    allocator = RankAllocator(modules, config, total_step=10)
    # b0 = 3 x (13 + 9 + 33) = 165, bT = 60; b(t) = int(105 (1 - t / 8)^3 + 60) at t = 2, 4, 6, then 60 frozen.
    assert allocator.schedule.points() == [(2, 104), (4, 73), (6, 61), (8, 60)]
    seen = []
    for step in range(10):
        set_values_and_grads(modules, seed=step)
        # what the final step prunes with: scores freeze at T - tfinal
        before = None if allocator.frozen else allocator.triplet_scores()
        allocation = allocator.update(step)
        if allocation is None:
            continue
        scores = before if allocation.final else allocator.triplet_scores()
        cost = [costs[n] for n in modules for _ in range(3)]
        expected = greedy([s / c for s, c in zip(scores.view(-1).tolist(), cost)], cost, allocation.budget)
        assert allocator.mask.view(-1).tolist() == expected
        kept = sum(rank * costs[name] for name, rank in allocation.ranks.items())
        assert allocation.params == kept == allocator.kept_params() <= allocation.budget
        # what is left over is too small for any triplet not kept
        assert allocation.budget - kept < min(costs[n] for n, k in allocator.rank_pattern().items() if not all(k))
        seen.append((allocation.step, allocation.budget, kept, allocation.final))
    assert [(s, b, f) for s, b, _, f in seen] == [(2, 104, False), (4, 73, False), (6, 61, False), (8, 60, True)]
    assert 60 - 9 < seen[-1][2] <= 60


def test_a_costly_triplet_keeps_its_place_only_if_it_is_worth_the_cheap_ones_it_displaces():
    modules = three_shapes(r=1)  # one triplet each: small 13, narrow 9, wide 33 parameters
    config = AdaLoraConfig(init_r=1, target_r=None, target_params=33, tinit=0, tfinal=1, delta_t=1)
    allocator = RankAllocator(modules, config, total_step=3)
    for scores, kept in (({"small": 1.0, "narrow": 1.0, "wide": 2.0}, {"small": 1, "narrow": 1, "wide": 0}),
                         ({"small": 1.0, "narrow": 1.0, "wide": 4.0}, {"small": 0, "narrow": 0, "wide": 1})):
        # wide's score per parameter: 2 / 33 < 1 / 13 (small and narrow, 22 parameters, fit together);
        # 4 / 33 beats both (1 / 9 is the better of them).
        allocator.ema_ipt = [torch.zeros_like(p) for p in allocator.params]
        allocator.ema_unc = [torch.ones_like(p) for p in allocator.params]
        for i, name in enumerate(allocator.names):
            allocator.ema_ipt[len(modules) + i].fill_(scores[name])  # E's sensitivity is the score
        with torch.no_grad():
            allocator._prune_to(33)
        assert allocator.ranks() == kept


class Allocations(TrainCallbacks):
    def __init__(self):
        self.seen, self.metrics = [], []

    def on_allocation(self, step, budget, ranks, final, params):
        self.seen.append((budget, ranks, params, final))

    def on_metrics(self, step, metrics):
        self.metrics.append(metrics)


def test_a_training_run_ends_within_one_percent_of_target_params_and_exports_exactly_that(tmp_path):
    config = AdaLoraConfig(init_r=4, target_r=None, target_params=3000, tinit=2, tfinal=3, delta_t=2)
    rec = Allocations()
    result = train(tiny_bert(), config, TrainArgs(max_steps=16, batch_size=8, learning_rate=5e-2, seed=1),
                   classification_data(), collate, callbacks=rec)
    cost = {n: m.in_features + m.out_features + 1 for n, m in result.adapted.modules.items()}
    budget, ranks, params, final = rec.seen[-1]
    assert final and budget == 3000 and params == sum(ranks[n] * c for n, c in cost.items())
    assert 3000 - max(30, max(cost.values())) < params <= 3000  # 1 % of 3,000 or the largest triplet (97)
    assert rec.metrics[-1]["adapter_params"] == params and rec.metrics[-1]["budget"] == 3000
    assert all(p <= b for b, _, p, _ in rec.seen)
    # The exported adapter holds exactly the kept parameters (pruned rows removed)
    save_peft_adapter(result, str(tmp_path))
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    exported = sum(t.numel() for k, t in tensors.items() if ".lora_" in k)
    assert exported == params
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "ADALORA"


def test_a_rank_budget_counts_triplets_whatever_their_size():
    modules = three_shapes()
    allocator = RankAllocator(modules, AdaLoraConfig(init_r=3, target_r=1, tinit=0, tfinal=2, delta_t=2,
                                                     budget_unit="ranks"), total_step=10)
    for step in range(10):
        set_values_and_grads(modules, seed=step)
        allocator.update(step)
    assert sum(allocator.ranks().values()) == 3  # 3 triplets, however many parameters they hold
