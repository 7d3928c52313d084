"""Creating, listing, reading and cancelling jobs."""

from datetime import timedelta

import pytest

from service.tables import Metric, utcnow
from tests.api.conftest import drain_queue, tiny_spec


def test_create_job_commits_row_then_enqueues_it(client, alice):
    drain_queue()
    response = client.post("/v1/jobs", json=tiny_spec(name="first"), headers=alice)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["name"] == "first" and job["model"] == "tiny-bert"
    assert job["spec"]["budget"]["target_r"] == 2 and "dry_run" not in job["spec"]
    assert drain_queue() == [job["id"]]
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] == "queued"
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=alice).json()["data"]
    assert [e["message"] for e in events] == ["job queued"]


def test_broker_down_fails_the_job_with_503(client, alice, env_override):
    env_override(BROKER_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    response = client.post("/v1/jobs", json=tiny_spec(), headers=alice)
    assert response.status_code == 503 and "broker unreachable" in response.json()["detail"]
    [job] = client.get("/v1/jobs", headers=alice).json()["data"]
    assert job["status"] == "failed" and "could not queue" in job["error"]


def test_list_filters_by_status_and_pages_newest_first(client, alice, bob, seed_job):
    ids = [seed_job(alice, status) for status in ("queued", "running", "succeeded", "succeeded", "failed")]
    seed_job(bob, "succeeded")
    page = client.get("/v1/jobs", params={"limit": 2}, headers=alice).json()
    assert page["count"] == 5 and [j["id"] for j in page["data"]] == ids[::-1][:2]
    rest = client.get("/v1/jobs", params={"limit": 2, "offset": 2}, headers=alice).json()["data"]
    last = client.get("/v1/jobs", params={"limit": 2, "offset": 4}, headers=alice).json()["data"]
    assert [j["id"] for j in page["data"] + rest + last] == ids[::-1]
    done = client.get("/v1/jobs", params={"status": "succeeded"}, headers=alice).json()
    assert done["count"] == 2 and {j["id"] for j in done["data"]} == set(ids[2:4])


@pytest.mark.parametrize("params", [{"status": "done"}, {"limit": 0}, {"limit": 201}, {"offset": -1}])
def test_list_rejects_bad_query_naming_the_parameter(client, alice, params):
    response = client.get("/v1/jobs", params=params, headers=alice)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == next(iter(params))


def test_get_running_job_shows_progress_latest_metrics_and_eta(client, alice, seed_job, sessions):
    started = utcnow() - timedelta(seconds=100)
    job_id = seed_job(alice, "running", started_at=started, step=25, total_steps=100, current_budget=30.0)
    with sessions() as session:
        session.add_all([Metric(job_id=job_id, step=s, values={"loss": 1.0 / s, "lr": 1e-3}) for s in (10, 20, 25)])
        session.commit()
    before = utcnow()
    job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    after = utcnow()
    assert (job["status"], job["step"], job["total_steps"], job["current_budget"]) == ("running", 25, 100, 30.0)
    assert job["latest_metrics"] == {"step": 25, "values": {"loss": 0.04, "lr": 1e-3}}
    # 25 of 100 steps took the elapsed time, so the remaining 75 take three times as long.
    elapsed = [(t - started).total_seconds() for t in (before, after)]
    assert 3 * elapsed[0] - 0.01 <= job["eta_seconds"] <= 3 * elapsed[1] + 0.01


def test_the_tokens_a_job_trained_show_on_rest_and_the_openai_surface_null_until_counted(client, alice, seed_job):
    counted = seed_job(alice, "running", started_at=utcnow(), step=3, total_steps=10, trained_tokens=4321)
    fresh = seed_job(alice, "running", started_at=utcnow())
    for path in ("/v1/jobs/{}", "/openai/v1/fine_tuning/jobs/{}"):
        assert client.get(path.format(counted), headers=alice).json()["trained_tokens"] == 4321
        assert client.get(path.format(fresh), headers=alice).json()["trained_tokens"] is None
    assert client.get("/v1/jobs", headers=alice).json()["data"][1]["trained_tokens"] == 4321  # newest first


def test_queued_job_has_no_eta_or_metrics(client, alice, seed_job):
    job = client.get(f"/v1/jobs/{seed_job(alice)}", headers=alice).json()
    assert job["eta_seconds"] is None and job["latest_metrics"] is None


def test_cancel_queued_job_is_immediate(client, alice, seed_job):
    job_id = seed_job(alice, "queued")
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=alice).json() == {"id": job_id, "status": "cancelled"}
    job = client.get(f"/v1/jobs/{job_id}", headers=alice).json()
    assert job["status"] == "cancelled" and job["finished_at"] is not None


def test_cancel_running_job_asks_the_worker_then_repeats_idempotently(client, alice, seed_job):
    job_id = seed_job(alice, "running", started_at=utcnow())
    for _ in range(2):
        response = client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
        assert response.status_code == 200 and response.json()["status"] == "cancelling"
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["finished_at"] is None


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_job_is_409(client, alice, seed_job, status):
    response = client.post(f"/v1/jobs/{seed_job(alice, status)}/cancel", headers=alice)
    assert response.status_code == 409 and status in response.json()["detail"]
