import math

import pytest
import torch

from adalora_core import AdaLoraConfig, ConfigError, TrainArgs, TrainCallbacks, build_model, plan_run, train
from tests.core.tiny import classification_data, collate


class Recorder(TrainCallbacks):
    def __init__(self, stop_at=None):
        self.metrics, self.allocations, self.events, self.checkpoints = [], [], [], []
        self.stop_at = stop_at
        self.starts = []
        self.start_metrics = None

    def on_start(self, total_steps, plan):
        self.starts.append((total_steps, plan, len(self.metrics)))

    def on_metrics(self, step, metrics):
        if step == 0:  # the evaluation before training
            self.start_metrics = metrics
            return
        self.metrics.append((step, metrics))

    def on_allocation(self, step, budget, ranks, final, params):
        self.allocations.append((step, budget, sum(ranks.values()), final))

    def on_event(self, level, message):
        self.events.append((level, message))

    def on_checkpoint(self, step, path):
        self.checkpoints.append((step, path))

    def should_stop(self):
        return self.stop_at is not None and len(self.metrics) >= self.stop_at


CONFIG = AdaLoraConfig(init_r=4, target_r=2, tinit=2, tfinal=3, delta_t=2, lora_dropout=0.1, budget_unit="ranks")


def run(bert_dir, callbacks=None, resume_from=None, clock=None, **overrides):
    args = dict(max_steps=16, batch_size=8, learning_rate=5e-2, seed=3)
    args.update(overrides)
    model = build_model(bert_dir, "sequence_classification")
    return train(model, CONFIG, TrainArgs(**args), classification_data(), collate,
                 eval_fn=lambda m: {"accuracy": 0.5}, callbacks=callbacks, resume_from=resume_from,
                 **({"clock": clock} if clock else {}))


def assert_same_training(ours, theirs):
    params = dict(ours.adapted.model.named_parameters())
    for name, p in theirs.adapted.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(params[name], p), name
    assert ours.rank_pattern == theirs.rank_pattern


def test_callbacks_see_every_step_and_a_budget_falling_from_init_to_target(bert_dir):
    rec = Recorder()
    result = run(bert_dir, rec, eval_every=5)
    assert [s for s, _ in rec.metrics] == list(range(1, 17))
    assert {"loss", "lr", "budget", "orth_loss", "grad_norm"} <= set(rec.metrics[0][1])
    assert [s for s, m in rec.metrics if "eval_accuracy" in m] == [5, 10, 15, 16]
    budgets = [b for _, b, _, _ in rec.allocations]
    assert budgets[0] < 48 and budgets[-1] == 24 and budgets == sorted(budgets, reverse=True)
    assert all(kept == b for _, b, kept, _ in rec.allocations)
    # The mask freezes at 0-based step T - tfinal (PEFT's convention), reported 1-based.
    assert rec.allocations[-1][3] and rec.allocations[-1][0] == 16 - 3 + 1
    assert result.step == 16 and not result.stopped
    # No attention mask: every input token is trained, 8 rows of 8 per step.
    assert [m["tokens"] for _, m in rec.metrics] == [64.0 * step for step in range(1, 17)]
    assert all(m["tokens_per_s"] > 0 for _, m in rec.metrics)


def ragged_data() -> list[dict]:
    """classification_data with rows of 2 to 8 tokens: padded batches, and a different count in every one."""
    return [{**row, "input_ids": row["input_ids"][:2 + i % 7]} for i, row in enumerate(classification_data())]


def pad_and_count(seen: list[int]):
    """A collate that pads to the longest row with an attention mask, recording each batch's real tokens."""
    def collate_padded(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])], mask[i, :len(r["input_ids"])] = r["input_ids"], 1
        seen.append(sum(len(r["input_ids"]) for r in rows))
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([r["labels"] for r in rows])}
    return collate_padded


def run_ragged(bert_dir, seen, callbacks=None, resume_from=None, **overrides):
    args = {"max_steps": 16, "batch_size": 8, "learning_rate": 5e-2, "seed": 3, **overrides}
    return train(build_model(bert_dir, "sequence_classification"), CONFIG, TrainArgs(**args), ragged_data(),
                 pad_and_count(seen), callbacks=callbacks, resume_from=resume_from)


def test_tokens_count_the_non_padding_tokens_of_every_micro_batch(bert_dir):
    seen, rec = [], Recorder()
    run_ragged(bert_dir, seen, rec, grad_accum=2, batch_size=4, max_steps=12)
    # Two micro-batches a step, of different counts, in the order collated (a loader may collate a few ahead).
    assert len(seen) >= 24 and len(set(seen[:24])) > 1
    per_step = [seen[i] + seen[i + 1] for i in range(0, 24, 2)]
    assert [m["tokens"] for _, m in rec.metrics] == [float(sum(per_step[:k])) for k in range(1, 13)]


