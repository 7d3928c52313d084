"""CI's real-model job: MiniLM-L6 on SST-2 through a real Celery worker, end to end.

A few hundred training rows on a CPU say nothing about quality (bench/quality.py measures that); this
proves a real pretrained encoder and real GLUE files go through tokenising, AdaLoRA training, export,
and that the adapter loads in stock peft and agrees with the merged model.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from service.db import session_scope
from service.store import get_store
from service.tables import Artifact, JobEvent, Metric
from tests.helpers import submit, wait_until_finished

pytestmark = [pytest.mark.slow, pytest.mark.ci]

STEPS, BATCH = 30, 16  # 480 training rows seen


@pytest.fixture(scope="module")
def model_dirs(minilm_dir) -> list[Path]:
    return [minilm_dir.parent]


def test_minilm_sst2_job_succeeds_and_its_adapter_loads_in_stock_peft(celery_worker, minilm_dir, shared_data,
                                                                      tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    job_id = submit({
        "model": minilm_dir.name,
        "task": "sequence_classification",
        "dataset": {"source": "server", "path": "glue/SST-2/train.tsv", "validation_path": "glue/SST-2/dev.tsv"},
        "budget": {"init_r": 6, "target_r": 4, "lora_alpha": 12},
        "schedule": {"tinit": 0.2, "tfinal": 0.3, "delta_t": 3},
        "training": {"max_steps": STEPS, "batch_size": BATCH, "learning_rate": 5e-3, "max_seq_len": 64},
    })
    job = wait_until_finished(job_id, celery_worker, timeout=300)
    assert (job.status, job.error, job.step) == ("succeeded", None, STEPS)
    with session_scope() as session:
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
        last = session.scalars(select(Metric.values).where(Metric.job_id == job_id)
                               .order_by(Metric.step.desc())).first()
        artifacts = {a.kind: get_store().local_copy(a.path) for a in session.scalars(select(Artifact)
                                                                          .where(Artifact.job_id == job_id))}
    assert any(m.startswith("data: 67349 training and 872 validation examples, 2 labels") for m in events), events
    assert 0 <= last["eval_accuracy"] <= 1 and -1 <= last["eval_mcc"] <= 1 and last["eval_loss"] > 0

    for _kind, path in artifacts.items():
        with tarfile.open(path) as tar:
            tar.extractall(tmp_path, filter="data")
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"

    with open(shared_data / "glue/SST-2/dev.tsv", newline="") as f:
        sentences = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][:16]
    tokenizer = AutoTokenizer.from_pretrained(merged)
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        base = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
        with_adapter = PeftModel.from_pretrained(base, adapter).eval()(**batch).logits
        merged_logits = AutoModelForSequenceClassification.from_pretrained(merged).eval()(**batch).logits
    # fp32 sums in another order (merged weight vs base + low-rank path): agreement to ~1e-5 relative.
    torch.testing.assert_close(merged_logits, with_adapter, atol=1e-4, rtol=1e-4)
