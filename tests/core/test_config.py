import pytest

from adalora_core import AdaLoraConfig, ConfigError, TrainArgs


@pytest.mark.parametrize("kwargs,fix", [
    (dict(total_step=10, tinit=5, tfinal=5), "lower tinit or tfinal, or train longer"),
    (dict(target_r=16, init_r=8), "lower target_r or raise init_r"),
    (dict(target_r=4, target_params=1000), "give one budget"),
    (dict(scaling="sqrt"), "scaling must be rank_stabilized or standard"),
    (dict(beta1=1.0), "beta1 must be strictly between 0 and 1"),
    (dict(delta_t=0), "delta_t must be >= 1"),
    (dict(init_r=0, target_r=0), "raise init_r"),
    (dict(orth_reg_weight=-1), "orth_reg_weight must be >= 0"),
    (dict(init="kaiming"), "init must be lora, svd, orthogonal or gaussian"),
    (dict(target_r=None, target_params=10, budget_unit="ranks"), "target_params is a parameter budget"),
    (dict(budget_unit="triplets"), "budget_unit must be params or ranks"),
    (dict(tinit=2.5), "neither a fraction"),
])
def test_invalid_config_names_the_fix(kwargs, fix):
    with pytest.raises(ConfigError, match=fix):
        config = AdaLoraConfig(**kwargs)
        config.schedule_steps(100)


def test_fractions_are_of_the_total_step():
    assert AdaLoraConfig(tinit=0.1, tfinal=0.25).schedule_steps(200) == (20, 50)
    assert AdaLoraConfig(tinit=3, tfinal=4).schedule_steps(200) == (3, 4)


def test_train_args_errors_and_step_count():
    assert TrainArgs(batch_size=8, epochs=2).total_steps(64) == 16
    assert TrainArgs(batch_size=8, grad_accum=3, epochs=1).total_steps(64) == 3
    with pytest.raises(ConfigError, match="fewer than batch_size"):
        TrainArgs(batch_size=32).total_steps(10)
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainArgs(learning_rate=0)


def test_without_a_budget_two_thirds_of_the_starting_ranks_are_kept():
    assert AdaLoraConfig(init_r=12).target_r == 8 and AdaLoraConfig(init_r=6).target_r == 4
    assert AdaLoraConfig(init_r=1).target_r == 1


@pytest.mark.parametrize("init_r", [4, 12, 64, 256])
def test_the_default_scale_shrinks_with_the_square_root_of_init_r_not_with_init_r(init_r):
    rs = AdaLoraConfig(init_r=init_r, lora_alpha=8)
    paper = AdaLoraConfig(init_r=init_r, lora_alpha=8, scaling="standard")
    assert rs.scale == pytest.approx(8 / init_r ** 0.5) and paper.scale == pytest.approx(8 / init_r)
    assert rs.scale_warning() is None  # the defaults never warn, whatever init_r


def test_a_scale_far_from_the_defaults_is_named_with_the_alpha_that_fixes_it():
    # PEFT's AdaLoRA shape that lost to LoRA: init_r 64, alpha 8, scaled by alpha / init_r.
    warning = AdaLoraConfig(init_r=64, lora_alpha=8, scaling="standard").scale_warning()
    assert "0.125" in warning and "trains slowly" in warning and "lora_alpha to about 64" in warning
    assert "may diverge" in AdaLoraConfig(init_r=4, lora_alpha=100).scale_warning()
    assert AdaLoraConfig(init_r=64, lora_alpha=64, scaling="standard").scale_warning() is None
