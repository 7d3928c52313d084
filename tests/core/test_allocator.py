import pytest
import torch
from torch import nn

from adalora_core import AdaLoraConfig, BudgetSchedule, ConfigError, RankAllocator, SVDLinear
from tests.core.tiny import set_values_and_grads


def two_modules(r=3):
    torch.manual_seed(0)
    return {"a": SVDLinear(nn.Linear(4, 5), r, scaling=1), "b": SVDLinear(nn.Linear(6, 2), r, scaling=1)}


def reference_triplet_scores(history, beta1, beta2):
    """Plain-Python AdaLoRA arithmetic over a list of steps of {param_key: (values, grads)} as nested lists."""
    ema_i, ema_u = {}, {}
    for snapshot in history:
        for key, (w, g) in snapshot.items():
            flat = [abs(a * b) for a, b in zip(w.flatten().tolist(), g.flatten().tolist())]
            prev_i = ema_i.get(key, [0.0] * len(flat))
            new_i = [beta1 * p + (1 - beta1) * x for p, x in zip(prev_i, flat)]
            prev_u = ema_u.get(key, [0.0] * len(flat))
            ema_u[key] = [beta2 * p + (1 - beta2) * abs(x - i) for p, x, i in zip(prev_u, flat, new_i)]
            ema_i[key] = new_i
    scores = {}
    for name in ("a", "b"):
        shape_a, shape_b = history[0][(name, "A")][0].shape, history[0][(name, "B")][0].shape
        s = {k: [i * u for i, u in zip(ema_i[(name, k)], ema_u[(name, k)])] for k in "AEB"}
        r, n_in = shape_a
        n_out = shape_b[0]
        scores[name] = [s["E"][i]
                        + sum(s["A"][i * n_in + j] for j in range(n_in)) / n_in
                        + sum(s["B"][k * r + i] for k in range(n_out)) / n_out for i in range(r)]
    return scores


def test_triplet_scores_and_pruning_match_a_hand_written_reference():
    modules = two_modules()
    config = AdaLoraConfig(init_r=3, target_r=1, tinit=0, tfinal=1, delta_t=1, beta1=0.8, beta2=0.7,
                           budget_unit="ranks")
    allocator = RankAllocator(modules, config, total_step=4)
    history = []
    for step in range(2):
        set_values_and_grads(modules, seed=step)
        history.append({(n, k): (getattr(m, f"lora_{k}").detach().clone(), getattr(m, f"lora_{k}").grad.clone())
                        for n, m in modules.items() for k in "AEB"})
        allocation = allocator.update(step)
    expected = reference_triplet_scores(history, 0.8, 0.7)
    # float32 here vs float64 in the reference
    torch.testing.assert_close(allocator.triplet_scores(), torch.tensor([expected["a"], expected["b"]]),
                               rtol=1e-5, atol=1e-7)
    # step 1: cubic budget = int(4 * (1 - 1/3)**3 + 2) = 3 of 6 triplets kept, by one global threshold
    assert allocation.budget == 3
    flat = sorted(expected["a"] + expected["b"])
    threshold = flat[6 - 3 - 1]
    kept = {n: [s > threshold for s in expected[n]] for n in ("a", "b")}
    assert allocator.rank_pattern() == kept
    for name, keep in kept.items():
        e = modules[name].lora_E.detach().view(-1)
        assert all(e[i] == 0 for i, k in enumerate(keep) if not k), "pruned E entries must be exactly zero"
        assert all(e[i] != 0 for i, k in enumerate(keep) if k)


def test_cubic_schedule_shape_and_allocation_steps():
    s = BudgetSchedule(init_budget=120, target_budget=60, total_step=100, tinit=10, tfinal=20, delta_t=5)
    assert s.budget(0) == s.budget(10) == 120
    assert s.budget(50) == int(60 * (1 - 40 / 70) ** 3 + 60)
    assert s.budget(80) == s.budget(99) == 60
    assert s.points()[0] == (15, s.budget(15)) and s.points()[-1] == (80, 60)
    assert all(step % 5 == 0 for step, _ in s.points())
    budgets = [b for _, b in s.points()]
    assert budgets == sorted(budgets, reverse=True)


@pytest.mark.parametrize("unit", ["ranks", "params"])
@pytest.mark.parametrize("tinit,tfinal,delta_t,total", [(0, 0, 1, 10), (0, 3, 4, 10), (2, 0, 3, 10), (0, 0, 1, 2),
                                                       (1, 0, 1, 2)])
