"""SmolLM2-135M-Instruct (a Llama-architecture causal LM) learns alpaca-libre instructions through the
runner: prompt/completion built from instruction/input/output, loss on the answer only. The eval loss
falls below the base model's on the same held-out rows, and the merged model generates text.

Slow (a few minutes on two CPU cores), not in CI.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from service.db import session_scope
from service.jobspec import JobSpec
from service.store import get_store
from service.tables import Artifact, Job, JobEvent, Metric
from tests.helpers import new_job
from worker.runner import claim_and_run

pytestmark = pytest.mark.slow

STEPS = 16  # 64 rows seen: enough to move the eval loss, minutes on two CPU cores


@pytest.fixture(scope="module")
def model_dirs(smollm2_dir) -> list[Path]:
    return [smollm2_dir.parent]


def alpaca_job(model: str) -> dict:
    return {
        "model": model,
        "task": "causal_lm",
        "dataset": {"source": "server", "path": "instruct/alpaca_libre/alpaca_libre_ok.jsonl",
                    "validation_split": 0.008},  # 25 held-out rows: an evaluation costs seconds, not minutes
        "budget": {"init_r": 8, "target_r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
        "schedule": {"tinit": 0.2, "tfinal": 0.3, "delta_t": 2},
        # E starts at zero, so AdaLoRA moves slowly at first: a short run needs a high learning rate
        # (measured here over 16 steps: 5e-3 lowered the eval loss by ~0.03, 1e-2 by ~0.1).
        "training": {"max_steps": STEPS, "batch_size": 4, "learning_rate": 1e-2, "max_seq_len": 96,
                     "warmup_ratio": 0.0},
    }


def base_eval_loss(spec: dict, model_dir: Path) -> float:
    """The untrained model's loss on the job's held-out rows, prepared exactly as the job prepares them."""
    from transformers import AutoModelForCausalLM

    from worker.data import make_collate, make_eval_fn, prepare
    from worker.run_setup import load_tokenizer

    job = JobSpec.model_validate(spec)
    tokenizer = load_tokenizer(job, str(model_dir))
    data = prepare(job, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return make_eval_fn(data.kind, data.validation, make_collate(tokenizer.pad_token_id), 8)(model)["loss"]


def test_smollm2_learns_alpaca_answers_and_the_merged_model_generates(smollm2_dir, service_env, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = alpaca_job(smollm2_dir.name)
    job_id = new_job(spec)
    assert claim_and_run(job_id) == "succeeded", _error(job_id)
    with session_scope() as session:
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        last = session.scalars(select(Metric.values).where(Metric.job_id == job_id)
                               .order_by(Metric.step.desc())).first()
        merged_tar = get_store().local_copy(session.scalar(select(Artifact.path).where(Artifact.job_id == job_id,
                                                                            Artifact.kind == "merged")))
    assert any("instruction from 'instruction', output from 'output', input from 'input'" in m for m in events)
    before = base_eval_loss(spec, smollm2_dir)
    print(f"eval loss: base {before:.3f} -> trained {last['eval_loss']:.3f} after {STEPS} steps")
    assert last["eval_loss"] < before - 0.03

    with tarfile.open(merged_tar) as tar:
        tar.extractall(tmp_path, filter="data")
    merged = tmp_path / "merged"
    assert json.loads((merged / "config.json").read_text())["model_type"] == "llama"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    from worker.data.causal_lm import ALPACA_PROMPT

    prompt = tokenizer(ALPACA_PROMPT.format(instruction="Name three primary colors."), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"merged model answers: {answer!r}")
    assert sum(c.isalpha() for c in answer) >= 3, answer


def _error(job_id: str) -> str | None:
    with session_scope() as session:
        return session.get(Job, job_id).error


def test_smollm2_chat_template_marks_only_the_assistant_answers(smollm2_dir):
    """The real template adds a default system prompt and role headers: none of it is learned."""
    from transformers import AutoTokenizer

    from worker.data.causal_lm import chat_examples
    from worker.data.encoding import IGNORE_INDEX

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    conversation = [{"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                    {"role": "user", "content": "And of Italy?"}, {"role": "assistant", "content": "Rome."}]
    (example,) = chat_examples(tokenizer, [conversation], 256).examples
    learned = [t for t, y in zip(example["input_ids"], example["labels"]) if y != IGNORE_INDEX]
    assert tokenizer.decode(learned) == "Paris.<|im_end|>\nRome.<|im_end|>\n"
    assert "You are a helpful AI assistant" in tokenizer.decode(example["input_ids"])