def test_a_resumed_run_continues_the_token_count_exactly(bert_dir, tmp_path):
    full = Recorder()
    run_ragged(bert_dir, [], full, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=6)
    counts = [m["tokens"] for _, m in full.metrics]
    resumed = Recorder()
    run_ragged(bert_dir, [], resumed, resume_from=full.checkpoints[0][1])
    assert [m["tokens"] for _, m in resumed.metrics] == counts[6:]
    # A checkpoint written before tokens were counted still resumes; its count starts at the resume.
    old = torch.load(full.checkpoints[0][1], weights_only=False)
    del old["tokens"]
    torch.save(old, tmp_path / "old.pt")
    again = Recorder()
    run_ragged(bert_dir, [], again, resume_from=str(tmp_path / "old.pt"))
    assert [m["tokens"] for _, m in again.metrics] == [c - counts[5] for c in counts[6:]]


def test_the_run_reports_its_length_and_plan_once_before_the_first_step(bert_dir):
    rec = Recorder()
    run(bert_dir, callbacks=rec, max_steps=None, epochs=2)  # 64 rows / batch 8 x 2 epochs
    [(total, plan, steps_before)] = rec.starts
    assert (total, steps_before) == (16, 0)
    # the same plan a dry run makes on a model without weights
    assert plan == plan_run(build_model(bert_dir, "sequence_classification", empty=True), CONFIG, 16)
    assert plan["budget_init"] == 4 * plan["adapted_modules"] and plan["schedule"][-1][1] == plan["budget_final"]


def test_training_moves_adapters_and_head_but_never_the_base_weights(bert_dir):
    before = {n: p.clone() for n, p in build_model(bert_dir, "sequence_classification").named_parameters()}
    result = run(bert_dir)
    after = dict(result.adapted.model.named_parameters())
    for name, value in before.items():
        wrapped = name if name in after else name.rsplit(".", 1)[0] + ".base." + name.rsplit(".", 1)[1]
        if name.startswith("classifier."):
            assert not torch.equal(after[wrapped], value), f"{name} should have trained"
        else:
            assert torch.equal(after[wrapped], value), f"{name} is frozen and must not change"
    for name, keep in result.rank_pattern.items():
        e = result.adapted.modules[name].lora_E.detach().view(-1)
        assert torch.all(e[~torch.tensor(keep)] == 0), "pruned singular values are exactly zero"
        assert torch.all(e[torch.tensor(keep)] != 0)


def test_should_stop_ends_the_run_at_a_step_boundary(bert_dir):
    rec = Recorder(stop_at=5)
    result = run(bert_dir, rec)
    assert result.stopped and result.step == 5 and len(rec.metrics) == 5


def test_gradient_accumulation_counts_optimizer_steps(bert_dir):
    rec = Recorder()
    run(bert_dir, rec, grad_accum=2, max_steps=8, batch_size=4)
    assert [s for s, _ in rec.metrics] == list(range(1, 9))
    assert rec.allocations[-1][0] == 8 - 3 + 1 and rec.allocations[-1][3]


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run_bitwise_on_cpu(bert_dir, tmp_path):
    full = run(bert_dir, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=6)
    rec = Recorder()
    run(bert_dir, rec, checkpoint_dir=str(tmp_path / "b"), checkpoint_every=6)
    step, path = rec.checkpoints[0]
    assert step == 6
    resumed = run(bert_dir, checkpoint_dir=str(tmp_path / "c"), resume_from=path)
    # Same data order, RNG (dropout), optimizer, scheduler and allocator state: identical bits on CPU.
    assert_same_training(resumed, full)


def test_a_slow_stretch_triggers_a_timed_checkpoint_that_resumes_exactly(bert_dir, tmp_path):
    rec = Recorder()
    # A fake clock read at step boundaries: the 7th step takes 1000 s, every other step takes no time.
    clock = lambda: 1000.0 if len(rec.metrics) >= 7 else 0.0  # noqa: E731
    run(bert_dir, rec, clock=clock, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=5,
        checkpoint_every_seconds=600)
    # 5: five steps; 7: 1000 s since step 5; 12: five steps since 7 (not 10: the counts restart at 7); the
    # last step (16) never writes one.
    assert [step for step, _ in rec.checkpoints] == [5, 7, 12]
    resumed = run(bert_dir, resume_from=rec.checkpoints[1][1])
    assert_same_training(resumed, run(bert_dir))


