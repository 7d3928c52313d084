"""Malformed specs are 422 with a list of {field, message}: the field by its dotted path, the message says
what to change. Nothing is stored or queued."""

import pytest

from tests.api.conftest import drain_queue, tiny_spec


def errors_for(client, headers, body) -> dict[str, str]:
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 422, response.text
    return {e["field"]: e["message"] for e in response.json()["detail"]}


def with_section(section: str, **values) -> dict:
    spec = tiny_spec()
    return {**spec, section: {**spec[section], **values}}


def test_wrong_type_names_the_nested_field(client, alice):
    errors = errors_for(client, alice, with_section("budget", init_r="twelve"))
    assert errors == {"budget.init_r": "Input should be a valid integer, unable to parse string as an integer"}


def test_unknown_fields_are_rejected_not_ignored(client, alice):
    errors = errors_for(client, alice, {**with_section("training", lr=0.1), "modle": "typo"})
    assert set(errors) == {"training.lr", "modle"}
    assert all("unknown field" in message for message in errors.values())


def test_missing_field_and_bad_choice(client, alice):
    spec = tiny_spec(task="regression")
    del spec["model"]
    errors = errors_for(client, alice, spec)
    assert errors["model"] == "required field is missing"
    assert "sequence_classification" in errors["task"]


def test_target_r_above_init_r_says_how_to_fix(client, alice):
    errors = errors_for(client, alice, with_section("budget", init_r=4, target_r=6))
    assert list(errors) == ["budget.target_r"]
    assert "lower target_r or raise init_r" in errors["budget.target_r"]


def test_both_budget_targets_is_ambiguous(client, alice):
    errors = errors_for(client, alice, with_section("budget", target_r=2, target_params=1000))
    assert list(errors) == ["budget"] and "not both" in errors["budget"]


def test_schedule_longer_than_the_run(client, alice):
    spec = with_section("schedule", tinit=10, tfinal=20)  # the tiny job trains 24 steps
    errors = errors_for(client, alice, spec)
    assert list(errors) == ["schedule"]
    assert "tinit + tfinal (10 + 20 steps)" in errors["schedule"] and "train longer" in errors["schedule"]


@pytest.mark.parametrize("model", ["../tiny-bert", "tiny-bert/../../etc", "/etc", "/etc/../tmp"])
def test_model_path_cannot_leave_the_model_folders(client, alice, model):
    errors = errors_for(client, alice, tiny_spec(model=model))
    assert list(errors) == ["model"], errors
    assert "MODEL_DIRS" in errors["model"] or "'..'" in errors["model"]


@pytest.mark.parametrize("path", ["../sentiment.csv", "/etc/passwd", "missing.csv"])
def test_dataset_path_must_be_a_file_in_the_data_folders(client, alice, path):
    errors = errors_for(client, alice, with_section("dataset", path=path))
    assert list(errors) == ["dataset.path"] and errors["dataset.path"], errors


def test_unknown_dataset_source_names_the_discriminator(client, alice):
    errors = errors_for(client, alice, with_section("dataset", source="ftp"))
    assert list(errors) == ["dataset.source"] and "'hub', 'server'" in errors["dataset.source"]


def test_invalid_json_body(client, alice):
    response = client.post("/v1/jobs", content=b'{"model": ', headers={**alice, "Content-Type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["field"] == "body" and error["message"].startswith("the body is not valid JSON")


def test_rejected_specs_store_and_queue_nothing(client, alice):
    drain_queue()
    errors_for(client, alice, with_section("budget", init_r=0))
    assert client.get("/v1/jobs", headers=alice).json()["count"] == 0
    assert drain_queue() == []


def test_openapi_documents_the_readable_422(client):
    schema = client.get("/openapi.json").json()
    create = schema["paths"]["/v1/jobs"]["post"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ValidationErrorBody")
    assert client.get("/docs").status_code == 200


def test_oversized_body_is_413(client, alice):
    body = {**tiny_spec(), "name": "x" * (2 << 20)}  # the default limit is 1 MiB
    response = client.post("/v1/jobs", json=body, headers=alice)
    assert response.status_code == 413


def test_integrations_take_no_credentials_and_name_each_tracker_once(client, alice):
    def integrations(*items):
        return errors_for(client, alice, tiny_spec(integrations=list(items)))

    errors = integrations({"type": "wandb", "api_key": "secret"})
    [message] = errors.values()
    assert "credentials and server addresses come from the worker's environment (WANDB_API_KEY" in message
    assert "secret" not in message
    [message] = integrations({"type": "mlflow", "tracking_uri": "http://attacker:5000"}).values()
    assert "MLFLOW_TRACKING_URI" in message
    assert "name each tracker once" in str(integrations({"type": "tensorboard"}, {"type": "tensorboard"}))
    assert "tensorboard takes no project" in str(integrations({"type": "tensorboard", "project": "p"}))
    assert "integrations.0.type" in integrations({"type": "comet"})
    assert "integrations.0.project" in integrations({"type": "wandb", "project": "../../etc"})
    assert client.post("/v1/jobs", json=tiny_spec(integrations=[{"type": "wandb", "project": "sentiment-runs"}]),
                       headers=alice).status_code == 201


def test_a_batch_that_does_not_split_over_the_gpus_is_refused(client, alice):
    spec = tiny_spec(resources={"gpus": 3})
    errors = errors_for(client, alice, spec)
    assert any("must divide by resources.gpus (3)" in message for message in errors.values()), errors
    assert "resources.gpus" in errors_for(client, alice, tiny_spec(resources={"gpus": 9}))
