"""Parity with PEFT's AdaLoRA (peft 0.21.2, a test-only dependency) on a tiny BERT built from a config.

Both sides start from the same base weights and the same initial A, E, B (PEFT's, copied into ours), see
the same batches and run AdamW with the same parameters in the same order. PEFT adds the orthogonal
regulariser inside its forward (the loss is computed by the model, labels are passed); we add
`orth_reg_weight * orthogonal_penalty(...)` to the task loss. After `optimizer.step()` and before
`zero_grad()`, PEFT gets `update_and_allocate(step)` and ours `RankAllocator.update(step)`, same 0-based step.

Tolerance on the loss curve: relative 1e-5. The two sides differ legitimately in two ways only: PEFT
scales dW by lora_alpha / (init_r + 1e-5) where we use lora_alpha / init_r (a relative 1e-5 / init_r,
about 2e-6 here, on the adapter branch, and less on the loss), and fp32 reassociation (the EMA update,
the triplet-score sum, the batched orthogonal penalty). Measured worst case over 4 seeds and learning
rates 5e-3 and 2e-2: 4e-7. One swapped triplet moves the loss by 1e-5 to 1e-3 within a few steps, so the
tolerance still catches a wrong mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
import transformers

peft = pytest.importorskip("peft")
from peft.tuners.adalora import SVDLinear as PeftSVDLinear  # noqa: E402

from adalora_core import AdaLoraConfig, RankAllocator, inject_adalora, orthogonal_penalty  # noqa: E402

TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
INIT_R, TARGET_R, LORA_ALPHA, ORTH = 6, 3, 8.0, 0.1
LR = 1e-2
LOSS_RTOL = 1e-5  # see the module docstring


@dataclass(frozen=True)
class Schedule:
    total_step: int
    tinit: int
    tfinal: int
    delta_t: int


# tinit > 0, tfinal > 0, deltaT > 1: allocations at 15, 20, ..., 40, the final one at 45, then 14 frozen steps.
BUDGETING = Schedule(total_step=60, tinit=10, tfinal=15, delta_t=5)
# tfinal = 0 (and tinit = 0): PEFT never enters its final phase; we prune to the target on the last step.
NO_FINAL_PHASE = Schedule(total_step=32, tinit=0, tfinal=0, delta_t=5)


@dataclass
class Trace:
    """What each side did, step by step. Allocations: {step: (budget, {module: [kept] * init_r})}."""

    schedule: Schedule
    peft_losses: list[float] = field(default_factory=list)
    our_losses: list[float] = field(default_factory=list)
    peft_allocations: dict[int, tuple[int, dict[str, list[bool]]]] = field(default_factory=dict)
    our_allocations: dict[int, tuple[int, dict[str, list[bool]]]] = field(default_factory=dict)
    our_final_step: int | None = None
    peft_zeroed: list[bool] = field(default_factory=list)  # per allocation: pruned E entries exactly zero
    our_zeroed: list[bool] = field(default_factory=list)


def tiny_bert(seed: int = 0) -> transformers.BertForSequenceClassification:
    """2 layers, hidden 32, no dropout (so the two sides consume no RNG during training)."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, num_labels=2, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)