def test_time_only_checkpoints_and_their_arguments_are_checked(bert_dir, tmp_path):
    rec = Recorder()
    run(bert_dir, rec, clock=lambda: 25.0 * len(rec.metrics), checkpoint_dir=str(tmp_path),
        checkpoint_every_seconds=60)
    assert [step for step, _ in rec.checkpoints] == [3, 6, 9, 12, 15]  # 75 s apart: the first step past 60 s
    with pytest.raises(ValueError, match="need checkpoint_dir"):
        TrainArgs(max_steps=4, checkpoint_every_seconds=60)
    with pytest.raises(ValueError, match="must be > 0"):
        TrainArgs(max_steps=4, checkpoint_every_seconds=0, checkpoint_dir=str(tmp_path))


def test_resume_refuses_a_checkpoint_from_another_configuration(bert_dir, tmp_path):
    rec = Recorder()
    run(bert_dir, rec, checkpoint_dir=str(tmp_path), checkpoint_every=6)
    with pytest.raises(ValueError, match="different configuration"):
        run(bert_dir, max_steps=20, resume_from=rec.checkpoints[0][1])


def test_batch_order_hook_sets_the_batches_and_resumes_exactly(bert_dir, tmp_path):
    seen = []

    def collate_and_record(rows):
        seen.append(tuple(int(r["labels"]) for r in rows))
        return collate(rows)

    def by_label(epoch):  # all-even batches then all-odd ones: a stand-in for grouping by length
        evens, odds = list(range(0, 64, 2)), list(range(1, 64, 2))
        return [evens[i:i + 8] for i in range(0, 32, 8)] + [odds[i:i + 8] for i in range(0, 32, 8)]

    model = build_model(bert_dir, "sequence_classification")
    train(model, CONFIG, TrainArgs(max_steps=16, batch_size=8, learning_rate=5e-2), classification_data(),
          collate_and_record, batch_order=by_label)
    assert all(len(set(labels)) == 1 for labels in seen)
    with pytest.raises(ValueError, match="expected 8"):
        train(build_model(bert_dir, "sequence_classification"), CONFIG,
              TrainArgs(max_steps=16, batch_size=8, learning_rate=5e-2), classification_data(), collate,
              batch_order=lambda epoch: by_label(epoch)[:3])


def test_a_diverged_loss_stops_the_run_naming_the_step(bert_dir):
    from adalora_core import TrainingDiverged

    rec = Recorder()
    with pytest.raises(TrainingDiverged, match=r"became nan at step \d+: the run diverged; lower the learning rate"):
        run(bert_dir, rec, learning_rate=1e9, max_grad_norm=None, warmup_ratio=0.0)
    assert all(math.isfinite(m["loss"]) for _, m in rec.metrics), "no non-finite loss is reported"


def test_a_run_that_evaluates_scores_the_untrained_model_at_step_0_before_any_update(bert_dir):
    seen = []

    def eval_fn(model):
        seen.append(sum(float(p.abs().sum()) for n, p in model.named_parameters() if "lora_B" in n))
        return {"accuracy": 0.25 * len(seen)}

    rec = Recorder()
    model = build_model(bert_dir, "sequence_classification")
    train(model, CONFIG, TrainArgs(max_steps=8, batch_size=8, learning_rate=5e-2), classification_data(), collate,
          eval_fn=eval_fn, callbacks=rec)
    assert rec.start_metrics == {"eval_accuracy": 0.25}
    assert seen[0] == 0.0 < seen[-1]  # init "lora": B = 0 before the first step, trained after
    assert rec.metrics[-1][1]["eval_accuracy"] == 0.5


def test_a_resumed_run_does_not_evaluate_step_0_again(bert_dir, tmp_path):
    rec = Recorder()
    run(bert_dir, rec, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=6)
    again = Recorder()
    run(bert_dir, again, checkpoint_dir=str(tmp_path / "b"), resume_from=rec.checkpoints[0][1])
    assert rec.start_metrics is not None and again.start_metrics is None


def test_learning_rate_auto_probes_then_trains_exactly_as_with_the_rate_it_chose(bert_dir):
    rec = Recorder()
    auto = run(bert_dir, rec, learning_rate="auto", max_steps=40)
    probe = auto.lr_probe
    assert probe is not None and 16 <= probe.steps <= 16 and probe.lrs[0] == 1e-5
    assert probe.learning_rate == pytest.approx(probe.lowest_at / 10, rel=1e-2)
    assert rec.starts[0][1]["lr_probe"]["learning_rate"] == probe.learning_rate
    assert any("learning rate auto" in message for _, message in rec.events)
    again = run(bert_dir, learning_rate="auto", max_steps=40)
    assert again.lr_probe.learning_rate == probe.learning_rate  # deterministic for a seed
    given = run(bert_dir, learning_rate=probe.learning_rate, max_steps=40)
    assert_same_training(auto, given)  # the probe left no trace: weights and random state put back


