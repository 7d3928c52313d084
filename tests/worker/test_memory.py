"""Memory knobs of a job, on real runs: a bf16 base with fp32 adapters and head, gradient checkpointing (the
same losses as without it), the default that turns it on for big generative models, fp16 refused with the
reason, and an out-of-memory failure that names the knobs."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from sqlalchemy import select

from service.db import session_scope
from service.jobspec import CHECKPOINTING_ABOVE_PARAMS, JobSpec
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


def test_checkpointing_defaults_on_only_for_big_generative_models():
    def job(task: str, **training) -> JobSpec:
        return JobSpec.model_validate({"model": "org/name", "task": task, "dataset": {"source": "hub", "path": "o/d"},
                                       "training": training})
    big, small = CHECKPOINTING_ABOVE_PARAMS + 1, CHECKPOINTING_ABOVE_PARAMS
    assert job("causal_lm").gradient_checkpointing_for(big)
    assert job("seq2seq").gradient_checkpointing_for(big)
    assert not job("causal_lm").gradient_checkpointing_for(small)
    assert not job("sequence_classification").gradient_checkpointing_for(big)
    assert not job("causal_lm", gradient_checkpointing=False).gradient_checkpointing_for(big)
    assert job("sequence_classification", gradient_checkpointing=True).gradient_checkpointing_for(small)


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
