"""The Python SDK against a live API and a real Celery worker: every resource, errors carrying the API's body,
retries (503/429 with Retry-After, a lost answer to a create), a cut event stream resumed with Last-Event-ID,
and downloads that resume, verify and unpack."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from adalora_client import (
    AdaloraError,
    APIConnectionError,
    AuthenticationError,
    ChecksumMismatch,
    Client,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from tests.client.conftest import file_job_spec
from tests.client.faulty_proxy import faulty_proxy
from tests.conftest import free_port, tiny_job_spec, wait_for

JOB_TIMEOUT = 240


@pytest.fixture(scope="module")
def api_key(live_service) -> str:
    return live_service.new_key()


@pytest.fixture(scope="module")
def client(live_service, api_key) -> Client:
    with Client(live_service.url, api_key) as client:
        yield client


@pytest.fixture(scope="module")
def finished_job(client, tiny_dataset_file, live_service) -> str:
    """One succeeded job of `client`'s tenant, trained on an uploaded copy of the tiny dataset."""
    file = client.files.create(tiny_dataset_file)
    job = client.jobs.create(file_job_spec(file.id))
    try:
        done = client.jobs.wait(job.id, poll_seconds=0.5, timeout=JOB_TIMEOUT)
    except TimeoutError:
        print(live_service.logs())
        raise
    assert (done.status, done.error) == ("succeeded", None), live_service.logs()
    return job.id


def test_files_upload_list_read_and_delete(client, tiny_dataset_file):
    file = client.files.create(tiny_dataset_file)
    assert (file.filename, file.row_count, [c.name for c in file.columns]) == ("sentiment.csv", 96,
                                                                                ["sentence", "label"])
    assert file.sha256 == hashlib.sha256(tiny_dataset_file.read_bytes()).hexdigest()
    assert client.files.retrieve(file.id).sha256 == file.sha256
    page = client.files.list()
    assert file.id in [f.id for f in page.data] and page.count >= 1
    assert client.files.content(file.id) == tiny_dataset_file.read_bytes()
    with open(tiny_dataset_file, "rb") as handle:  # an open file works as well as a path
        assert client.files.create(handle, filename="copy.csv").filename == "copy.csv"
    client.files.delete(file.id)
    with pytest.raises(NotFoundError) as missing:
        client.files.retrieve(file.id)
    assert missing.value.status_code == 404 and file.id in missing.value.detail


def test_a_job_runs_end_to_end(client, finished_job):
    job = client.jobs.retrieve(finished_job)
    assert (job.status, job.step, job.total_steps, job.finished) == ("succeeded", 24, 24, True)
    assert job.budget_unit and job.adapter_params and job.latest_metrics.step == 24
    assert finished_job in [j.id for j in client.jobs.list(status="succeeded").data]

    events = list(client.jobs.iter_events(finished_job))
    assert events[0].message == "job queued" and any("succeeded" in e.message for e in events)
    assert [e.id for e in client.jobs.stream_events(finished_job)] == [e.id for e in events]
    assert [e.id for e in client.jobs.stream_events(finished_job, after_id=events[1].id)] == \
        [e.id for e in events[2:]]

    metrics = list(client.jobs.iter_metrics(finished_job))
    assert [m.step for m in metrics] == list(range(0, 25)) and "loss" in metrics[1].values
    assert "eval_loss" in metrics[0].values and "loss" not in metrics[0].values  # before training
    assert any(k.startswith("eval_") for k in metrics[-1].values)

    ranks = client.jobs.ranks(finished_job)
    assert ranks.data[0].step == 0 and ranks.data[-1].final
    assert ranks.final_rank_pattern == ranks.data[-1].ranks
    columns = client.jobs.rank_columns(finished_job)
    assert columns.steps == [s.step for s in ranks.data] and len(columns.modules) == len(ranks.data[0].ranks)

    assert client.jobs.checkpoints(finished_job) == []  # superseded by the adapter once the job succeeded