def test_schedule_edges_reach_the_target_and_freeze(tinit, tfinal, delta_t, total, unit):
    modules = two_modules()
    config = AdaLoraConfig(init_r=3, target_r=1, tinit=tinit, tfinal=tfinal, delta_t=delta_t, budget_unit=unit)
    allocator = RankAllocator(modules, config, total_step=total)
    finals = []
    for step in range(total):
        set_values_and_grads(modules, seed=step)
        allocation = allocator.update(step)
        if allocation:
            assert allocation.step > tinit or allocation.final
            finals.append(allocation.final)
    assert finals and finals[-1] and finals.count(True) == 1 and allocator.frozen
    if unit == "ranks":
        assert sum(allocator.ranks().values()) == 2
    else:  # rank 1 everywhere costs 10 + 9 = 19; the kept triplets fit and leave less than the smallest one
        assert 19 - 9 < allocator.kept_params() <= 19


def test_mask_stays_frozen_after_the_final_allocation():
    modules = two_modules()
    allocator = RankAllocator(modules, AdaLoraConfig(init_r=3, target_r=1, tinit=0, tfinal=3, delta_t=1), 6)
    for step in range(6):
        set_values_and_grads(modules, seed=step)  # overwrites pruned E entries, like an optimizer step would
        allocator.update(step)
    pattern = allocator.rank_pattern()
    for name, keep in pattern.items():
        e = modules[name].lora_E.detach().view(-1)
        assert all(e[i] == 0 for i, k in enumerate(keep) if not k)


def test_guard_warns_when_allocation_never_ran_during_budgeting():
    modules = two_modules()
    allocator = RankAllocator(modules, AdaLoraConfig(init_r=3, target_r=1, tinit=0, tfinal=1, delta_t=1), 20)
    set_values_and_grads(modules, seed=0)
    allocation = allocator.update(19)  # a caller that only calls at the end
    assert allocation.final and "never ran" in allocation.warning


def test_guard_warns_when_adapters_saw_no_gradient():
    modules = two_modules()
    allocator = RankAllocator(modules, AdaLoraConfig(init_r=3, target_r=1, tinit=0, tfinal=1, delta_t=1), 4)
    for step in range(4):
        allocation = allocator.update(step)  # no .grad anywhere
    assert "no gradient" in allocation.warning


def test_state_dict_round_trip_preserves_scores_and_mask():
    modules = two_modules()
    config = AdaLoraConfig(init_r=3, target_r=1, tinit=0, tfinal=2, delta_t=1)
    allocator = RankAllocator(modules, config, 8)
    for step in range(3):
        set_values_and_grads(modules, seed=step)
        allocator.update(step)
    restored = RankAllocator(modules, config, 8)
    restored.load_state_dict(allocator.state_dict())
    assert torch.equal(restored.triplet_scores(), allocator.triplet_scores())
    assert restored.rank_pattern() == allocator.rank_pattern() and restored.current_budget == allocator.current_budget


def test_budgets_count_parameters_or_ranks():
    modules = two_modules(r=4)
    per_rank = (4 + 5 + 1) + (6 + 2 + 1)
    by_params = RankAllocator(modules, AdaLoraConfig(init_r=4, target_r=None, target_params=2 * per_rank - 3), 10)
    assert (by_params.schedule.init_budget, by_params.schedule.target_budget) == (4 * per_rank, 2 * per_rank - 3)
    by_rank = RankAllocator(modules, AdaLoraConfig(init_r=4, target_r=1.5), 10)  # what rank 1.5 everywhere costs
    assert by_rank.schedule.target_budget == round(1.5 * per_rank)
    paper = RankAllocator(modules, AdaLoraConfig(init_r=4, target_r=1.5, budget_unit="ranks"), 10)
    assert (paper.schedule.init_budget, paper.schedule.target_budget) == (8, 3)
    with pytest.raises(ConfigError, match="lower target_params or raise init_r"):
        RankAllocator(modules, AdaLoraConfig(init_r=4, target_r=None, target_params=5 * per_rank), 10)
    with pytest.raises(ConfigError, match="target_params is a parameter budget"):
        AdaLoraConfig(target_r=None, target_params=100, budget_unit="ranks")
