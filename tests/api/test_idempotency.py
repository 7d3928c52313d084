"""Idempotency-Key on the create routes: a retry gets the first answer and creates nothing new."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from api.idempotency import REPLAYED_HEADER
from service.settings import get_settings
from service.tables import IdempotentRequest, utcnow
from tests.api.conftest import drain_queue, tiny_spec
from tests.api.helpers import ROWS, as_jsonl


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def job_count(client, headers) -> int:
    return client.get("/v1/jobs", headers=headers).json()["count"]


def age_answer(sessions, key: str, hours: float) -> None:
    """Makes the stored answer for `key` (unique to the test) `hours` old."""
    with sessions() as session:
        session.execute(update(IdempotentRequest).where(IdempotentRequest.key == key)
                        .values(created_at=utcnow() - timedelta(hours=hours)))
        session.commit()


def test_retried_job_create_returns_the_first_job_and_queues_it_once(client, alice):
    drain_queue()
    key = str(uuid.uuid4())
    first = client.post("/v1/jobs", json=tiny_spec(name="once"), headers=keyed(alice, key))
    again = client.post("/v1/jobs", json=tiny_spec(name="once"), headers=keyed(alice, key))
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true" and REPLAYED_HEADER not in first.headers
    assert job_count(client, alice) == 1
    assert drain_queue() == [first.json()["id"]]


def test_same_key_with_another_body_is_refused(client, alice):
    key = str(uuid.uuid4())
    assert client.post("/v1/jobs", json=tiny_spec(name="a"), headers=keyed(alice, key)).status_code == 201
    response = client.post("/v1/jobs", json=tiny_spec(name="b"), headers=keyed(alice, key))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["field"] == "Idempotency-Key" and "different request" in error["message"]
    assert job_count(client, alice) == 1


def test_key_order_and_whitespace_do_not_make_a_different_request(client, alice):
    key = str(uuid.uuid4())
    spec = tiny_spec()
    reordered = dict(reversed(list(spec.items())))
    first = client.post("/v1/jobs", json=spec, headers=keyed(alice, key))
    again = client.post("/v1/jobs", json=reordered, headers=keyed(alice, key))
    assert again.json()["id"] == first.json()["id"]


def test_another_tenants_same_key_is_independent(client, alice, bob):
    key = "shared-looking-key"
    alices = client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key)).json()
    bobs = client.post("/v1/jobs", json=tiny_spec(name="other"), headers=keyed(bob, key))
    assert bobs.status_code == 201 and bobs.json()["id"] != alices["id"]
    assert job_count(client, alice) == job_count(client, bob) == 1


def test_without_a_key_every_request_creates_a_job(client, alice):
    for _ in range(2):
        assert client.post("/v1/jobs", json=tiny_spec(), headers=alice).status_code == 201
    assert job_count(client, alice) == 2


def test_dry_runs_are_not_recorded(client, alice):
    key = str(uuid.uuid4())
    dry = client.post("/v1/jobs", json=tiny_spec(dry_run=True), headers=keyed(alice, key))
    assert dry.status_code == 200, dry.text
    real = client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key))
    assert real.status_code == 201 and job_count(client, alice) == 1


def test_concurrent_twins_create_one_job(client, alice):
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key)),
                                  range(4)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert job_count(client, alice) == 1


def test_a_job_that_could_not_be_queued_can_be_retried_with_its_key(client, alice, env_override):
    key = str(uuid.uuid4())
    working_broker = os.environ["BROKER_URL"]
    env_override(BROKER_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key)).status_code == 503
    env_override(BROKER_URL=working_broker)
    retry = client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key))
    assert retry.status_code == 201 and REPLAYED_HEADER not in retry.headers
    statuses = sorted(j["status"] for j in client.get("/v1/jobs", headers=alice).json()["data"])
    assert statuses == ["failed", "queued"]


def test_an_expired_key_creates_a_new_job_and_then_replays_that_one(client, alice, sessions, env_override):
    env_override(IDEMPOTENCY_TTL_HOURS="24")
    key = str(uuid.uuid4())
    first = client.post("/v1/jobs", json=tiny_spec(name="monday"), headers=keyed(alice, key)).json()
    age_answer(sessions, key, 23.9)
    assert client.post("/v1/jobs", json=tiny_spec(name="monday"), headers=keyed(alice, key)).json() == first
    age_answer(sessions, key, 24.1)
    # Expired: even another body is a new request now, not a 422.
    second = client.post("/v1/jobs", json=tiny_spec(name="tuesday"), headers=keyed(alice, key))
    assert second.status_code == 201 and REPLAYED_HEADER not in second.headers
    assert second.json()["id"] != first["id"] and job_count(client, alice) == 2
    again = client.post("/v1/jobs", json=tiny_spec(name="tuesday"), headers=keyed(alice, key))
    assert again.headers[REPLAYED_HEADER] == "true" and again.json()["id"] == second.json()["id"]


def test_a_ttl_of_zero_keeps_answers_forever(client, alice, sessions, env_override):
    env_override(IDEMPOTENCY_TTL_HOURS="0")
    key = str(uuid.uuid4())
    first = client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key)).json()
    age_answer(sessions, key, 24 * 365)
    again = client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key))
    assert again.headers[REPLAYED_HEADER] == "true" and again.json()["id"] == first["id"]


@pytest.mark.parametrize("key", ["k" * 256, b"a\x00b", "caf\u00e9".encode(), "two words"])
def test_unusable_key_is_422_naming_the_header(client, alice, key):
    response = client.post("/v1/jobs", json=tiny_spec(), headers=keyed(alice, key))
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "Idempotency-Key"


def upload(client, headers, data: bytes, name: str = "train.jsonl"):
    return client.post("/v1/files", headers=headers, files={"file": (name, data)})


def stored_files() -> set[Path]:
    return set((Path(get_settings().artifact_dir) / "files").glob("file-*"))


def file_ids(client, headers) -> list[str]:
    return [f["id"] for f in client.get("/v1/files", headers=headers).json()["data"]]


def test_retried_upload_returns_the_first_file_and_stores_one(client, alice):
    key = str(uuid.uuid4())
    first = upload(client, keyed(alice, key), as_jsonl(ROWS))
    again = upload(client, keyed(alice, key), as_jsonl(ROWS))
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json() and again.headers[REPLAYED_HEADER] == "true"
    assert file_ids(client, alice) == [first.json()["id"]]


def test_same_key_with_other_bytes_or_name_is_refused(client, alice):
    key = str(uuid.uuid4())
    assert upload(client, keyed(alice, key), as_jsonl(ROWS)).status_code == 201
    assert upload(client, keyed(alice, key), as_jsonl(ROWS[:10])).status_code == 422
    assert upload(client, keyed(alice, key), as_jsonl(ROWS), name="other.jsonl").status_code == 422
    assert len(file_ids(client, alice)) == 1


def test_concurrent_twin_uploads_keep_one_file(client, alice):
    key, data = str(uuid.uuid4()), as_jsonl(ROWS)
    before = stored_files()
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: upload(client, keyed(alice, key), data), range(4)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert file_ids(client, alice) == [responses[0].json()["id"]]
    assert [p.stem for p in stored_files() - before] == [responses[0].json()["id"]]  # the losers' bytes are gone


def test_an_expired_upload_key_stores_a_new_file(client, alice, sessions):
    key = str(uuid.uuid4())
    first = upload(client, keyed(alice, key), as_jsonl(ROWS)).json()
    age_answer(sessions, key, get_settings().idempotency_ttl_hours + 1)
    second = upload(client, keyed(alice, key), as_jsonl(ROWS))
    assert second.status_code == 201 and REPLAYED_HEADER not in second.headers
    assert sorted(file_ids(client, alice)) == sorted([first["id"], second.json()["id"]])
