"""A budget that prunes every rank (target_params: 0) is a job like any other: the row says 0 adapter parameters
(a real 0, not a missing value), and all four downloads exist; its `lora` is a rank-1 LoRA of zeros, the exact
update PEFT can load (it takes no rank 0), so stock peft gives the base model's output."""

from __future__ import annotations

import io
import json
import tarfile
import warnings

import pytest
import torch
from sqlalchemy import select

from service.db import session_scope
from service.settings import get_settings
from service.store import get_store
from service.tables import Artifact, Job, JobEvent, RankSnapshot
from tests.conftest import sqlite_only_database_url, tiny_job_spec
from tests.helpers import new_job
from worker.runner import claim_and_run

database_url = sqlite_only_database_url()


@pytest.fixture(scope="module")
def job_id(engine) -> str:
    spec = tiny_job_spec()
    spec["budget"] = {"init_r": 4, "target_params": 0, "lora_alpha": 8}
    job_id = new_job(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROGRESS_EVENT_STEPS", "8")  # a "step n/24: ..., budget ... (k kept)" event every 8 steps
        get_settings.cache_clear()
        assert claim_and_run(job_id) == "succeeded"
    get_settings.cache_clear()
    return job_id


def download(job_id: str, kind: str, folder) -> None:
    with session_scope() as session:
        key = session.scalar(select(Artifact.path).where(Artifact.job_id == job_id, Artifact.kind == kind))
    data = b"".join(get_store().read(key, 0, get_store().size(key)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")


def test_the_job_reports_zero_adapter_parameters_as_its_last_snapshot_does(job_id):
    with session_scope() as session:
        job = session.get(Job, job_id)
        last = session.scalars(select(RankSnapshot).where(RankSnapshot.job_id == job_id)
                               .order_by(RankSnapshot.step.desc())).first()
        start = session.scalar(select(RankSnapshot).where(RankSnapshot.job_id == job_id, RankSnapshot.step == 0))
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert start.adapter_params > 0  # it did start with parameters to prune
    assert last.final and set(last.ranks.values()) == {0} and last.adapter_params == 0
    assert job.adapter_params == 0 and job.current_budget == 0
    assert [m for m in events if m.startswith("step ")][-1].endswith("budget 0 params (0 kept)")


def test_every_download_exists_and_the_lora_loads_in_stock_peft_as_the_base_model(job_id, tiny_model_dir, tmp_path):
    import peft
    import transformers

    with session_scope() as session:
        kinds = session.scalars(select(Artifact.kind).where(Artifact.job_id == job_id)).all()
    assert sorted(kinds) == ["adapter", "lora", "lora-serving", "merged"]
    for kind in ("lora", "merged"):
        download(job_id, kind, tmp_path)
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 1 and len(config["target_modules"]) == 12

    x = torch.randint(5, 33, (4, 8))
    base = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lora = peft.PeftModel.from_pretrained(
            transformers.AutoModelForSequenceClassification.from_pretrained(tiny_model_dir), tmp_path / "lora").eval()
    merged = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        ours = lora(input_ids=x, output_hidden_states=True)
        theirs = base(input_ids=x, output_hidden_states=True)
        # Every adapted layer is the base model's, exactly; only the trained task head differs from it.
        torch.testing.assert_close(ours.hidden_states[-1], theirs.hidden_states[-1], rtol=0, atol=0)
        torch.testing.assert_close(ours.logits, merged(input_ids=x).logits, rtol=0, atol=1e-5)
    assert not torch.allclose(ours.logits, theirs.logits, atol=1e-4), "the task head was trained"