def test_the_dry_run_plans_without_queueing(client, tiny_dataset_file):
    before = client.jobs.list().count
    plan = client.jobs.dry_run(tiny_job_spec())
    assert (plan.total_steps, plan.adapted_modules) == (24, 12) and plan.adapter_params_final > 0
    assert plan.memory.peak_bytes > plan.memory.weights_bytes > 0 and plan.memory.card is None
    on_a_t4 = client.jobs.dry_run(tiny_job_spec(), gpu="T4").memory
    assert (on_a_t4.card.name, on_a_t4.dtype, on_a_t4.fits) == ("T4", "fp32", True)
    assert client.jobs.list().count == before


def test_downloads_unpack_into_a_folder_that_peft_loads(client, finished_job, tiny_model_dir, tmp_path):
    import peft
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    result = client.jobs.download(finished_job, "adapter", tmp_path / "adapter")
    assert result.unpacked == str(tmp_path / "adapter") and result.archive is None
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no archive or temporary folder left over

    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[2, 5, 3]])).logits.shape == (1, 2)

    x = torch.tensor([[2, 5, 9, 3], [2, 12, 7, 3]])
    with torch.no_grad():
        ours = model(input_ids=x).logits
    for kind in ("lora", "lora-serving"):  # the same adapter as plain LoRA, for serving engines
        client.jobs.download(finished_job, kind, tmp_path / kind)
        assert isinstance(peft.PeftConfig.from_pretrained(tmp_path / kind), peft.LoraConfig)
        plain = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
                                          tmp_path / kind).eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(input_ids=x).logits, ours, rtol=0, atol=1e-5)

    with pytest.raises(FileExistsError, match="not an empty folder"):
        client.jobs.download(finished_job, "adapter", tmp_path / "adapter")

    merged = client.jobs.download(finished_job, "merged", tmp_path / "merged.tar", unpack=False)
    assert hashlib.sha256((tmp_path / "merged.tar").read_bytes()).hexdigest() == merged.sha256
    assert merged.size == (tmp_path / "merged.tar").stat().st_size


