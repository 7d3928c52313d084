"""API keys are stored hashed, map to their tenant, and stop working when revoked."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from service.db import session_scope
from service.keys import create_api_key, hash_key, revoke_api_key, tenant_for_key
from service.tables import ApiKey


def test_a_key_maps_to_its_tenant_and_only_its_hash_is_stored(engine):
    tenant_name = f"keys-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        raw = create_api_key(session, tenant_name)
    with session_scope() as session:
        assert tenant_for_key(session, raw).name == tenant_name
        stored = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(raw)))
        assert raw not in (stored.prefix, stored.key_hash) and raw.split("_")[1] == stored.prefix


def test_wrong_malformed_and_revoked_keys_map_to_no_tenant(engine):
    with session_scope() as session:
        raw = create_api_key(session, f"keys-{uuid.uuid4().hex[:8]}")
    prefix = raw.split("_")[1]
    with session_scope() as session:
        assert tenant_for_key(session, raw[:-1] + ("x" if raw[-1] != "x" else "y")) is None
        assert tenant_for_key(session, "not-a-key") is None
        assert revoke_api_key(session, prefix)
    with session_scope() as session:
        assert tenant_for_key(session, raw) is None
        assert not revoke_api_key(session, prefix)
