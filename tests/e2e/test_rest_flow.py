"""The whole service as a user meets it: a key from the CLI, a job over REST, a real Celery worker trains it
(Postgres + Redis, and the embedded SQLite + SQLite broker), progress and downloads over REST, and the
downloads load in stock peft and stock transformers."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from api.main import create_app
from tests.conftest import REPO, assert_kept_params, tiny_job_spec, wait_for

JOB_TIMEOUT = 120  # seconds; the worker's first job also imports torch and transformers
# Adapter (base + B(A*E) at runtime) and merged weights (the same sum folded into W) differ only by
# float32 rounding in a 2-layer model with activations of order 1.
LOGITS_ATOL = 1e-4


@pytest.fixture(scope="module")
def client(service_env, celery_worker):
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture(scope="module")
def headers(service_env) -> dict[str, str]:
    """A key made the way an operator makes one: `adalora-svc create-key`."""
    result = subprocess.run([sys.executable, "-m", "cli", "create-key", "--tenant", "e2e-tenant"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    key = next(word for word in result.stdout.split() if word.startswith("ada_"))
    return {"Authorization": f"Bearer {key}"}


def submit(client, headers, spec: dict) -> str:
    response = client.post("/v1/jobs", json=spec, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_for_job(client, headers, job_id: str, worker, done, what: str, timeout: float = JOB_TIMEOUT) -> dict:
    def check():
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        return job if done(job) else None

    try:
        return wait_for(check, timeout, interval=0.2, what=what)
    except BaseException:
        print(worker.log_tail())
        raise


def is_finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def finished_job(client, headers, celery_worker) -> dict:
    started = time.monotonic()
    job_id = submit(client, headers, tiny_job_spec())
    job = wait_for_job(client, headers, job_id, celery_worker, is_finished, "the job to finish")
    assert job["status"] == "succeeded", job["error"]
    print(f"tiny job: {time.monotonic() - started:.1f} s from POST to succeeded (first job of a fresh worker)")
    return job


def test_job_reports_completed_progress(finished_job):
    job = finished_job
    assert (job["step"], job["total_steps"], job["current_budget"]) == (24, 24, 2 * 908)  # target_r 2, in params
    assert (job["budget_unit"], job["budget_target"]) == ("params", 2 * 908)
    assert 2 * 908 - 97 < job["adapter_params"] <= 2 * 908
    assert job["eta_seconds"] is None and job["latest_metrics"]["step"] == 24


def test_metrics_steps_increase(client, headers, finished_job):
    metrics = client.get(f"/v1/jobs/{finished_job['id']}/metrics", headers=headers).json()["data"]
    steps = [m["step"] for m in metrics]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 24
    assert all({"loss", "lr", "budget"} <= m["values"].keys() for m in metrics[1:])
    assert "eval_loss" in metrics[0]["values"]  # step 0: the evaluation before training


def test_rank_snapshots_fall_from_init_to_target(client, headers, finished_job):
    ranks = client.get(f"/v1/jobs/{finished_job['id']}/ranks", headers=headers).json()
    budgets = [s["budget"] for s in ranks["data"]]
    # 12 adapted modules, init_r 4 -> target_r 2, counted in parameters (908 per rank in every module)
    assert budgets[0] == 4 * 908 and budgets[-1] == 2 * 908
    assert budgets == sorted(budgets, reverse=True)
    assert ranks["final_rank_pattern"] == ranks["data"][-1]["ranks"]
    for snapshot in ranks["data"][1:]:
        assert_kept_params(snapshot["ranks"], snapshot["adapter_params"], snapshot["budget"])


def test_event_stream_replays_and_ends_with_success(client, headers, finished_job):
    response = client.get(f"/v1/jobs/{finished_job['id']}/events", headers={**headers, "Accept": "text/event-stream"})
    assert "job queued" in response.text and "adapter ready" in response.text
    assert response.text.rstrip().endswith('data: {"status": "succeeded"}')


def download(client, headers, url: str) -> bytes:
    """Fetch in two requests, as a client resuming a broken download would, and verify the checksum."""
    head = client.head(url, headers=headers)
    size, etag = int(head.headers["content-length"]), head.headers["etag"]
    first = client.get(url, headers={**headers, "Range": f"bytes=0-{size // 2 - 1}"})
    rest = client.get(url, headers={**headers, "Range": f"bytes={size // 2}-", "If-Range": etag})
    assert (first.status_code, rest.status_code) == (206, 206)
    body = first.content + rest.content
    assert len(body) == size and hashlib.sha256(body).hexdigest() == head.headers["x-checksum-sha256"]
    return body


def extract(archive: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    [folder] = list(into.iterdir())
    return folder


def test_downloads_load_in_stock_peft_and_transformers_with_equal_logits(
        client, headers, finished_job, tiny_model_dir, tmp_path):
    url = f"/v1/jobs/{finished_job['id']}/artifacts"
    adapter_dir = extract(download(client, headers, f"{url}/adapter"), tmp_path / "adapter")
    merged_dir = extract(download(client, headers, f"{url}/merged"), tmp_path / "merged")
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["peft_type"] == "ADALORA"

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    batch = tokenizer(["the movie was great", "a dull and grim story", "acting quite nice"],
                      padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        base_logits = base(**batch).logits
        adapter_logits = PeftModel.from_pretrained(base, adapter_dir).eval()(**batch).logits
        merged_logits = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()(**batch).logits

    torch.testing.assert_close(adapter_logits, merged_logits, atol=LOGITS_ATOL, rtol=0)
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-3)  # training changed the model


def test_cancel_over_rest_stops_a_running_job_and_the_worker_takes_the_next(client, headers, finished_job,
                                                                           celery_worker):
    long_job = submit(client, headers, tiny_job_spec(max_steps=20_000))
    wait_for_job(client, headers, long_job, celery_worker, lambda j: j["status"] == "running" and j["step"] > 0,
                 "the long job to start training")
    assert client.post(f"/v1/jobs/{long_job}/cancel", headers=headers).json()["status"] == "cancelling"
    job = wait_for_job(client, headers, long_job, celery_worker, is_finished, "the cancel to land", timeout=15)
    assert job["status"] == "cancelled" and job["step"] < 20_000
    response = client.get(f"/v1/jobs/{long_job}/artifacts/adapter", headers=headers)
    assert response.status_code == 404
    next_job = submit(client, headers, tiny_job_spec())
    job = wait_for_job(client, headers, next_job, celery_worker, is_finished, "the next job to finish")
    assert job["status"] == "succeeded", job["error"]
