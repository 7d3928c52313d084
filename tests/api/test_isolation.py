"""A tenant never reaches another tenant's jobs: every endpoint answers 404 (not 403) and leaks nothing."""

import pytest

from service.models import Metric, RankSnapshot

JOB_ROUTES = [("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/metrics"), ("GET", "/ranks"),
              ("GET", "/ranks?step=10"), ("GET", "/checkpoints"), ("GET", "/artifacts/adapter"), ("HEAD", "/artifacts/adapter"),
              ("GET", "/artifacts/merged")]


@pytest.fixture
def bobs_job(client, bob, seed_job, sessions, stored_artifacts) -> str:
    """A finished job of bob's with everything a job can have: events, metrics, ranks, both artifacts."""
    job_id = seed_job(bob, "succeeded", step=24, total_steps=24)
    with sessions() as session:
        session.add(Metric(job_id=job_id, step=10, values={"loss": 0.5}))
        session.add(RankSnapshot(job_id=job_id, step=10, budget=24, ranks={"m": 2}, final=True))
        session.commit()
    stored_artifacts(job_id)
    return job_id


@pytest.mark.parametrize("method,route", JOB_ROUTES)
def test_other_tenants_job_is_404_on_every_route(client, alice, bob, bobs_job, method, route):
    url = f"/v1/jobs/{bobs_job}{route}"
    assert client.request(method, url, headers=bob).status_code in (200, 409)  # bob reaches it
    response = client.request(method, url, headers=alice)
    assert response.status_code == 404
    if method != "HEAD":
        assert response.json() == {"detail": f"no job {bobs_job}"}
    assert "x-checksum-sha256" not in response.headers


def test_other_tenants_job_streams_nothing(client, alice, bobs_job):
    response = client.get(f"/v1/jobs/{bobs_job}/events", headers={**alice, "Accept": "text/event-stream"})
    assert response.status_code == 404 and "data:" not in response.text


def test_listing_shows_only_own_jobs(client, alice, bob, bobs_job, seed_job):
    own = seed_job(alice)
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["data"]] == [own]
    assert [j["id"] for j in client.get("/v1/jobs", headers=bob).json()["data"]] == [bobs_job]


def test_cancel_by_another_tenant_changes_nothing(client, alice, bob, seed_job):
    job_id = seed_job(bob, "running")
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=alice).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}", headers=bob).json()["status"] == "running"


def test_unknown_id_looks_the_same_as_a_foreign_one(client, alice):
    response = client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=alice)
    assert response.status_code == 404
