"""Model ids and dataset paths never reach a file outside MODEL_DIRS / DATA_DIRS: parent steps in any spelling,
absolute paths, and symbolic links that lead out are refused with the field named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.jobspec import JobSpec
from tests.conftest import reset_service_caches, tiny_job_spec


@pytest.fixture
def roots(tmp_path, monkeypatch, tiny_model_dir, tiny_dataset_file) -> dict[str, Path]:
    """MODEL_DIRS and DATA_DIRS of this test's own, holding the tiny model and dataset, beside an `outside`
    folder with a model and a dataset that no job may name."""
    models, data, outside = tmp_path / "models", tmp_path / "data", tmp_path / "outside"
    shutil.copytree(tiny_model_dir, models / "tiny-bert")
    shutil.copytree(tiny_model_dir, outside / "secret-model")
    data.mkdir()
    shutil.copy(tiny_dataset_file, data / "sentiment.csv")
    shutil.copy(tiny_dataset_file, outside / "secret.csv")
    monkeypatch.setenv("MODEL_DIRS", str(models))
    monkeypatch.setenv("DATA_DIRS", str(data))
    reset_service_caches()
    yield {"models": models, "data": data, "outside": outside}
    monkeypatch.undo()
    reset_service_caches()


def refusal(spec: dict) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


def with_model(model: str) -> dict:
    return {**tiny_job_spec(), "model": model}


def with_data(path: str, field: str = "path") -> dict:
    spec = tiny_job_spec()
    return {**spec, "dataset": {**spec["dataset"], field: path}}


CLIMBS = ["..", "../x", "../../etc", "a/../../etc", "tiny-bert/../../outside/secret-model", "./../outside",
          "%2e%2e/etc", "..%2f..%2fetc", "%2e%2e%5c%2e%2e%5cetc",       # URL-encoded: never decoded, never a path
          "..\\..\\etc", "tiny-bert\\..\\..\\outside",                  # backslashes are no separators here
          "~/.ssh", "~root", "tiny-bert\x00/../../etc", "\x00"]


@pytest.mark.parametrize("model", CLIMBS + ["/", "/etc", "/etc/passwd", "{outside}/secret-model",
                                             "{models}/../outside/secret-model"])
def test_model_ids_that_climb_out_or_name_absolute_paths_are_refused(roots, model):
    model = model.format(**roots)
    [(loc, _message)] = refusal(with_model(model))
    assert loc == ("model",)


@pytest.mark.parametrize("path", CLIMBS + ["/etc/passwd", "{outside}/secret.csv", "{data}/../outside/secret.csv",
                                           "sentiment.csv/../../outside/secret.csv"])
@pytest.mark.parametrize("field", ["path", "validation_path"])
def test_dataset_paths_that_climb_out_or_name_absolute_paths_are_refused(roots, path, field):
    path = path.format(**roots)
    [(loc, message)] = refusal(with_data(path, field))
    assert loc == ("dataset", "server", field)
    assert f"dataset.{field}" in message or "null byte" in message  # the NUL ones fail in the OS call itself


def test_the_same_folders_named_the_allowed_way_are_accepted(roots):
    spec = JobSpec.model_validate({**with_data(str(roots["data"] / "sentiment.csv")),
                                   "model": str(roots["models"] / "tiny-bert")})
    assert spec.model_source() == str(roots["models"] / "tiny-bert")
    assert spec.dataset.resolved_path() == roots["data"] / "sentiment.csv"


@pytest.mark.parametrize("link,target", [("escape", "secret-model"), ("door/secret-model", "."),
                                         ("dangling", "gone")])
def test_a_symlink_in_model_dirs_that_leads_out_is_refused_not_taken_for_a_hub_id(roots, link, target):
    first = link.split("/")[0]
    (roots["models"] / first).symlink_to(roots["outside"] / target)
    [(loc, message)] = refusal(with_model(link))
    assert loc == ("model",) and "leads outside MODEL_DIRS" in message


def test_a_symlink_that_stays_inside_model_dirs_is_followed(roots):
    (roots["models"] / "alias").symlink_to(roots["models"] / "tiny-bert")
    assert JobSpec.model_validate(with_model("alias")).model_source() == str(roots["models"] / "tiny-bert")


@pytest.mark.parametrize("field", ["path", "validation_path"])
def test_a_symlinked_dataset_file_that_leads_out_is_refused(roots, field):
    (roots["data"] / "innocent.csv").symlink_to(roots["outside"] / "secret.csv")
    [(loc, message)] = refusal(with_data("innocent.csv", field))
    assert loc == ("dataset", "server", field) and "no file 'innocent.csv' inside the allowed data folders" in message


def test_a_traversal_over_the_api_is_422_naming_the_field_and_queues_nothing(client, alice):
    for model in ("../../etc", "/etc", "..%2fetc", "..\\etc"):
        response = client.post("/v1/jobs", json=with_model(model), headers=alice)
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["detail"]] == ["model"]
    assert client.get("/v1/jobs", headers=alice).json()["count"] == 0
