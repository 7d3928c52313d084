"""Every /v1 route needs a valid key; failures are 401 with a WWW-Authenticate challenge."""

import pytest

from service.keys import create_api_key, revoke_api_key, revoke_tenant_keys, tenant_for_key

PROTECTED = [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("POST", "/v1/jobs/x/cancel"),
             ("GET", "/v1/jobs/x/events"), ("GET", "/v1/jobs/x/metrics"), ("GET", "/v1/jobs/x/ranks"),
             ("GET", "/v1/jobs/x/checkpoints"),
             ("GET", "/v1/jobs/x/artifacts/adapter"), ("GET", "/v1/jobs/x/artifacts/merged")]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_missing_key_is_401_with_challenge(client, method, path):
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer    ", "ada_abc", "Token ada_x_y",
                                    "Bearer\tada_abc_secret"])
def test_malformed_header_is_401(client, header):
    response = client.get("/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


# Raw header bytes, as a hostile client can send them: none may reach the database as a 500.
ODD_KEYS = {"very long": b"a" * 100_000, "long prefix": b"ada_" + b"0" * 5000 + b"_s",
            "UTF-8": "ada_d\u00e9adbeef_s\u00e9cret".encode(), "latin-1": "ada_\u00ff_x".encode("latin-1"),
            "NUL in prefix": b"ada_\x00_x", "NUL in secret": b"ada_deadbeef_\x00", "control byte": b"ada_\x01_x",
            "not UTF-8": b"\xff\xfe"}


@pytest.mark.parametrize("key", ["ada_deadbeef_notarealsecret", "not-even-our-format", "ada__",
                                 *ODD_KEYS.values()], ids=["unknown", "foreign", "empty parts", *ODD_KEYS])
def test_unknown_key_is_401(client, key):
    header = (b"Bearer " + key) if isinstance(key, bytes) else f"Bearer {key}"
    response = client.get("/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_right_prefix_with_wrong_secret_is_401(client, alice):
    scheme, prefix, _secret = alice["Authorization"].removeprefix("Bearer ").split("_", 2)
    forged = {"Authorization": f"Bearer {scheme}_{prefix}_forged-secret"}
    assert client.get("/v1/jobs", headers=forged).status_code == 401


def test_revoked_key_is_401(client, sessions, alice):
    assert client.get("/v1/jobs", headers=alice).status_code == 200
    prefix = alice["Authorization"].split("_")[1]
    with sessions() as session:
        assert revoke_api_key(session, prefix)
        session.commit()
    assert client.get("/v1/jobs", headers=alice).status_code == 401


def test_revoking_a_tenant_locks_out_all_its_keys_and_no_other_tenant(client, sessions, alice, bob):
    with sessions() as session:
        tenant = tenant_for_key(session, alice["Authorization"].removeprefix("Bearer ")).name
        second = {"Authorization": f"Bearer {create_api_key(session, tenant, 'second')}"}
        session.commit()
    assert client.get("/v1/jobs", headers=second).status_code == 200
    with sessions() as session:
        assert revoke_tenant_keys(session, tenant) == 2
        session.commit()
    assert [client.get("/v1/jobs", headers=h).status_code for h in (alice, second, bob)] == [401, 401, 200]


def test_health_endpoints_need_no_key(client):
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    assert client.get("/metrics").status_code == 200
