"""A tenant never reaches another tenant's jobs or files: every endpoint that takes an id answers 404 (not
403) and leaks nothing; listings show only the caller's rows."""

import pytest

from api.main import app
from service.tables import Metric, RankSnapshot
from tests.api.helpers import file_spec, uploaded

JOB_ROUTES = [("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/metrics"), ("GET", "/metrics/columns"),
              ("GET", "/ranks"), ("GET", "/ranks/columns"), ("GET", "/ranks?step=10"), ("GET", "/checkpoints"),
              ("GET", "/artifacts/adapter"), ("HEAD", "/artifacts/adapter"), ("GET", "/artifacts/merged")]
FILE_ROUTES = [("GET", ""), ("GET", "/content"), ("DELETE", "")]
# Ids no row can have: a NUL byte (Postgres refuses it in a query), very long, a path, not a UUID.
MALFORMED_IDS = ["%00", "x" * 5000, "..%2F..%2Fetc", "file-" + "g" * 32, "not-a-uuid"]


def test_the_matrix_covers_every_route_that_takes_an_id():
    covered = ({f"/v1/jobs/{{job_id}}{route.split('?')[0]}" for _, route in JOB_ROUTES}
               | {f"/v1/files/{{file_id}}{route}" for _, route in FILE_ROUTES})
    id_routes = {path.replace("{kind}", kind) for path in app.openapi()["paths"] if "{" in path
                 for kind in ("adapter", "merged")}
    assert id_routes <= covered, f"add to the isolation matrix: {sorted(id_routes - covered)}"


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


@pytest.fixture
def alices_file(client, alice) -> str:
    return uploaded(client, alice)["id"]


@pytest.mark.parametrize("method,route", FILE_ROUTES)
def test_other_tenants_file_is_404_on_every_route(client, alice, bob, alices_file, method, route):
    response = client.request(method, f"/v1/files/{alices_file}{route}", headers=bob)
    assert response.status_code == 404
    if method != "HEAD":
        assert response.json() == {"detail": f"no file {alices_file}"}
    assert client.get(f"/v1/files/{alices_file}", headers=alice).status_code == 200  # still there, unchanged


def test_file_listing_shows_only_own_files(client, alice, bob, alices_file):
    assert [f["id"] for f in client.get("/v1/files", headers=alice).json()["data"]] == [alices_file]
    assert client.get("/v1/files", headers=bob).json() == {"data": [], "count": 0}


def test_a_job_cannot_train_on_another_tenants_file(client, alice, bob, alices_file):
    bobs_file = uploaded(client, bob)["id"]
    for spec, field in ((file_spec(alices_file), "dataset.file_id"),
                        (file_spec(bobs_file, validation_file_id=alices_file), "dataset.validation_file_id")):
        response = client.post("/v1/jobs", json=spec, headers=bob)
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["field"] == field and error["message"].startswith(f"no file {alices_file};")  # as if unknown
    assert client.get("/v1/jobs", headers=bob).json()["count"] == 0


@pytest.mark.parametrize("bad_id", MALFORMED_IDS, ids=["NUL", "long", "path", "bad hex", "not a uuid"])
@pytest.mark.parametrize("method,url", [(m, f"/v1/jobs/{{}}{r}") for m, r in JOB_ROUTES]
                         + [(m, f"/v1/files/{{}}{r}") for m, r in FILE_ROUTES])
def test_malformed_ids_are_404_not_500(client, alice, method, url, bad_id):
    assert client.request(method, url.format(bad_id), headers=alice).status_code == 404
