"""GET /v1/jobs/{id}, the route pollers hit: one SQL statement checks the key and reads the job with its latest
metrics, the key is still checked in full, and an unchanged job answers If-None-Match with a bodiless 304."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, update

from service.keys import revoke_api_key
from service.tables import Job, Metric, utcnow


@contextmanager
def statements():
    """The SQL statements every engine in this process sends meanwhile (the app's included)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@pytest.fixture
def running_job(alice, seed_job, sessions):
    job_id = seed_job(alice, "running", started_at=utcnow() - timedelta(seconds=60), step=10, total_steps=40)
    with sessions() as session:
        session.add_all([Metric(job_id=job_id, step=s, values={"loss": 1.0 / s}) for s in (5, 10)])
        session.commit()
    return job_id


def test_get_job_is_one_statement_for_key_job_and_latest_metrics(client, alice, running_job):
    client.get(f"/v1/jobs/{running_job}", headers=alice)  # a first connection may read server settings
    with statements() as sent:
        response = client.get(f"/v1/jobs/{running_job}", headers=alice)
    assert response.status_code == 200 and response.json()["latest_metrics"] == {"step": 10, "values": {"loss": 0.1}}
    assert len(sent) == 1, sent
    assert all(table in sent[0] for table in ("api_keys", "jobs", "metrics"))


def test_the_one_statement_still_checks_the_whole_key(client, alice, bob, running_job, sessions):
    scheme, prefix, _secret = alice["Authorization"].removeprefix("Bearer ").split("_", 2)
    forged = {"Authorization": f"Bearer {scheme}_{prefix}_forged-secret"}
    assert client.get(f"/v1/jobs/{running_job}", headers=forged).status_code == 401
    assert client.get(f"/v1/jobs/{running_job}", headers=bob).status_code == 404  # bob's key is fine; not his job
    with sessions() as session:
        assert revoke_api_key(session, prefix)
        session.commit()
    for job_id in (running_job, "00000000-0000-0000-0000-000000000000", "not-an-id"):
        response = client.get(f"/v1/jobs/{job_id}", headers=alice)
        assert response.status_code == 401, job_id  # a revoked key learns nothing, not even that a job exists
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_unchanged_job_answers_if_none_match_with_304(client, alice, running_job):
    first = client.get(f"/v1/jobs/{running_job}", headers=alice)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    again = client.get(f"/v1/jobs/{running_job}", headers={**alice, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # The ETA moved with the clock meanwhile, which a weak validator allows; any of several tags, or *, match.
    for header in (f'"other", {etag}', etag.removeprefix("W/"), "*"):
        assert client.get(f"/v1/jobs/{running_job}", headers={**alice, "If-None-Match": header}).status_code == 304


def test_progress_or_new_metrics_change_the_etag(client, alice, running_job, sessions):
    etag = client.get(f"/v1/jobs/{running_job}", headers=alice).headers["etag"]
    with sessions() as session:
        session.add(Metric(job_id=running_job, step=11, values={"loss": 0.09}))
        session.commit()
    changed = client.get(f"/v1/jobs/{running_job}", headers={**alice, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["latest_metrics"]["step"] == 11
    assert changed.headers["etag"] != etag
    with sessions() as session:
        session.execute(update(Job).where(Job.id == running_job).values(status="cancelling"))
        session.commit()
    assert client.get(f"/v1/jobs/{running_job}",
                      headers={**alice, "If-None-Match": changed.headers["etag"]}).json()["status"] == "cancelling"


def test_a_matching_etag_from_another_tenant_is_still_404(client, alice, bob, running_job):
    etag = client.get(f"/v1/jobs/{running_job}", headers=alice).headers["etag"]
    assert client.get(f"/v1/jobs/{running_job}", headers={**bob, "If-None-Match": etag}).status_code == 404
