"""Memory knobs of a job, on real runs: a bf16 base with fp32 adapters and head, gradient checkpointing (the
same losses as without it), "auto" that turns it on only where the step does not fit, fp16 refused with the
reason, and an out-of-memory failure that names the knobs."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from sqlalchemy import select

from service.db import session_scope
from service.jobspec import JobSpec
from service.tables import Metric
from tests.conftest import sentiment_rows, sqlite_only_database_url
from tests.helpers import new_job
from tests.worker.helpers import extract, finished, spec, succeeded, write_jsonl
from worker.runner import describe_failure

database_url = sqlite_only_database_url()


def losses(job_id: str) -> list[float]:
    with session_scope() as session:
        return [v["loss"] for v in session.scalars(select(Metric.values).where(Metric.job_id == job_id)
                                                   .order_by(Metric.step)) if "loss" in v]  # not step 0's eval


def test_a_bf16_base_trains_with_fp32_adapters_and_head(engine, tmp_path):
    job_id = new_job({**spec("sequence_classification", "sentiment.csv", base_dtype="bf16")})
    succeeded(job_id)
    job, events, last = finished(job_id)
    assert any("in bfloat16" in e and "gradient checkpointing off" in e for e in events), events
    assert last["eval_accuracy"] >= 0  # evaluation ran (without autocast) through the fp32 head
    adapter = load_file(extract(job_id, "adapter", tmp_path) / "adapter_model.safetensors")
    assert {t.dtype for t in adapter.values()} == {torch.float32}


def test_gradient_checkpointing_gives_the_same_losses(engine, data_dir, tiny_chat_gpt2_dir):
    rows = [{"text": "the movie was good and the plot was great " * 3} for _ in range(48)]
    path = write_jsonl(data_dir, rows)
    runs = {}
    for checkpointing in (False, True):
        job_id = new_job(spec("causal_lm", path, model="tiny-chat-gpt2", max_steps=12, max_seq_len=32,
                                 gradient_checkpointing=checkpointing))
        succeeded(job_id)
        events = finished(job_id)[1]
        assert any(f"gradient checkpointing {'on' if checkpointing else 'off'}" in e for e in events), events
        runs[checkpointing] = losses(job_id)
    assert len(runs[True]) == 12
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)  # recomputation changes memory, not the math


def test_checkpointing_auto_is_on_only_where_the_step_does_not_fit(tiny_llama_dir):
    """The rule on a real estimate: the tiny Llama's step fits this host without recomputation, not a 1 MiB card."""
    from adalora_core import AdaLoraConfig, build_model, inject_adalora
    from adalora_core.memory import checkpointing_needed, estimate_training_memory

    adapted = inject_adalora(build_model(str(tiny_llama_dir), "causal_lm", empty=True), AdaLoraConfig(init_r=4))
    estimate = estimate_training_memory(adapted, "causal_lm", batch_size=8, seq_len=64, dtype=torch.float32,
                                        checkpointing=False, device="cpu")
    off = estimate.with_checkpointing(False).peak
    assert checkpointing_needed(estimate, 64 * 2**30) == (
        False, f"the step's estimated peak of {off / 2**30:.2f} GiB fits the device's 64.0 GiB without it")
    on, why = checkpointing_needed(estimate, 2**20)
    assert on and why.startswith("the step's estimated peak") and "exceeds the device's 0.0 GiB without it" in why
    stored = JobSpec.model_validate({"model": "org/name", "task": "causal_lm",
                                     "dataset": {"source": "hub", "path": "o/d"},
                                     "training": {"gradient_checkpointing": None}})
    assert stored.training.gradient_checkpointing == "auto", "a spec stored before auto existed (null) reads as auto"


def test_an_auto_job_says_why_checkpointing_is_off(engine, data_dir, tiny_llama_dir):
    rows = [{"text": "the movie was good and the plot was great " * 3} for _ in range(16)]
    job_id = new_job(spec("causal_lm", write_jsonl(data_dir, rows), model="tiny-llama", max_steps=12, max_seq_len=32))
    succeeded(job_id)
    model_event = next(e for e in finished(job_id)[1] if e.startswith("model: "))
    assert "gradient checkpointing off (auto: the step's estimated peak of " in model_event, model_event
    assert "GiB without it)" in model_event


def test_fp16_is_refused_with_the_reason():
    with pytest.raises(ValidationError, match="loss scaling"):
        JobSpec.model_validate({"model": "org/name", "task": "causal_lm", "dataset": {"source": "hub", "path": "o/d"},
                                "training": {"base_dtype": "fp16"}})


def test_running_out_of_gpu_memory_names_the_knobs():
    # No GPU here to run out of: the error is the one torch raises on CUDA.
    message = describe_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 37)
    for knob in ("step 37", "training.batch_size", "training.grad_accum", "training.max_seq_len",
                 "training.gradient_checkpointing", "training.base_dtype bf16"):
        assert knob in message, message
    json.dumps(message)


@pytest.fixture(scope="module")
def tiny_llama_dir(tiny_model_dir):
    """A 2-layer Llama beside the tiny BERT, with the BERT word tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tiny_model_dir.parent / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                 max_position_embeddings=64, pad_token_id=0)).save_pretrained(folder)
    return folder


def test_a_job_on_a_4bit_nf4_base(engine, data_dir, tiny_llama_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    import peft
    import transformers

    rows = [{"prompt": f"{s} :", "completion": " good" if y == "positive" else " bad"}
            for s, y in sentiment_rows(48, seed=6)]
    job_id = new_job(spec("causal_lm", write_jsonl(data_dir, rows), model="tiny-llama", max_steps=12,
                             max_seq_len=32, quantization="nf4"))
    succeeded(job_id)
    events = finished(job_id)[1]
    assert any("in 4-bit NF4 (computing in float32)" in e for e in events), events
    merged_dir = extract(job_id, "merged", tmp_path / "m")
    adapter_dir = extract(job_id, "adapter", tmp_path / "a")
    merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert getattr(merged.config, "quantization_config", None) is None  # a plain full-precision model
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    adapter = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    x = torch.randint(5, 30, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x).logits, adapter(input_ids=x).logits, rtol=0, atol=1e-4)
