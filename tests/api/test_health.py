"""Liveness, readiness (naming what is down) and Prometheus metrics."""

from tests.conftest import free_port
from tests.s3 import new_bucket, store_env

ALL_OK = {"database": "ok", "broker": "ok", "artifact_store": "ok"}


def test_ready_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": ALL_OK}


def test_not_ready_names_a_broken_database(client, env_override):
    env_override(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["broker"] == "ok"
    assert body["checks"]["database"].startswith("unreachable")
    assert client.get("/healthz").status_code == 200  # the process itself is fine


def test_not_ready_names_an_unreachable_broker(client, env_override):
    env_override(BROKER_URL="redis://127.0.0.1:1/0")
    body = client.get("/readyz").json()
    assert body["checks"] == {**ALL_OK, "broker": "unreachable"}


def test_readiness_checks_the_s3_store_and_its_bucket(client, env_override, s3_endpoint):
    env_override(**store_env(s3_endpoint, new_bucket(s3_endpoint)))
    assert client.get("/readyz").json()["checks"] == ALL_OK
    env_override(**store_env(s3_endpoint, "no-such-bucket"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["artifact_store"] == "the artifact store has no bucket 'no-such-bucket'"
    env_override(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    assert "cannot be reached" in client.get("/readyz").json()["checks"]["artifact_store"]


def test_prometheus_counts_requests_by_route_template_and_jobs_by_status(client, alice, seed_job):
    job_id = seed_job(alice, "running")
    for _ in range(3):
        client.get(f"/v1/jobs/{job_id}", headers=alice)
    text = client.get("/metrics").text
    assert 'http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"}' in text
    assert job_id not in text  # ids never become label values
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/jobs/{job_id}"}' in text
    running = next(line for line in text.splitlines() if line.startswith('adalora_jobs{status="running"}'))
    assert float(running.split()[-1]) >= 1
