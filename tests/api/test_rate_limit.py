"""JOBS_PER_MINUTE: a tenant's job creation over the limit is 429 with Retry-After, counted in the database."""

from __future__ import annotations

from datetime import timedelta

from service.keys import create_api_key, tenant_for_key
from service.tables import utcnow
from tests.api.conftest import tiny_spec


def create(client, headers, **extra):
    return client.post("/v1/jobs", json=tiny_spec(), headers={**headers, **extra})


def test_over_the_limit_is_429_with_retry_after(client, alice, env_override):
    env_override(JOBS_PER_MINUTE="2")
    assert [create(client, alice).status_code for _ in range(2)] == [201, 201]
    response = create(client, alice)
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert "2 per minute" in response.json()["detail"]
    assert client.get("/v1/jobs", headers=alice).json()["count"] == 2


def test_jobs_older_than_a_minute_free_their_slot(client, alice, seed_job, env_override):
    env_override(JOBS_PER_MINUTE="2")
    seed_job(alice, created_at=utcnow() - timedelta(seconds=61))
    seed_job(alice, created_at=utcnow() - timedelta(seconds=50))
    assert create(client, alice).status_code == 201
    response = create(client, alice)
    assert response.status_code == 429 and 5 <= int(response.headers["retry-after"]) <= 11  # the 50 s old one


def test_each_tenant_has_its_own_allowance(client, alice, bob, env_override):
    env_override(JOBS_PER_MINUTE="1")
    assert create(client, alice).status_code == 201
    assert create(client, alice).status_code == 429
    assert create(client, bob).status_code == 201


def test_a_tenants_keys_share_one_allowance_so_a_new_key_does_not_escape_it(client, alice, sessions,
                                                                            env_override):
    env_override(JOBS_PER_MINUTE="2")
    with sessions() as session:
        tenant = tenant_for_key(session, alice["Authorization"].removeprefix("Bearer "))
        second_key = {"Authorization": f"Bearer {create_api_key(session, tenant.name, 'second key')}"}
        session.commit()
    assert create(client, alice).status_code == 201
    assert create(client, second_key).status_code == 201
    for headers in (alice, second_key):
        response = create(client, headers)
        assert response.status_code == 429 and "retry-after" in response.headers
    assert client.get("/v1/jobs", headers=second_key).json()["count"] == 2


def test_dry_runs_and_idempotent_retries_are_not_counted(client, alice, env_override):
    env_override(JOBS_PER_MINUTE="1")
    assert client.post("/v1/jobs", json=tiny_spec(dry_run=True), headers=alice).status_code == 200
    first = create(client, alice, **{"Idempotency-Key": "retry-me"})
    again = create(client, alice, **{"Idempotency-Key": "retry-me"})
    assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]


def test_zero_disables_the_limit(client, alice, env_override):
    env_override(JOBS_PER_MINUTE="0")
    assert {create(client, alice).status_code for _ in range(3)} == {201}
