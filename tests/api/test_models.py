"""GET /v1/models: the saved models in MODEL_DIRS a job can train, with family, parameter count and task
kinds, read without torch; folders no job could train are left out."""

from __future__ import annotations

import json
import shutil
import struct

from transformers import AutoModelForSequenceClassification


def test_lists_the_tiny_model_with_its_family_size_and_tasks(client, alice, tiny_model_dir):
    response = client.get("/v1/models", headers=alice)
    assert response.status_code == 200, response.text
    [model] = [m for m in response.json()["data"] if m["name"] == "tiny-bert"]
    expected = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).parameters())
    assert model == {"name": "tiny-bert", "family": "bert", "architectures": ["BertForSequenceClassification"],
                     "parameters": expected, "tasks": ["sequence_classification", "causal_lm"]}


def test_needs_a_key(client):
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer ada_nope"}).status_code == 401


def safetensors_file(path, tensors: dict[str, list[int]]) -> None:
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for name, shape in tensors.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_sharded_t5_counts_every_shard_and_untrainable_folders_are_left_out(client, alice, env_override,
                                                                           tiny_model_dir, tmp_path):
    extra = tmp_path / "more"
    (extra / "org" / "t5-small").mkdir(parents=True)
    t5 = extra / "org" / "t5-small"
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    safetensors_file(t5 / "a.safetensors", {"x": [4, 8], "__metadata__": {}} | {"y": [3]})
    safetensors_file(t5 / "b.safetensors", {"z": [2, 2, 2]})
    (t5 / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}))
    pickles = extra / "pickled"
    shutil.copytree(tiny_model_dir, pickles)
    (pickles / "model.safetensors").rename(pickles / "pytorch_model.bin")
    (extra / "no-type").mkdir()
    (extra / "no-type" / "config.json").write_text("{}")
    env_override(MODEL_DIRS=f"{tiny_model_dir.parent},{extra}")

    models = {m["name"]: m for m in client.get("/v1/models", headers=alice).json()["data"]}
    # other tests may have saved more tiny models beside tiny-bert; these two are what this test put there
    assert {"tiny-bert", "org/t5-small"} <= set(models) and not {"pickled", "no-type"} & set(models)
    assert models["org/t5-small"]["parameters"] == 32 + 3 + 8
    assert models["org/t5-small"]["family"] == "t5" and "seq2seq" in models["org/t5-small"]["tasks"]
    assert "sequence_classification" in models["org/t5-small"]["tasks"]  # T5ForSequenceClassification exists
