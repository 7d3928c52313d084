"""Dry runs: the plan for a spec, computed on the model's architecture; nothing is stored or queued."""

import subprocess
import sys

import pytest

from tests.api.conftest import drain_queue, tiny_spec
from worker.runner import claim_and_run

# The shared tiny BERT: 2 layers, hidden 32, intermediate 64. Each adapted module costs in + out + 1
# parameters per rank (a row of A, a column of B, one singular value). Per layer: query, key, value and
# attention.output.dense are 32 -> 32 (65 each), intermediate.dense 32 -> 64 and output.dense 64 -> 32 (97 each).
PER_RANK = 2 * (4 * 65 + 2 * 97)   # 908 parameters per unit of rank across the 12 modules
CLASSIFIER = 32 * 2 + 2            # the task head is trained in full


def dry_run(client, headers, spec):
    response = client.post("/v1/jobs", json={**spec, "dry_run": True}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_parameter_counts_at_initial_and_final_budget(client, alice):
    plan = dry_run(client, alice, tiny_spec())  # init_r 4, target_r 2, 24 steps, tinit 4, tfinal 6
    assert plan["adapted_modules"] == 12
    assert plan["adapter_params_init"] == 4 * PER_RANK and plan["adapter_params_final"] == 2 * PER_RANK
    assert plan["head_params"] == CLASSIFIER
    assert plan["trainable_params_init"] == 4 * PER_RANK + CLASSIFIER
    assert plan["trainable_params_final"] == 2 * PER_RANK + CLASSIFIER
    # By default the budget counts parameters: target_r 2 is what rank 2 in every module costs.
    assert plan["budget_unit"] == "params"
    assert (plan["budget_init"], plan["budget_final"]) == (4 * PER_RANK, 2 * PER_RANK)
    assert (plan["total_steps"], plan["tinit"], plan["tfinal"]) == (24, 4, 6)
    assert plan["total_steps_from"] == "training.max_steps"


@pytest.mark.parametrize("unit,b0,bT", [("params", 4 * PER_RANK, 2 * PER_RANK), ("ranks", 48, 24)])
def test_budget_schedule_falls_cubically_from_init_to_target(client, alice, unit, b0, bT):
    spec = tiny_spec()
    spec["budget"]["unit"] = unit
    plan = dry_run(client, alice, spec)  # T = 24, tinit = 4, tfinal = 6, delta_t = 2
    assert (plan["budget_unit"], plan["budget_init"], plan["budget_final"]) == (unit, b0, bT)
    steps, budgets = zip(*plan["schedule"])
    # Points are 1-based (optimizer steps completed); allocation t = step - 1 happens every delta_t steps
    # after tinit, and at T - tfinal = 18 the mask freezes at the target.
    assert [s - 1 for s in steps] == [6, 8, 10, 12, 14, 16, 18]
    cubic = [int(bT + (b0 - bT) * (1 - (s - 1 - 4) / (24 - 4 - 6)) ** 3) if s - 1 < 18 else bT for s in steps]
    assert list(budgets) == cubic
    assert budgets[0] < b0 and budgets[-1] == bT


def test_target_params_sets_the_final_budget_in_parameters(client, alice):
    spec = tiny_spec(budget={"init_r": 4, "target_params": 3 * PER_RANK - 50})
    plan = dry_run(client, alice, spec)
    assert plan["budget_unit"] == "params" and plan["budget_final"] == plan["adapter_params_final"] == 3 * PER_RANK - 50
    assert plan["target_r"] == pytest.approx(3 - 50 / PER_RANK)


def test_target_params_with_a_rank_budget_is_refused_naming_the_fix(client, alice):
    spec = tiny_spec(budget={"init_r": 4, "target_params": 1000, "unit": "ranks"}, dry_run=True)
    response = client.post("/v1/jobs", json=spec, headers=alice)
    assert response.status_code == 422 and "drop unit: ranks, or give target_r" in response.text


def test_epochs_count_the_training_rows_of_a_server_dataset(client, alice):
    # 96 rows, 25% held out for validation -> 72 training rows; batch 8 -> 9 steps per epoch.
    spec = tiny_spec(training={"epochs": 3, "batch_size": 8}, schedule={"tinit": 0.1, "tfinal": 0.2})
    plan = dry_run(client, alice, spec)
    assert plan["total_steps"] == 27 and plan["total_steps_from"] == "72 training rows counted"
    assert (plan["tinit"], plan["tfinal"]) == (2, 5)


def test_epochs_of_plain_text_count_the_packed_blocks_the_worker_trains(client, alice, tiny_gpt2_dir):
    # 72 training sentences of 7 tokens ([CLS] five words [SEP]) in one stream, cut into blocks of 16.
    spec = tiny_spec(model="tiny-gpt2", task="causal_lm", schedule={"tinit": 0.1, "tfinal": 0.2, "delta_t": 1},
                     training={"epochs": 2, "batch_size": 8, "max_seq_len": 16, "learning_rate": 5e-3})
    plan = dry_run(client, alice, spec)
    assert plan["total_steps_from"] == "32 blocks of up to 16 tokens packed from 72 training rows"
    assert plan["total_steps"] == 2 * (32 // 8)  # counting rows would say 2 * (72 // 8) = 18
    drain_queue()
    job_id = client.post("/v1/jobs", json=spec, headers=alice).json()["id"]
    assert drain_queue() == [job_id]
    assert claim_and_run(job_id) == "succeeded"  # in this process, as a worker would run it
    job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert job["total_steps"] == job["step"] == plan["total_steps"]


def test_plain_text_without_a_usable_tokenizer_says_the_count_is_an_estimate(client, alice, tiny_gpt2_dir):
    folder = tiny_gpt2_dir.parent / "tiny-gpt2-config-only"  # transformers makes an empty tokenizer for it
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text((tiny_gpt2_dir / "config.json").read_text())
    spec = tiny_spec(model=folder.name, task="causal_lm", training={"epochs": 2, "batch_size": 8})
    plan = dry_run(client, alice, spec)
    assert plan["total_steps"] == 2 * (72 // 8)
    basis = plan["total_steps_from"]
    assert basis.startswith("72 training rows counted, an estimate: plain text is packed into blocks of")
    assert basis.endswith("could not be read here: model 'tiny-gpt2-config-only': its tokenizer has no "
                          "vocabulary (no tokenizer files beside the model's config); add the files of the "
                          "tokenizer it was trained with")


def test_dry_run_stores_and_queues_nothing(client, alice):
    drain_queue()
    dry_run(client, alice, tiny_spec())
    assert client.get("/v1/jobs", headers=alice).json()["count"] == 0
    assert drain_queue() == []


def problems(client, headers, spec) -> dict[str, str]:
    response = client.post("/v1/jobs", json={**spec, "dry_run": True}, headers=headers)
    assert response.status_code == 422, response.text
    return {e["field"]: e["message"] for e in response.json()["detail"]}


def test_hub_dataset_of_unknown_size_asks_for_max_steps(client, alice):
    # HF_HUB_OFFLINE=1 and nothing cached: the split size cannot be read.
    spec = tiny_spec(dataset={"source": "hub", "path": "nobody/no-such-dataset"}, training={"epochs": 1})
    assert "set training.max_steps instead of epochs" in problems(client, alice, spec)["dataset"]


def test_a_model_neither_in_model_dirs_nor_reachable_on_the_hub_says_both(client, alice):
    message = problems(client, alice, tiny_spec(model="nobody/no-such-model"))["model"]  # HF_HUB_OFFLINE=1
    assert message.startswith("'nobody/no-such-model' is not a folder in MODEL_DIRS (MODEL_DIRS holds tiny-bert")
    assert "as a hub id it needs the Hugging Face hub, which this server cannot reach" in message


def test_a_folder_without_a_saved_model_is_refused_before_the_dry_run(client, alice, tiny_model_dir):
    (tiny_model_dir.parent / "not-a-model-folder").mkdir(exist_ok=True)
    message = problems(client, alice, tiny_spec(model="not-a-model-folder"))["model"]
    assert message.startswith("the folder 'not-a-model-folder' in MODEL_DIRS has no config.json"), message


def test_a_model_without_a_form_for_the_task_says_so_rather_than_unreadable(client, alice):
    message = problems(client, alice, tiny_spec(task="seq2seq"))["model"]
    assert message.startswith("'tiny-bert' is a bert model, which has no seq2seq form in transformers")
    assert message.endswith("use an encoder-decoder model (T5, BART, ...)")


def test_batch_larger_than_the_dataset(client, alice):
    spec = tiny_spec(training={"epochs": 1, "batch_size": 512})
    message = problems(client, alice, spec)["training.batch_size"]
    assert "fewer than batch_size=512" in message and message.endswith("(72 training rows counted)")


def test_batch_larger_than_the_packed_blocks_names_the_blocks(client, alice, tiny_gpt2_dir):
    spec = tiny_spec(model="tiny-gpt2", task="causal_lm", training={"epochs": 1, "batch_size": 40, "max_seq_len": 16})
    message = problems(client, alice, spec)["training.batch_size"]  # 72 rows, but 32 blocks
    assert message.startswith("the dataset has 32 examples, fewer than batch_size=40")
    assert message.endswith("(32 blocks of up to 16 tokens packed from 72 training rows)")


def test_api_start_up_does_not_import_torch():
    code = "import sys, api.main; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_memory_estimate_parts_add_up_and_checkpointing_lowers_the_peak(client, alice):
    spec = tiny_spec()
    spec["training"] = {**spec["training"], "base_dtype": "fp32"}
    plan = dry_run(client, alice, spec)
    assert plan["memory_problem"] is None
    memory = plan["memory"]
    parts = ("weights", "trainable", "gradients", "optimizer", "allocator", "activations", "backward")
    assert memory["peak_bytes"] == sum(memory[f"{part}_bytes"] for part in parts)
    assert (memory["dtype"], memory["dtype_from"]) == ("fp32", "training.base_dtype fp32")
    # max_seq_len defaults to 128, but the tiny BERT has 64 positions: no row is longer.
    assert (memory["batch_size"], memory["seq_len"]) == (spec["training"]["batch_size"], 64)
    assert memory["notes"] == ["training.max_seq_len 128 is above the 64 positions of 'tiny-bert': estimated at "
                               "64 tokens. Rows longer than that do not fit the model; lower max_seq_len to 64",
                               "training.gradient_checkpointing auto: estimated without it; the worker turns it on "
                               "only where the step does not fit its device (name the card in `gpu` to check one)"]
    trainable = 4 * PER_RANK + CLASSIFIER  # at the initial budget: fp32 value, gradient, AdamW's two moments
    assert (memory["trainable_bytes"], memory["gradients_bytes"], memory["optimizer_bytes"]) == \
        (4 * trainable, 4 * trainable, 8 * trainable)
    assert memory["allocator_bytes"] == 8 * 4 * PER_RANK
    # Without a card, "auto" is estimated without checkpointing; with it, the peak is lower.
    assert memory["gradient_checkpointing"] is False and memory["peak_bytes"] == memory["peak_checkpointing_off_bytes"]
    assert memory["peak_checkpointing_on_bytes"] < memory["peak_checkpointing_off_bytes"]
    assert memory["card"] is None and memory["fits"] is None and memory["advice"] == []


def test_base_dtype_auto_follows_the_card(client, alice):
    def memory(gpu):
        response = client.post("/v1/jobs", json={**tiny_spec(), "dry_run": True, "gpu": gpu}, headers=alice)
        assert response.status_code == 200, response.text
        return response.json()["memory"]

    t4, h100 = memory("T4"), memory("h100 80gb")
    assert (t4["dtype"], h100["dtype"]) == ("fp32", "bf16")
    assert "no bf16" in t4["dtype_from"] and h100["card"] == {"name": "H100-80GB", "memory_bytes": 81_559 * 2**20,
                                                               "bf16": True}
    assert h100["weights_bytes"] == t4["weights_bytes"] // 2
    assert t4["fits"] is True and h100["fits"] is True and t4["advice"] == []


def test_a_job_too_large_for_the_card_is_told_which_knobs_fit_it(client, alice):
    spec = tiny_spec()
    spec["training"] = {**spec["training"], "batch_size": 4096, "max_seq_len": 64, "base_dtype": "fp32",
                        "gradient_checkpointing": False}
    response = client.post("/v1/jobs", json={**spec, "dry_run": True, "gpu": "1GB"}, headers=alice)
    assert response.status_code == 200, response.text
    memory = response.json()["memory"]
    assert memory["fits"] is False and memory["peak_bytes"] > 2**30, memory
    advice = memory["advice"]
    assert advice[0].startswith("training.gradient_checkpointing true: peak ")
    assert any(a.startswith("training.base_dtype bf16: peak ") for a in advice)
    assert any(a.startswith("training.quantization nf4: peak ") for a in advice)
    batch = next(a for a in advice if a.startswith("training.batch_size "))
    assert "with training.grad_accum" in batch and batch.endswith("(fits)")
    assert advice[-1].startswith("or a card with more memory than the 1GB's 1.0 GiB")


def test_nf4_quantization_shrinks_the_weights_of_the_adapted_layers(client, alice):
    plain, nf4 = tiny_spec(), tiny_spec()
    for spec, quantization in ((plain, "none"), (nf4, "nf4")):
        spec["training"] = {**spec["training"], "quantization": quantization, "base_dtype": "fp32"}
    assert (dry_run(client, alice, nf4)["memory"]["weights_bytes"]
            < dry_run(client, alice, plain)["memory"]["weights_bytes"])


def test_an_unknown_card_or_a_card_outside_a_dry_run_is_refused(client, alice):
    response = client.post("/v1/jobs", json={**tiny_spec(), "dry_run": True, "gpu": "GTX 480"}, headers=alice)
    assert response.status_code == 422
    message = {e["field"]: e["message"] for e in response.json()["detail"]}["gpu"]
    assert "'GTX 480' is not a card this server knows" in message and "H100-80GB" in message and '"24GB"' in message
    for size in ("0GB", "99999GB"):
        response = client.post("/v1/jobs", json={**tiny_spec(), "dry_run": True, "gpu": size}, headers=alice)
        assert response.status_code == 422 and "a size must be above 0" in response.text
    response = client.post("/v1/jobs", json={**tiny_spec(), "gpu": "A100-40GB"}, headers=alice)
    assert response.status_code == 422 and "only a dry run checks a job against a card" in response.text
    assert client.get("/v1/jobs", headers=alice).json()["count"] == 0


def test_a_data_parallel_job_is_estimated_per_device(client, alice):
    whole, split = tiny_spec(), tiny_spec(resources={"gpus": 2})
    one, two = dry_run(client, alice, whole)["memory"], dry_run(client, alice, split)["memory"]
    assert (one["batch_size"], two["batch_size"]) == (8, 4)
    assert two["activations_bytes"] < one["activations_bytes"] and two["weights_bytes"] == one["weights_bytes"]
    assert any(note.startswith("per device: training.batch_size 8 over resources.gpus 2") for note in two["notes"])


def test_the_plan_gives_the_scale_and_warns_when_it_is_far_from_the_defaults(client, alice):
    spec = tiny_spec()
    plan = dry_run(client, alice, {**spec, "budget": {"init_r": 4, "target_r": 2}})
    assert plan["scale"] == pytest.approx(8 / 4 ** 0.5) and plan["warnings"] == []
    # PEFT's AdaLoRA shape at a high rank: alpha 8 over init_r 64 trains at a sixteenth of the default's scale.
    paper = dry_run(client, alice, {**spec, "budget": {"init_r": 64, "target_r": 2, "lora_alpha": 8,
                                                       "scaling": "standard"}})
    assert paper["scale"] == pytest.approx(8 / 64)
    assert len(paper["warnings"]) == 1 and "trains slowly" in paper["warnings"][0]
    assert "lora_alpha to about 64" in paper["warnings"][0]


def test_learning_rate_auto_is_a_valid_spec_and_anything_else_not_a_number_is_refused(client, alice):
    spec = tiny_spec()
    assert dry_run(client, alice, {**spec, "training": {**spec["training"], "learning_rate": "auto"}})["dry_run"]
    found = problems(client, alice, {**spec, "training": {**spec["training"], "learning_rate": "fast"}})
    assert any(field.startswith("training.learning_rate") for field in found), found


def test_checkpointing_auto_turns_on_only_for_a_card_the_step_does_not_fit(client, alice):
    def memory(gpu):
        spec = tiny_spec()
        spec["training"] = {**spec["training"], "batch_size": 4096, "max_seq_len": 64, "base_dtype": "fp32"}
        response = client.post("/v1/jobs", json={**spec, "dry_run": True, "gpu": gpu}, headers=alice)
        assert response.status_code == 200, response.text
        return response.json()["memory"]

    small, large = memory("1GB"), memory("h100 80gb")
    assert small["gradient_checkpointing"] is True and small["peak_bytes"] == small["peak_checkpointing_on_bytes"]
    assert any(n.startswith("training.gradient_checkpointing auto: on on the 1GB, as the step's estimated peak of ")
               and "exceeds the device's 1.0 GiB without it" in n for n in small["notes"]), small["notes"]
    assert not any(a.startswith("training.gradient_checkpointing") for a in small["advice"])  # already on
    assert large["gradient_checkpointing"] is False and large["peak_bytes"] == large["peak_checkpointing_off_bytes"]
    assert any(n.startswith("training.gradient_checkpointing auto: off on the H100-80GB, as the step's estimated peak")
               and "fits the device's" in n for n in large["notes"]), large["notes"]
