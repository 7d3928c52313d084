"""Model ids and dataset paths never reach a file outside MODEL_DIRS / DATA_DIRS: parent steps in any spelling,
absolute paths, and symbolic links that lead out are refused with the field named. What a user is told about
a model that cannot be used names it as they gave it, never a folder of the server."""

from __future__ import annotations

import json
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


# -- what a user is told about a model names it as given, never the server's folders -----------------

def assert_no_server_folder(text: str, roots: dict[str, Path]) -> None:
    base = roots["models"].parent  # the test's folder: MODEL_DIRS, DATA_DIRS and `outside` are inside it
    assert str(base) not in text and str(base.resolve()) not in text, text


@pytest.mark.parametrize("model", ["", " ", ".", "./", ".//."])
def test_names_of_the_model_dirs_root_itself_are_refused_naming_the_folders_there(roots, model):
    [(loc, message)] = refusal(with_model(model))
    assert loc == ("model",)
    assert "tiny-bert" in message, message  # the folders a user may name instead
    assert_no_server_folder(message, roots)


def test_a_folder_without_a_saved_model_is_refused_at_submission(roots):
    (roots["models"] / "notes").mkdir()
    [(loc, message)] = refusal(with_model("notes"))
    assert loc == ("model",) and "the folder 'notes' in MODEL_DIRS has no config.json" in message


@pytest.fixture
def odd_models(roots) -> dict[str, Path]:
    """Beside tiny-bert: a model that needs custom code, one whose only weights are a pickle next to an odd
    .safetensors file, and one whose safetensors weights have a name transformers does not load."""
    models = roots["models"]
    custom = shutil.copytree(models / "tiny-bert", models / "automap-custom")
    config = json.loads((custom / "config.json").read_text())
    config |= {"model_type": "my-bert", "auto_map": {"AutoConfig": "code.MyConfig",
                                                      "AutoModelForSequenceClassification": "code.MyModel"}}
    (custom / "config.json").write_text(json.dumps(config))
    decoy = shutil.copytree(models / "tiny-bert", models / "decoy")
    (decoy / "model.safetensors").rename(decoy / "notes.safetensors")
    (decoy / "pytorch_model.bin").write_bytes(b"not loaded")
    renamed = shutil.copytree(models / "tiny-bert", models / "renamed-weights")
    (renamed / "model.safetensors").rename(renamed / "weights.safetensors")
    return {"custom": custom, "decoy": decoy, "renamed": renamed}


def dry_run_problem(client, headers, model: str) -> str:
    response = client.post("/v1/jobs", json={**with_model(model), "dry_run": True}, headers=headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["field"] == "model"
    return error["message"]


def failed_job(client, headers, model: str) -> tuple[str, list[str]]:
    """Submits a job on `model`, runs it in this process as a worker would; its error and event messages."""
    from tests.api.conftest import drain_queue
    from worker.runner import claim_and_run

    drain_queue()
    response = client.post("/v1/jobs", json=with_model(model), headers=headers)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert drain_queue() == [job_id]
    assert claim_and_run(job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    events = client.get(f"/v1/jobs/{job_id}/events", headers=headers).json()["data"]
    return job["error"], [event["message"] for event in events]


def test_a_model_that_needs_custom_code_is_refused_saying_so(client, alice, roots, odd_models):
    message = dry_run_problem(client, alice, "automap-custom")
    assert message.startswith("'automap-custom' needs custom code (an auto_map in its config.json)"), message
    assert "never runs code that comes with a model" in message
    assert_no_server_folder(message, roots)
    error, events = failed_job(client, alice, "automap-custom")
    assert error.startswith("model 'automap-custom' needs custom code"), error
    assert error in events
    assert_no_server_folder(" ".join([error, *events]), roots)


def test_a_pickle_beside_an_odd_safetensors_file_is_refused_at_submission(client, alice, roots, odd_models):
    response = client.post("/v1/jobs", json=with_model("decoy"), headers=alice)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["field"] == "model" and "'decoy' has only pickle weights (pytorch_model.bin)" in error["message"]
    assert "model.safetensors or model.safetensors.index.json" in error["message"]
    assert_no_server_folder(error["message"], roots)


def test_weights_under_another_name_fail_the_job_naming_the_missing_file(client, alice, roots, odd_models):
    error, events = failed_job(client, alice, "renamed-weights")
    assert error.startswith("model 'renamed-weights' has no model.safetensors (nor a sharded "
                            "model.safetensors.index.json) in its folder"), error
    assert "safe_serialization=True" in error and error in events
    assert_no_server_folder(" ".join([error, *events]), roots)


def test_a_model_in_no_folder_and_no_reachable_hub_names_the_folders_there_are(client, alice, roots, odd_models):
    # HF_HUB_OFFLINE=1 (scripts/test.sh): the hub cannot be reached.
    message = dry_run_problem(client, alice, "nobody/no-such-model")
    assert message.startswith("'nobody/no-such-model' is not a folder in MODEL_DIRS (MODEL_DIRS holds "
                              "automap-custom, decoy, renamed-weights, tiny-bert)"), message
    assert "needs the Hugging Face hub, which this server cannot reach" in message
    assert "couldn't connect" not in message.lower()


def test_an_empty_model_name_is_refused_at_submission_not_in_the_worker(client, alice, roots):
    for model in ("", "."):
        response = client.post("/v1/jobs", json=with_model(model), headers=alice)
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["field"] == "model" and "tiny-bert" in error["message"]
        assert_no_server_folder(error["message"], roots)
    assert client.get("/v1/jobs", headers=alice).json()["count"] == 0


def test_server_folders_are_taken_out_of_error_texts(roots):
    from service.redaction import hide_server_paths

    text = (f"no file named model.safetensors found in directory {roots['models']}/decoy; "
            f"cannot open {roots['data'].resolve()}/sentiment.csv; {Path.home()}/.cache/x; "
            f"{roots['models']}-other stays")
    assert hide_server_paths(text) == ("no file named model.safetensors found in directory MODEL_DIRS/decoy; "
                                       "cannot open DATA_DIRS/sentiment.csv; …/.cache/x; "
                                       f"{roots['models']}-other stays")