def test_a_broken_download_resumes_and_a_corrupt_part_is_refused(client, api_key, finished_job, live_service, tmp_path):
    whole = client.jobs.download(finished_job, "merged", tmp_path / "whole.tar", unpack=False)
    data = (tmp_path / "whole.tar").read_bytes()
    with faulty_proxy(live_service.url) as (url, faults), Client(url, api_key) as proxied:
        faults.plan = ["ok", "cut-body"]  # HEAD, then the GET hangs up halfway
        again = proxied.jobs.download(finished_job, "merged", tmp_path / "again.tar", unpack=False)
        gets = [s for s in faults.seen if s.method == "GET"]
        assert [s.fault for s in gets] == ["cut-body", None]
        assert gets[1].headers["range"].startswith("bytes=") and int(gets[1].headers["range"][6:-1]) > 0
        assert gets[1].headers["if-range"] == f'"{whole.sha256}"'
    assert (tmp_path / "again.tar").read_bytes() == data and again.sha256 == whole.sha256

    part = tmp_path / f".bad.tar.{whole.sha256[:16]}.part"
    part.write_bytes(b"x" * (len(data) // 2))  # a partial file whose bytes are not the archive's
    with pytest.raises(ChecksumMismatch):
        client.jobs.download(finished_job, "merged", tmp_path / "bad.tar", unpack=False)
    assert not part.exists() and not (tmp_path / "bad.tar").exists()
    client.jobs.download(finished_job, "merged", tmp_path / "bad.tar", unpack=False)  # starts afresh
    assert (tmp_path / "bad.tar").read_bytes() == data


def test_errors_carry_the_apis_explanation(client, live_service, finished_job, monkeypatch):
    bad = tiny_job_spec()
    bad["budget"]["target_r"] = 9  # above init_r 4
    with pytest.raises(ValidationError) as invalid:
        client.jobs.create(bad)
    assert invalid.value.status_code == 422
    assert [field for field, _ in invalid.value.field_errors] == ["budget.target_r"]
    assert "budget.target_r" in str(invalid.value)

    with pytest.raises(ConflictError, match="nothing to cancel"):
        client.jobs.cancel(finished_job)

    with Client(live_service.url, live_service.new_key()) as other_tenant:
        with pytest.raises(NotFoundError):
            other_tenant.jobs.retrieve(finished_job)
        with pytest.raises(NotFoundError):
            other_tenant.jobs.download(finished_job, "adapter", "unused")
    with Client(live_service.url, "ada_notakey_0000") as stranger, pytest.raises(AuthenticationError):
        stranger.jobs.list()
    with Client(f"http://127.0.0.1:{free_port()}", "key", max_retries=1) as nowhere, \
            pytest.raises(APIConnectionError):
        nowhere.models.list()
    monkeypatch.delenv("ADALORA_API_KEY", raising=False)
    with pytest.raises(AdaloraError, match="ADALORA_API_KEY"):
        Client(live_service.url)


def test_the_environment_configures_the_client(live_service, monkeypatch):
    monkeypatch.setenv("ADALORA_API_URL", live_service.url)
    monkeypatch.setenv("ADALORA_API_KEY", live_service.new_key())
    with Client() as client:
        assert "tiny-bert" in [m.name for m in client.models.list()]


@pytest.mark.parametrize("status", ["503", "429"])
def test_busy_answers_are_retried_after_retry_after(client, api_key, live_service, status):
    with faulty_proxy(live_service.url) as (url, faults), Client(url, api_key) as proxied:
        faults.plan = [status, status]
        assert "tiny-bert" in [m.name for m in proxied.models.list()]
        assert [s.fault for s in faults.seen] == [status, status, None]
        gaps = [b.at - a.at for a, b in zip(faults.seen, faults.seen[1:])]
        assert all(gap >= 0.95 for gap in gaps), gaps  # Retry-After: 1


def test_a_create_whose_answer_is_lost_is_retried_without_a_second_job(client, api_key, live_service,
                                                                        tiny_dataset_file):
    name = f"once-{uuid.uuid4().hex[:6]}"
    with faulty_proxy(live_service.url) as (url, faults), Client(url, api_key) as proxied:
        faults.plan = ["429", "drop"]  # refused, then created with the answer lost, then replayed
        job = proxied.jobs.create({**tiny_job_spec(max_steps=12), "name": name})
        posts = [s for s in faults.seen if s.method == "POST"]
        assert [s.fault for s in posts] == ["429", "drop", None]
        assert len({s.headers["idempotency-key"] for s in posts}) == 1
        faults.plan = ["drop"]
        file = proxied.files.create(tiny_dataset_file, filename=f"{name}.csv")
    assert [j.id for j in client.jobs.list(limit=200).data if j.name == name] == [job.id]
    assert [f.id for f in client.files.list(limit=200).data if f.filename == f"{name}.csv"] == [file.id]
    client.jobs.wait(job.id, poll_seconds=0.5, timeout=JOB_TIMEOUT)


def test_a_cut_event_stream_resumes_after_the_last_event(client, api_key, live_service, finished_job):
    expected = [e.id for e in client.jobs.iter_events(finished_job)]
    with faulty_proxy(live_service.url) as (url, faults), Client(url, api_key) as proxied:
        faults.plan = ["cut-stream"]
        assert [e.id for e in proxied.jobs.stream_events(finished_job)] == expected
        streams = [s for s in faults.seen if s.path.endswith("/events")]
        assert [s.fault for s in streams] == ["cut-stream", None]
        assert streams[1].headers["last-event-id"] == str(expected[0])


def test_a_cancelled_job_streams_to_its_end_and_keeps_its_checkpoints(client):
    job = client.jobs.create(tiny_job_spec(max_steps=2000))
    wait_for(lambda: client.jobs.retrieve(job.id).step >= 17, JOB_TIMEOUT, what="step 17")
    assert client.jobs.cancel(job.id) in ("cancelling", "cancelled")
    messages = [e.message for e in client.jobs.stream_events(job.id)]  # returns once the job has finished
    job = client.jobs.retrieve(job.id)
    assert job.status == "cancelled" and 17 <= job.step < 2000
    assert messages[0] == "job queued" and "cancel" in messages[-1]
    steps = [c.step for c in client.jobs.checkpoints(job.id)]
    assert steps[:2] == [8, 16] and all(s % 8 == 0 for s in steps)  # CHECKPOINT_EVERY=8
