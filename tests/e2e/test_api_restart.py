"""The API process killed (kill -9) while a job trains, then started again: the job lives in the database and
on the broker, never in the API, so the worker trains on meanwhile, and over the new API process the job ends
succeeded with every metric step and downloads that match their checksums.

A real uvicorn process and a real Celery worker, on Postgres + Redis and on SQLite + the SQLite broker."""

from __future__ import annotations

import hashlib
import os
import signal

import httpx
import pytest
from sqlalchemy import select

from service.db import session_scope
from service.keys import create_api_key
from service.tables import Artifact
from tests.conftest import free_port, start_api, stop_process, tiny_job_spec, wait_for
from tests.helpers import JOB_TIMEOUT, job_row

STEPS = 120
FINISH_TIMEOUT = 240  # seconds; generous for a loaded CI machine, reached only when something is wrong


@pytest.fixture
def api_key(service_env) -> dict[str, str]:
    with session_scope() as session:
        raw = create_api_key(session, "api-restart")
    return {"Authorization": f"Bearer {raw}"}


def test_killing_the_api_mid_job_loses_nothing(service_env, celery_worker, api_key, tmp_path):
    port, log_path = free_port(), tmp_path / "api.log"
    api = start_api(service_env, port, log_path)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=api_key, timeout=30)
    try:
        response = http.post("/v1/jobs", json=tiny_job_spec(max_steps=STEPS))
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["step"] > 0, JOB_TIMEOUT,
                 what="the job to start training")

        os.killpg(api.pid, signal.SIGKILL)  # no shutdown of any kind
        api.wait()
        killed_at = job_row(job_id).step
        wait_for(lambda: job_row(job_id).step > killed_at, 30, what="the worker to train on without an API")

        api = start_api(service_env, port, log_path)  # the same address, as after a restart
        job = wait_for(lambda: (j := http.get(f"/v1/jobs/{job_id}").json())["status"] in
                       ("succeeded", "failed", "cancelled") and j, FINISH_TIMEOUT, what="the job to finish")
        assert (job["status"], job["error"], job["step"]) == ("succeeded", None, STEPS)

        metrics = http.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 5000}).json()
        assert [m["step"] for m in metrics["data"]] == list(range(0, STEPS + 1)) and not metrics["has_more"]
        ranks = http.get(f"/v1/jobs/{job_id}/ranks").json()
        assert ranks["data"][0]["step"] == 0 and ranks["data"][-1]["final"]
        with session_scope() as session:
            stored = {a.kind: a.sha256 for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}
        for kind in ("adapter", "merged"):
            download = http.get(f"/v1/jobs/{job_id}/artifacts/{kind}")
            assert download.status_code == 200, download.text
            digest = hashlib.sha256(download.content).hexdigest()
            assert digest == download.headers["x-checksum-sha256"] == stored[kind]
        print(f"API killed at step {killed_at} of {STEPS}; {STEPS} metric rows and 2 downloads checked")
    except BaseException:
        print(log_path.read_text(errors="replace")[-3000:])
        print(celery_worker.log_tail())
        raise
    finally:
        http.close()
        stop_process(api)