def test_learning_rate_auto_resumes_with_the_probed_rate(bert_dir, tmp_path):
    rec = Recorder()
    full = run(bert_dir, rec, learning_rate="auto", max_steps=40, checkpoint_dir=str(tmp_path / "a"),
               checkpoint_every=20)
    resumed = run(bert_dir, learning_rate="auto", max_steps=40, checkpoint_dir=str(tmp_path / "b"),
                  resume_from=rec.checkpoints[0][1])
    assert resumed.lr_probe is None
    assert_same_training(resumed, full)


@pytest.mark.parametrize("value", [0, -1e-3, "fast"])
def test_a_learning_rate_must_be_positive_or_auto(value):
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainArgs(learning_rate=value)


def test_metrics_read_every_few_steps_are_every_steps_own_and_resume_exactly(bert_dir, tmp_path):
    """metrics_every (a GPU's default is 10) defers the device reads, not the figures: every step is reported
    with its own values, evaluations and checkpoints read what is waiting first, and a stop still lands on a
    checkpoint that resumes bitwise."""
    every_step, batched = Recorder(), Recorder()
    reference = run(bert_dir, every_step, eval_every=5, metrics_every=1)
    run(bert_dir, batched, eval_every=5, metrics_every=4, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=6)
    assert [s for s, _ in batched.metrics] == list(range(1, 17))
    for (step, ours), (_, theirs) in zip(batched.metrics, every_step.metrics):
        assert {k: v for k, v in ours.items() if k != "tokens_per_s"} == \
            {k: v for k, v in theirs.items() if k != "tokens_per_s"}, step
    assert [s for s, _ in batched.checkpoints] == [6, 12]
    stopped = Recorder(stop_at=5)  # asked at steps 0, 4 and 8 only: the stop lands at step 8
    result = run(bert_dir, stopped, metrics_every=4, checkpoint_dir=str(tmp_path / "b"))
    assert result.stopped and result.step == 8 and [s for s, _ in stopped.metrics] == list(range(1, 9))
    assert_same_training(run(bert_dir, resume_from=batched.checkpoints[0][1], metrics_every=4), reference)


def test_evaluation_runs_under_the_training_autocast(bert_dir):
    seen = []

    def eval_fn(model):
        seen.append(torch.is_autocast_enabled("cpu"))
        return {"accuracy": 0.5}

    model = build_model(bert_dir, "sequence_classification")
    train(model, CONFIG, TrainArgs(max_steps=6, batch_size=8, bf16=True, device="cpu"), classification_data(), collate,
          eval_fn=eval_fn)
    assert seen == [True, True]  # step 0 and the end


@pytest.mark.slow  # inductor compiles C++ for the CPU: minutes on two cores
def test_compile_true_compiles_each_layer_and_trains_to_the_same_losses(bert_dir):
    def losses(compile_layers: bool) -> tuple[list[float], Recorder, object]:
        rec = Recorder()
        model = build_model(bert_dir, "sequence_classification")
        for module in model.modules():  # compiled dropout draws its own random numbers: compare without it
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        result = train(model, AdaLoraConfig(init_r=4, target_r=2, tinit=1, tfinal=1, delta_t=1),
                       TrainArgs(max_steps=4, batch_size=8, learning_rate=5e-2, compile=compile_layers),
                       classification_data(), collate, callbacks=rec)
        return [m["loss"] for _, m in rec.metrics], rec, result

    eager, eager_rec, _ = losses(False)
    compiled, compiled_rec, result = losses(True)
    assert ("info", "torch.compile on for each decoder layer (compile is true)") in compiled_rec.events
    assert all(layer._compiled_call_impl is not None for layer in result.adapted.model.bert.encoder.layer)
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert not any("torch.compile" in message for _, message in eager_rec.events)


def test_compile_auto_is_off_on_the_cpu_and_for_short_or_4bit_runs(bert_dir):
    from adalora_core.compile import compile_choice
    from adalora_core.config import COMPILE_AUTO_MIN_STEPS

    model = build_model(bert_dir, "sequence_classification")
    assert compile_choice("auto", "cpu", 10_000, model) == (False, "auto: compiling pays off on a GPU only")
    assert compile_choice("auto", "cuda", 100, model) == (
        False, f"auto: 100 steps are too few to repay compiling (it needs {COMPILE_AUTO_MIN_STEPS})")
    assert compile_choice("auto", "cuda", 1000, model) == (True, "auto: a GPU run of 1000 steps")
    assert compile_choice(False, "cuda", 1000, model) == (False, "compile is false")
    assert compile_choice(True, "cpu", 10, torch.nn.Linear(2, 2)) == (
        False, "the model has no repeated layers to compile")
    with pytest.raises(ConfigError, match="compile must be"):
        TrainArgs(compile="yes")
