"""An uploaded file all the way through: POST /v1/files, a job naming its id, a real Celery worker trains on
it, and the file cannot be deleted until the job has finished."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.keys import create_api_key
from tests.conftest import sentiment_rows, tiny_job_spec, wait_for

JOB_TIMEOUT = 120  # seconds; the worker's first job also imports torch and transformers


@pytest.fixture(scope="module")
def client(service_env, celery_worker):
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture(scope="module")
def headers(engine) -> dict[str, str]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        key = create_api_key(session, "upload-flow")
        session.commit()
    return {"Authorization": f"Bearer {key}"}


def test_a_job_trains_on_an_uploaded_file(client, headers, celery_worker):
    rows = "".join(f'{{"sentence": "{s}", "label": "{y}"}}\n' for s, y in sentiment_rows(96))
    upload = client.post("/v1/files", headers=headers, files={"file": ("sentiment.jsonl", rows.encode())})
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["id"]
    spec = {**tiny_job_spec(), "dataset": {"source": "file", "file_id": file_id, "validation_split": 0.25}}
    response = client.post("/v1/jobs", headers=headers, json=spec)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert client.delete(f"/v1/files/{file_id}", headers=headers).status_code == 409

    def finished():
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    try:
        job = wait_for(finished, JOB_TIMEOUT, what="the job on the uploaded file to finish")
    except BaseException:
        print(celery_worker.log_tail())
        raise
    assert job["status"] == "succeeded", job["error"]
    assert "eval_accuracy" in job["latest_metrics"]["values"]
    assert client.delete(f"/v1/files/{file_id}", headers=headers).status_code == 204
