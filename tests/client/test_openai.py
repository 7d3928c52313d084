"""The official `openai` client, unchanged, against our /openai/v1 routes on a live API with a real worker:
files.create with chat and prompt/completion JSONL, fine_tuning.jobs create (method and legacy
hyperparameters, "auto", AdaLoRA's budget in metadata) → poll to success, retrieve, list with after/has_more,
list_events, checkpoints.list, cancel, OpenAI's error shape for what we do not serve, and a second tenant's
ids answering not found."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import sentiment_rows

TIMEOUT = 240
FINISHED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def api_key(live_service, tiny_chat_gpt2_dir) -> str:
    return live_service.new_key()


@pytest.fixture(scope="module")
def oa(live_service, api_key) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{live_service.url}/openai/v1", api_key=api_key, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def chat_file(oa, tmp_path_factory):
    path = tmp_path_factory.mktemp("openai") / "chat.jsonl"
    rows = [{"messages": [{"role": "system", "content": "the story"}, {"role": "user", "content": sentence},
                          {"role": "assistant", "content": "good" if label == "positive" else "bad"}]}
            for sentence, label in sentiment_rows(64, seed=3)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with open(path, "rb") as handle:
        return oa.files.create(file=handle, purpose="fine-tune")


@pytest.fixture(scope="module")
def prompt_file(oa, tmp_path_factory):
    path = tmp_path_factory.mktemp("openai") / "prompts.jsonl"
    rows = [{"prompt": f"{sentence} :", "completion": " good" if label == "positive" else " bad"}
            for sentence, label in sentiment_rows(48, seed=4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return oa.files.create(file=path, purpose="fine-tune")


def wait(oa: openai.OpenAI, job_id: str):
    deadline = time.monotonic() + TIMEOUT
    while (job := oa.fine_tuning.jobs.retrieve(job_id)).status not in FINISHED:
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        time.sleep(0.5)
    return job


@pytest.fixture(scope="module")
def succeeded_job(oa, chat_file, live_service):
    job = oa.fine_tuning.jobs.create(
        model="tiny-chat-gpt2", training_file=chat_file.id, validation_file=chat_file.id, suffix="sentiment",
        seed=7, method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": 2}}},
        metadata={"adalora_init_r": "4", "adalora_target_r": "2", "adalora_max_steps": "24", "team": "nlp"})
    assert (job.status, job.seed, job.model, job.training_file) == ("queued", 7, "tiny-chat-gpt2", chat_file.id)
    assert (job.hyperparameters.batch_size, job.hyperparameters.learning_rate_multiplier) == (8, 2.0)
    assert job.fine_tuned_model is None and job.metadata["team"] == "nlp"
    done = wait(oa, job.id)
    assert done.status == "succeeded", (done.error, live_service.logs())
    return done


def test_files_in_openais_shape(oa, chat_file, prompt_file):
    assert chat_file.object == "file" and chat_file.id.startswith("file-") and chat_file.purpose == "fine-tune"
    assert chat_file.filename == "chat.jsonl" and chat_file.bytes > 0 and chat_file.status == "processed"
    assert oa.files.retrieve(chat_file.id).bytes == chat_file.bytes
    listed = [f.id for f in oa.files.list()]
    assert listed.index(prompt_file.id) < listed.index(chat_file.id)  # newest first
    assert oa.files.content(chat_file.id).read().startswith(b'{"messages"')


def test_a_chat_job_from_create_to_download(oa, succeeded_job, live_service, api_key):
    job = succeeded_job
    assert job.fine_tuned_model == f"ft:tiny-chat-gpt2:sentiment:{job.id}"
    assert job.finished_at >= job.created_at and job.error is None and job.estimated_finish is None
    assert job.method.type == "supervised" and job.hyperparameters.n_epochs == "auto"

    with httpx.Client(base_url=live_service.url, headers={"Authorization": f"Bearer {api_key}"}) as ours:
        ours_job = ours.get(f"/v1/jobs/{job.id}").json()
        assert job.trained_tokens == ours_job["trained_tokens"] > 0
        spec = ours_job["spec"]
        assert (spec["budget"]["init_r"], spec["budget"]["target_r"], spec["training"]["max_steps"]) == (4, 2, 24)
        assert spec["training"]["learning_rate"] == pytest.approx(2e-3) and spec["task"] == "causal_lm"
        assert spec["dataset"]["messages_column"] == "messages"
        download = ours.get(f"/v1/jobs/{job.fine_tuned_model.rsplit(':', 1)[1]}/artifacts/adapter")
        assert download.status_code == 200 and len(download.content) > 1000

        ours_events = ours.get(f"/v1/jobs/{job.id}/events", params={"limit": 1000}).json()["data"]
    events = list(oa.fine_tuning.jobs.list_events(job.id, limit=2))  # auto-paging, two at a time
    assert [e.id for e in events] == [f"ftevent-{e['id']}" for e in reversed(ours_events)]  # newest first
    assert events[-1].message == "job queued" and all(e.object == "fine_tuning.job.event" for e in events)
    first = oa.fine_tuning.jobs.list_events(job.id, limit=2)
    assert first.has_more and len(first.data) == 2

    checkpoints = oa.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints[0].step_number == 24 and checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    assert checkpoints[0].metrics.train_loss is not None and checkpoints[0].metrics.valid_loss is not None


def test_an_auto_learning_rate_multiplier_asks_for_our_range_test(oa, prompt_file, live_service, api_key):
    job = oa.fine_tuning.jobs.create(model="tiny-chat-gpt2", training_file=prompt_file.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": "auto"}}},
        metadata={"adalora_init_r": "4", "adalora_target_r": "2", "adalora_max_steps": "24"})
    ours = httpx.get(f"{live_service.url}/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {api_key}"}).json()
    assert ours["spec"]["training"]["learning_rate"] == "auto"
    finished = wait(oa, job.id)
    assert finished.status == "succeeded"
    probed = httpx.get(f"{live_service.url}/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {api_key}"}).json()
    assert probed["lr_probe"]["steps"] >= 16 and probed["learning_rate"] == probed["lr_probe"]["learning_rate"]
    multiplier = finished.hyperparameters.learning_rate_multiplier
    assert multiplier == pytest.approx(probed["learning_rate"] / 1e-3)


def test_legacy_hyperparameters_prompt_completion_and_cancel(oa, prompt_file):
    job = oa.fine_tuning.jobs.create(model="tiny-chat-gpt2", training_file=prompt_file.id,
                                     hyperparameters={"n_epochs": 2, "batch_size": 4})
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (2, 4)
    assert job.hyperparameters.learning_rate_multiplier == 1.0
    cancelled = oa.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id and cancelled.status in ("running", "cancelled")
    assert wait(oa, job.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        oa.fine_tuning.jobs.cancel(job.id)


def test_listing_pages_with_after_and_has_more(oa, succeeded_job, prompt_file):
    second = oa.fine_tuning.jobs.create(model="tiny-chat-gpt2", training_file=prompt_file.id,
                                        metadata={"adalora_max_steps": "12"})
    oa.fine_tuning.jobs.cancel(second.id)
    page = oa.fine_tuning.jobs.list(limit=1)
    assert page.has_more and [j.id for j in page.data] == [second.id]  # newest first
    assert oa.fine_tuning.jobs.list(limit=1, after=second.id).data[0].created_at <= second.created_at
    every = [j.id for j in oa.fine_tuning.jobs.list(limit=1)]  # the client follows `after` page by page
    assert every[0] == second.id and succeeded_job.id in every and len(every) == len(set(every))


@pytest.mark.parametrize("change, param", [
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}}, "method.type"),
    ({"method": {"type": "reinforcement", "reinforcement": {}}}, "method.type"),
    ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
    ({"metadata": {"adalora_target_r": "lots"}}, "metadata.adalora_target_r"),
    ({"metadata": {"adalora_init_r": "4", "adalora_target_r": "9"}}, "metadata.adalora_target_r"),
    ({"metadata": {"adalora_rank": "4"}}, "metadata.adalora_rank"),
    ({"hyperparameters": {"batch_size": 0}}, "method.supervised.hyperparameters.batch_size"),
    ({"training_file": "file-0123456789abcdef0123456789abcdef"}, "training_file"),
    ({"model": "../../etc"}, "model"),
])
def test_what_we_do_not_serve_answers_in_openais_error_shape(oa, chat_file, change, param):
    request = {"model": "tiny-chat-gpt2", "training_file": chat_file.id, **change}
    with pytest.raises(openai.BadRequestError) as refused:
        oa.fine_tuning.jobs.create(**request)
    error = refused.value.body
    assert refused.value.status_code == 400 and error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["message"]


def test_a_file_not_in_a_chat_or_prompt_format_is_refused(oa, tiny_dataset_file):
    csv = oa.files.create(file=tiny_dataset_file, purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="chat format") as refused:
        oa.fine_tuning.jobs.create(model="tiny-chat-gpt2", training_file=csv.id)
    assert refused.value.body["param"] == "training_file"


def test_another_tenants_ids_are_not_found(live_service, succeeded_job, chat_file):
    with openai.OpenAI(base_url=f"{live_service.url}/openai/v1", api_key=live_service.new_key(),
                       max_retries=0) as other:
        for call in (lambda: other.fine_tuning.jobs.retrieve(succeeded_job.id),
                     lambda: other.fine_tuning.jobs.cancel(succeeded_job.id),
                     lambda: other.fine_tuning.jobs.list_events(succeeded_job.id),
                     lambda: other.fine_tuning.jobs.checkpoints.list(succeeded_job.id),
                     lambda: other.files.retrieve(chat_file.id),
                     lambda: other.files.delete(chat_file.id)):
            with pytest.raises(openai.NotFoundError) as missing:
                call()
            assert missing.value.body["code"] == "not_found"
        assert [j.id for j in other.fine_tuning.jobs.list()] == []
        with pytest.raises(openai.BadRequestError) as refused:
            other.fine_tuning.jobs.create(model="tiny-chat-gpt2", training_file=chat_file.id)
        assert refused.value.body["param"] == "training_file"
    with openai.OpenAI(base_url=f"{live_service.url}/openai/v1", api_key="ada_not_a_key", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.fine_tuning.jobs.list()


def test_pause_and_resume_are_refused_clearly(oa, succeeded_job):
    for call in (oa.fine_tuning.jobs.pause, oa.fine_tuning.jobs.resume):
        with pytest.raises(openai.BadRequestError, match="not supported"):
            call(succeeded_job.id)


def test_deleting_a_file(oa, tmp_path):
    path = tmp_path / "spare.jsonl"
    path.write_text('{"prompt": "good film :", "completion": " good"}\n')
    spare = oa.files.create(file=path, purpose="fine-tune")
    assert oa.files.delete(spare.id).deleted
    with pytest.raises(openai.NotFoundError):
        oa.files.retrieve(spare.id)


def test_a_retried_upload_answers_like_the_first(live_service, api_key):
    """OpenAI answers an upload with 200; a replay under the same Idempotency-Key must too, with the same file."""
    def upload():
        return httpx.post(f"{live_service.url}/openai/v1/files", data={"purpose": "fine-tune"},
                          files={"file": ("retry.jsonl", b'{"prompt": "fine film :", "completion": " good"}\n')},
                          headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "openai-upload-retry"})
    first, second = upload(), upload()
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert first.json()["id"] == second.json()["id"] and second.headers.get("idempotent-replayed") == "true"


def test_the_schema_of_the_openai_routes(live_service):
    schema = httpx.get(f"{live_service.url}/openai/v1/openapi.json").json()
    assert schema["servers"] == [{"url": "/openai/v1"}]
    assert {"/files", "/fine_tuning/jobs", "/fine_tuning/jobs/{job_id}/events"} <= set(schema["paths"])


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/fine_tuning/jobs", b"{not json"),
    ("POST", "/fine_tuning/jobs", b"\xff\xfe"),
    ("POST", "/fine_tuning/jobs", b'{"model": 3, "training_file": []}'),
    ("POST", "/fine_tuning/jobs", b'{"model": "tiny-chat-gpt2", "training_file": "file-x", "surprise": 1}'),
    ("POST", "/fine_tuning/jobs", b'{"model": "tiny-chat-gpt2", "training_file": "file-\\u0000"}'),
    ("POST", "/fine_tuning/jobs", b'{"model": "m", "training_file": "f", "suffix": "' + b"s" * 65 + b'"}'),
    ("POST", "/fine_tuning/jobs", b'{"model": "m", "training_file": "f", "seed": -1}'),
    ("POST", "/fine_tuning/jobs", b'{"model": "m", "training_file": "f", "metadata": {"a": 1}}'),
    ("GET", "/fine_tuning/jobs?limit=0", None),
    ("GET", "/fine_tuning/jobs?limit=101", None),
    ("GET", "/fine_tuning/jobs/not-a-job", None),
    ("GET", "/fine_tuning/jobs/%00/events", None),
    ("GET", "/fine_tuning/jobs/00000000-0000-0000-0000-000000000000/checkpoints?after=x", None),
    ("GET", "/files/file-%00", None),
    ("DELETE", "/files/..%2F..%2Fetc%2Fpasswd", None),
    ("POST", "/files", b"not multipart"),
])
def test_bad_requests_answer_4xx_in_openais_shape(live_service, api_key, method, path, body):
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    answer = httpx.request(method, f"{live_service.url}/openai/v1{path}", content=body, headers=headers)
    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error", error


def test_a_fine_tuned_model_is_fine_tuned_further(oa, succeeded_job, prompt_file, live_service, api_key):
    """OpenAI's way to continue: model="ft:...". The new job starts from that job's final state."""
    job = oa.fine_tuning.jobs.create(model=succeeded_job.fine_tuned_model, training_file=prompt_file.id,
                                     metadata={"adalora_max_steps": "12"})
    assert job.model == "tiny-chat-gpt2"
    done = wait(oa, job.id)
    assert done.status == "succeeded", done.error
    with httpx.Client(base_url=live_service.url, headers={"Authorization": f"Bearer {api_key}"}) as ours:
        spec = ours.get(f"/v1/jobs/{job.id}").json()["spec"]
        events = [e["message"] for e in ours.get(f"/v1/jobs/{job.id}/events", params={"limit": 100}).json()["data"]]
    assert spec["from_checkpoint"] == succeeded_job.id and spec["budget"]["init_r"] == 4
    assert any(m.startswith(f"starting from {succeeded_job.id}") for m in events), events
    with pytest.raises(openai.BadRequestError) as refused:
        oa.fine_tuning.jobs.create(model="ft:tiny-chat-gpt2:x:00000000-0000-0000-0000-000000000000",
                                   training_file=prompt_file.id)
    assert refused.value.body["param"] == "model"


def test_continuing_refuses_what_v1_refuses_before_anything_is_queued(oa, succeeded_job, prompt_file):
    """The earlier job's adapters have init_r 4: a new init_r cannot load them. /v1 refuses this at submission;
    the OpenAI surface runs the same checks, so it is a 400 naming our metadata key, not a failed job later."""
    before = len(oa.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as refused:
        oa.fine_tuning.jobs.create(model=succeeded_job.fine_tuned_model, training_file=prompt_file.id,
                                   metadata={"adalora_init_r": "8"})
    assert refused.value.body["param"] == "metadata.adalora_init_r"
    assert "must be 4 as in job" in refused.value.body["message"]
    assert len(oa.fine_tuning.jobs.list(limit=100).data) == before
