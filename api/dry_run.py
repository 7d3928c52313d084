"""A dry run: what a spec would train, computed on the model's architecture (meta tensors, no weights read).

Imported lazily by the jobs router: it pulls in torch and transformers, which the API does not load otherwise.
"""

from __future__ import annotations

from adalora_core import AdaLoraConfig, ConfigError, TrainArgs, build_model, plan_run

from api.errors import SpecError
from api.schemas import DryRunPublic
from service.datafiles import DataError, count_training_rows
from service.jobspec import JobSpec


def plan_job(spec: JobSpec) -> DryRunPublic:
    total_steps, basis = _total_steps(spec)
    try:
        config = AdaLoraConfig(**spec.to_adalora_kwargs())
    except ConfigError as exc:
        raise SpecError("budget", str(exc)) from exc
    try:
        model = build_model(spec.model_source(), spec.task, empty=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SpecError("model", f"cannot read the configuration of {spec.model!r} ({_first_line(exc)}); name a "
                                 "model this server has cached or a folder inside MODEL_DIRS") from exc
    try:
        plan = plan_run(model, config, total_step=total_steps)
    except ConfigError as exc:
        raise SpecError(_field_of(str(exc)), str(exc)) from exc
    return DryRunPublic(model=spec.model, total_steps=plan.pop("total_step"), total_steps_from=basis, **plan)


def _total_steps(spec: JobSpec) -> tuple[int, str]:
    """The run length, and how it was found: it is fixed by max_steps, otherwise by the number of examples."""
    if spec.training.max_steps is not None:
        return spec.training.max_steps, "training.max_steps"
    try:
        n_train = count_training_rows(spec)  # the worker's own reading and hold-out rules
    except DataError as exc:
        raise SpecError("dataset", str(exc)) from exc
    try:
        return TrainArgs(**spec.to_train_kwargs()).total_steps(n_train), f"{n_train} training rows counted"
    except ConfigError as exc:
        raise SpecError("training.batch_size", str(exc)) from exc


def _field_of(message: str) -> str:
    if "target_modules" in message:
        return "budget.target_modules"
    if "tinit" in message or "tfinal" in message:
        return "schedule"
    return "budget"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
