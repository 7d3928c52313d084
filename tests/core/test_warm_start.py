"""train(warm_start=...): a new run starts from an earlier run's weights, rank pattern and importance scores,
with fresh optimizer state and its own schedule; a model that does not fit the saved state is refused."""

import pytest
import torch

from adalora_core import AdaLoraConfig, ConfigError, TrainArgs, TrainCallbacks, build_model, save_warm_start, train
from tests.core.tiny import classification_data, collate, trained_classifier


def test_a_warm_start_carries_weights_and_the_rank_pattern(bert_dir, tmp_path):
    first = trained_classifier(bert_dir, target_r=1.0)
    path = save_warm_start(str(tmp_path / "final.pt"), first)
    x = torch.randint(0, 100, (4, 8))
    with torch.no_grad():
        before = first.adapted.model.eval()(input_ids=x).logits
    # A vanishing LR and a budget that keeps every triplet: the carried ranks stay, the ones it regrows have
    # E = 0 (pruning zeroed them) and add nothing, so the model is the first run's.
    plans = []
    callbacks = TrainCallbacks()
    callbacks.on_start = lambda total, plan: plans.append(plan)
    second = train(build_model(bert_dir, "sequence_classification"),
                   AdaLoraConfig(init_r=4, target_r=4, tinit=2, tfinal=1, delta_t=2),
                   TrainArgs(max_steps=4, batch_size=8, learning_rate=1e-12), classification_data(), collate,
                   warm_start=path, callbacks=callbacks)
    assert plans[0]["ranks_init"] == {name: sum(keep) for name, keep in first.rank_pattern.items()}
    assert plans[0]["adapter_params_start"] == first.allocator.kept_params()
    with torch.no_grad():
        torch.testing.assert_close(second.adapted.model.eval()(input_ids=x).logits, before, rtol=0, atol=1e-5)
    assert second.config.target_r == 4  # its own schedule, not the first run's


def test_a_model_that_does_not_fit_the_saved_state_is_refused(bert_dir, tmp_path):
    path = save_warm_start(str(tmp_path / "final.pt"), trained_classifier(bert_dir))
    with pytest.raises(ConfigError, match="another shape"):
        train(build_model(bert_dir, "sequence_classification"), AdaLoraConfig(init_r=6, target_r=2, tinit=2,
              tfinal=3, delta_t=2), TrainArgs(max_steps=8, batch_size=8), classification_data(), collate,
              warm_start=path)
    with pytest.raises(ConfigError, match="task head of another shape"):
        train(build_model(bert_dir, "sequence_classification", num_labels=3), AdaLoraConfig(init_r=4, target_r=2,
              tinit=2, tfinal=3, delta_t=2), TrainArgs(max_steps=8, batch_size=8),
              [{**row, "labels": row["labels"] % 3} for row in classification_data()], collate, warm_start=path)


def test_a_checkpoint_of_an_unfinished_run_is_a_starting_point_too(bert_dir, tmp_path):
    model = build_model(bert_dir, "sequence_classification")
    config = AdaLoraConfig(init_r=4, target_r=2, tinit=2, tfinal=3, delta_t=2)
    first = train(model, config, TrainArgs(max_steps=16, batch_size=8, learning_rate=5e-2, checkpoint_every=8,
                                           checkpoint_dir=str(tmp_path / "ckpt")), classification_data(), collate)
    checkpoint = sorted((tmp_path / "ckpt").iterdir())[0]  # step 8: pruning has started
    saved = torch.load(checkpoint, weights_only=False)["allocator"]
    plans = []
    callbacks = TrainCallbacks()
    callbacks.on_start = lambda total, plan: plans.append(plan)
    second = train(build_model(bert_dir, "sequence_classification"), config,
                   TrainArgs(max_steps=16, batch_size=8, learning_rate=5e-2), classification_data(), collate,
                   warm_start=str(checkpoint), callbacks=callbacks)
    assert plans[0]["ranks_init"] == dict(zip(saved["names"], saved["mask"].sum(dim=1).tolist()))
    assert sum(plans[0]["ranks_init"].values()) < 4 * len(saved["names"])  # the carried pattern, not init_r
    assert second.step == first.step == 16