def batches(n: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Label = token 7 occurs or the first token is above 50: learnable, so the loss falls."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 100, (16, 12), generator=g)
        labels = ((ids == 7).any(dim=1) | (ids[:, 0] > 50)).long()
        out.append({"input_ids": ids, "labels": labels})
    return out


def run_side_by_side(s: Schedule) -> Trace:
    peft_model = peft.get_peft_model(tiny_bert(), peft.AdaLoraConfig(
        task_type="SEQ_CLS", init_r=INIT_R, target_r=TARGET_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
        target_modules=TARGETS, tinit=s.tinit, tfinal=s.tfinal, deltaT=s.delta_t, total_step=s.total_step,
        orth_reg_weight=ORTH))
    config = AdaLoraConfig(init_r=INIT_R, target_r=TARGET_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS,
                           tinit=s.tinit, tfinal=s.tfinal, delta_t=s.delta_t, orth_reg_weight=ORTH,
                           init="gaussian", e_lr_multiplier=1.0, budget_unit="ranks", scaling="standard",
                           orth_target="orthonormal")  # the paper's and PEFT's
    ours = inject_adalora(tiny_bert(), config)
    theirs = {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules()
              if isinstance(m, PeftSVDLinear)}
    assert list(theirs) == list(ours.modules), "both sides must adapt the same modules, in the same order"

    peft_params, our_params = [], []
    with torch.no_grad():
        for name, module in ours.modules.items():
            for key in ("lora_A", "lora_E", "lora_B"):
                theirs_p, ours_p = getattr(theirs[name], key)["default"], getattr(module, key)
                ours_p.copy_(theirs_p)
                peft_params.append(theirs_p)
                our_params.append(ours_p)
    # The classifier head: PEFT trains a copy (modules_to_save), we train it in place; same values, same order.
    peft_params += [p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n]
    our_params += [p for n, p in ours.model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert len(peft_params) == len(our_params)
    assert all(torch.equal(a, b) for a, b in zip(peft_params, our_params))
    peft_opt, our_opt = torch.optim.AdamW(peft_params, lr=LR), torch.optim.AdamW(our_params, lr=LR)
    allocator = RankAllocator(ours.modules, config, s.total_step)
    peft_config = peft_model.peft_config["default"]
    modules = list(ours.modules.values())

    trace = Trace(s)
    peft_model.train()
    ours.model.train()
    for step, batch in enumerate(batches(s.total_step)):
        loss = peft_model(**batch).loss  # the orthogonal term is already inside
        loss.backward()
        peft_opt.step()
        before = peft_config.rank_pattern
        peft_model.base_model.update_and_allocate(step)
        if peft_config.rank_pattern is not before:  # PEFT publishes a new pattern exactly when it allocates
            pattern = {n: peft_config.rank_pattern[f"{n}.lora_E.default"] for n in ours.modules}
            budget = peft_model.base_model.rankallocator.budget_schedule(step)[0]
            trace.peft_allocations[step] = (budget, pattern)
            trace.peft_zeroed.append(all(
                bool((theirs[n].lora_E["default"][~torch.tensor(keep)] == 0).all()) for n, keep in pattern.items()))
        peft_opt.zero_grad()
        trace.peft_losses.append(loss.item())

        loss = ours.model(**batch).loss + ORTH * orthogonal_penalty(modules, config.orth_target)
        loss.backward()
        our_opt.step()
        allocation = allocator.update(step)
        if allocation is not None:
            pattern = allocator.rank_pattern()
            trace.our_allocations[step] = (allocation.budget, pattern)
            trace.our_zeroed.append(all(
                bool((ours.modules[n].lora_E[~torch.tensor(keep)] == 0).all()) for n, keep in pattern.items()))
            if allocation.final:
                trace.our_final_step = step
        our_opt.zero_grad()
        trace.our_losses.append(loss.item())
    return trace


@pytest.fixture(scope="module")
def budgeting() -> Trace:
    return run_side_by_side(BUDGETING)


def budgeting_steps(trace: Trace) -> list[int]:
    """Allocation steps before the final one (where the masks freeze)."""
    return [step for step in trace.our_allocations if step != trace.our_final_step]


def mismatches(a: dict[str, list[bool]], b: dict[str, list[bool]]) -> dict[str, tuple[list[bool], list[bool]]]:
    return {name: (a[name], b[name]) for name in a if a[name] != b[name]}


def test_allocates_at_the_same_steps_as_peft_with_the_same_budgets(budgeting):
    s = budgeting.schedule
    assert sorted(budgeting.our_allocations) == sorted(budgeting.peft_allocations)
    assert sorted(budgeting.our_allocations) == [15, 20, 25, 30, 35, 40, 45]
    assert budgeting.our_final_step == s.total_step - s.tfinal
    for step, (budget, pattern) in budgeting.our_allocations.items():
        peft_budget, peft_pattern = budgeting.peft_allocations[step]
        assert budget == peft_budget, f"step {step}"
        assert sum(map(sum, pattern.values())) == budget, f"step {step}: our mask keeps a different total rank"
        assert sum(map(sum, peft_pattern.values())) == budget, f"step {step}: PEFT's mask keeps a different total"


def test_rank_pattern_matches_peft_at_every_budgeting_allocation(budgeting):
    steps = budgeting_steps(budgeting)
    assert len(steps) == 6
    for step in steps:
        ours, theirs = budgeting.our_allocations[step][1], budgeting.peft_allocations[step][1]
        assert not mismatches(ours, theirs), f"step {step}: {mismatches(ours, theirs)}"


def test_final_rank_pattern_and_frozen_phase_match_peft(budgeting):
    final = budgeting.our_final_step
    ours, theirs = budgeting.our_allocations[final][1], budgeting.peft_allocations[final][1]
    assert not mismatches(ours, theirs), f"final step {final}: {mismatches(ours, theirs)}"
    frozen = slice(final + 1, None)
    assert budgeting.our_losses[frozen] == pytest.approx(budgeting.peft_losses[frozen], rel=LOSS_RTOL)


def test_loss_curve_matches_peft_through_the_budgeting_phase(budgeting):
    # Losses are taken before each step's allocation, so steps 0..final all train under identical masks.
    upto = slice(0, budgeting.our_final_step + 1)
    assert budgeting.our_losses[upto] == pytest.approx(budgeting.peft_losses[upto], rel=LOSS_RTOL)


def test_parity_run_prunes_unevenly_and_learns(budgeting):
    """Guards against a vacuous parity: ranks really move, unevenly, pruned values are zero, the loss falls."""
    final_budget, final_pattern = budgeting.our_allocations[budgeting.our_final_step]
    n_modules = len(final_pattern)
    assert final_budget == TARGET_R * n_modules < INIT_R * n_modules
    ranks = {sum(keep) for keep in final_pattern.values()}
    assert len(ranks) > 1, "every module kept the same rank: the scores decided nothing"
    assert all(budgeting.our_zeroed) and all(budgeting.peft_zeroed)
    first, last = budgeting.our_losses[:5], budgeting.our_losses[-5:]
    assert sum(last) / 5 < sum(first) / 5 - 0.05


def test_without_final_phase_matches_peft_and_adds_a_last_step_prune_to_target():
    """tfinal = 0: PEFT's step T - tfinal never comes, so it only allocates when step % deltaT == 0 on the cubic
    (which need not have reached target_r). Ours match those, then also prune to exactly the target on the
    last step (BudgetSchedule.final_step), so a run always ends at target_r."""
    trace = run_side_by_side(NO_FINAL_PHASE)
    s = trace.schedule
    assert trace.our_final_step == s.total_step - 1
    assert sorted(trace.peft_allocations) == [5, 10, 15, 20, 25, 30]  # step % deltaT == 0 while budgeting
    assert sorted(trace.our_allocations) == [5, 10, 15, 20, 25, 30, 31]
    for step in budgeting_steps(trace):
        assert trace.our_allocations[step][0] == trace.peft_allocations[step][0], f"step {step}"
        ours, theirs = trace.our_allocations[step][1], trace.peft_allocations[step][1]
        assert not mismatches(ours, theirs), f"step {step}: {mismatches(ours, theirs)}"
    n_modules = len(trace.our_allocations[31][1])
    assert trace.our_allocations[31][0] == TARGET_R * n_modules
    assert trace.our_losses == pytest.approx(trace.peft_losses, rel=LOSS_RTOL)  # no frozen phase to diverge in
