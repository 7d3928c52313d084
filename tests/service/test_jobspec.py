"""Job specs: errors name the field and the fix; paths never leave the allow-listed folders."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.jobspec import JobSpec
from tests.conftest import reset_service_caches, tiny_job_spec


@pytest.fixture(autouse=True)
def allow_listed(monkeypatch, tiny_model_dir, tiny_dataset_file):
    monkeypatch.setenv("MODEL_DIRS", str(tiny_model_dir.parent))
    monkeypatch.setenv("DATA_DIRS", str(tiny_dataset_file.parent))
    monkeypatch.setenv("MAX_STEPS_CAP", "1000")
    reset_service_caches()
    yield
    reset_service_caches()


def errors(spec: dict) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


def with_changes(**sections) -> dict:
    spec = tiny_job_spec()
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


def test_the_tiny_spec_resolves_to_the_allow_listed_folders(tiny_model_dir, tiny_dataset_file):
    spec = JobSpec.model_validate(tiny_job_spec())
    assert spec.model_source() == str(tiny_model_dir)
    assert spec.dataset.resolved_path() == tiny_dataset_file and spec.dataset.format == "csv"
    assert spec.training.epochs is None and spec.to_train_kwargs()["max_steps"] == 24


def test_a_hub_id_is_accepted_as_it_is():
    spec = JobSpec.model_validate(with_changes(model="google-bert/bert-base-uncased"))
    assert spec.model_source() == "google-bert/bert-base-uncased"


@pytest.mark.parametrize("model", ["../tiny-bert", "/etc", "/etc/../tmp", "a/b/c d"])
def test_models_outside_model_dirs_are_rejected(model):
    [(loc, message)] = errors(with_changes(model=model))
    assert loc == ("model",)
    assert "MODEL_DIRS" in message or "'..'" in message


@pytest.mark.parametrize("path", ["../sentiment.csv", "/etc/passwd", "missing.csv"])
def test_dataset_files_outside_data_dirs_are_rejected(path):
    [(loc, message)] = errors(with_changes(dataset={"path": path}))
    assert loc == ("dataset", "server", "path") and "dataset.path" in message


def test_a_typo_is_an_error_not_a_silent_default():
    [(loc, message)] = errors(with_changes(training={"learning_rte": 1e-3}))
    assert loc == ("training", "learning_rte") and "Extra inputs" in message


def test_the_budget_takes_at_most_one_target():
    [(loc, message)] = errors(with_changes(budget={"target_r": 2, "target_params": 1000}))
    assert loc == ("budget",) and "not both" in message
    [(loc, message)] = errors(with_changes(budget={"init_r": 4, "target_r": 6}))
    assert "lower target_r or raise init_r" in message


def test_a_schedule_longer_than_the_run_names_the_fix():
    [(loc, message)] = errors(with_changes(schedule={"tinit": 10, "tfinal": 14}))
    assert loc == () and "lower tinit or tfinal, or train longer" in message


def test_max_steps_above_the_server_cap_is_rejected():
    [(loc, message)] = errors(with_changes(training={"max_steps": 5000}))
    assert "cap of 1000" in message


def test_epochs_and_max_steps_are_exclusive_and_epochs_default_to_one():
    [(_, message)] = errors(with_changes(training={"epochs": 2, "max_steps": 10}))
    assert "epochs or max_steps, not both" in message
    spec = tiny_job_spec()
    del spec["training"]["max_steps"]
    assert JobSpec.model_validate(spec).to_train_kwargs()["epochs"] == 1.0


def test_an_unknown_suffix_asks_for_the_format(tiny_dataset_file):
    odd = tiny_dataset_file.with_name("sentiment.data")
    odd.write_text(tiny_dataset_file.read_text())
    [(_, message)] = errors(with_changes(dataset={"path": odd.name}))
    assert "set format to csv, tsv, jsonl or json" in message
    assert JobSpec.model_validate(with_changes(dataset={"path": odd.name, "format": "csv"})).dataset.format == "csv"


def test_kwargs_build_the_core_config_and_train_args():
    core = pytest.importorskip("adalora_core")
    spec = JobSpec.model_validate(tiny_job_spec())
    config = core.AdaLoraConfig(**spec.to_adalora_kwargs())
    args = core.TrainArgs(**spec.to_train_kwargs())
    assert (config.init_r, config.target_r, config.delta_t) == (4, 2, 2)
    assert (args.max_steps, args.batch_size, args.learning_rate) == (24, 8, 5e-3)


def test_column_names_only_for_delimited_files(tiny_dataset_file):
    jsonl = tiny_dataset_file.with_name("rows.jsonl")
    jsonl.write_text('{"sentence": "good", "label": "positive"}\n')
    [(_, message)] = errors(with_changes(dataset={"path": jsonl.name, "column_names": ["a"]}))
    assert "only csv and tsv files can lack a header row" in message


@pytest.mark.parametrize("path", ["csv", "json", "imdb", "a/b/c", "/etc/x"])
def test_hub_datasets_must_be_org_slash_name(path):
    [(loc, message)] = errors(with_changes(dataset={"source": "hub", "path": path}))
    assert loc == ("dataset", "hub", "path") and "like `org/name`" in message


def test_hub_ids_that_name_a_local_folder_are_refused(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the hub loaders would read ./org/name from the worker's folder
    [(_, message)] = errors(with_changes(dataset={"source": "hub", "path": "org/name"}))
    assert "names a folder on this server" in message
    [(_, message)] = errors(with_changes(model="org/name"))
    assert "names a folder on this server" in message


def test_a_job_that_names_only_its_target_gets_the_cores_benchmarked_defaults():
    """The job spec's defaults are the core's (chosen by bench/quality.py): one set of defaults, not two."""
    from adalora_core import AdaLoraConfig

    spec = tiny_job_spec()
    spec["budget"], spec["schedule"] = {"target_r": 2}, {}
    job = AdaLoraConfig(**JobSpec.model_validate(spec).to_adalora_kwargs())
    core = AdaLoraConfig(target_r=2)
    assert job.to_dict() == core.to_dict()


def test_a_spec_without_a_budget_gets_the_documented_one():
    spec = dict(with_changes())
    del spec["budget"]
    budget = JobSpec.model_validate(spec).budget
    assert (budget.init_r, budget.target_r, budget.target_params, budget.unit) == (12, 8.0, None, "params")
    assert JobSpec.model_validate({**spec, "budget": {"init_r": 3}}).budget.target_r == 2.0
    assert JobSpec.model_validate({**spec, "budget": {"init_r": 1}}).budget.target_r == 1.0


def test_compile_and_checkpointing_take_true_false_or_auto():
    default = JobSpec.model_validate(tiny_job_spec())
    assert (default.training.compile, default.training.gradient_checkpointing) == ("auto", "auto")
    assert default.to_train_kwargs()["compile"] == "auto"
    asked = JobSpec.model_validate(with_changes(training={"compile": True, "gradient_checkpointing": False}))
    assert asked.to_train_kwargs()["compile"] is True and "gradient_checkpointing" not in asked.to_train_kwargs()
    for field in ("compile", "gradient_checkpointing"):
        assert any(loc[:2] == ("training", field) for loc, _ in errors(with_changes(training={field: "sometimes"})))
