"""The job spec repeats the core's defaults (it must stay importable without torch): keep them equal."""

import dataclasses

from adalora_core import AdaLoraConfig, TrainArgs
from service.jobspec import Budget, Schedule, Training


def _defaults(model) -> dict:
    return {name: field.default for name, field in model.model_fields.items()}


def test_budget_and_schedule_defaults_equal_the_core_config():
    core = {f.name: f.default for f in dataclasses.fields(AdaLoraConfig)}
    spec = {**_defaults(Budget), **_defaults(Schedule)}
    shared = {k: v for k, v in spec.items() if k in core and k not in ("target_r",)}
    assert shared, "the spec and the core share no field names any more"
    assert shared == {k: core[k] for k in shared}


def test_training_defaults_equal_the_core_train_args():
    core = {f.name: f.default for f in dataclasses.fields(TrainArgs)}
    shared = {k: v for k, v in _defaults(Training).items() if k in core and k not in ("epochs", "max_steps")}
    assert shared == {k: core[k] for k in shared}
