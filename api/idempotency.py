"""Idempotency-Key: a client that retries a create (a timeout, a dropped connection) gets the first answer
back instead of a second job or file. Keys are scoped per tenant and kept in the idempotent_requests table.

A route computes a hash of the request as it understood it, asks `replay` for an earlier answer, and
otherwise adds its answer with `remember` in the same transaction as the row it creates: when two
identical requests race, the unique (tenant_id, key) constraint lets one commit and the other replays it.

An answer is kept IDEMPOTENCY_TTL_HOURS (24 by default). After that its key is free again: `replay` deletes the
expired answer in the route's transaction, so the new answer can take its place, and the reconciler deletes
the expired answers nobody asked for again (service/reconcile.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.errors import SpecError
from service.reconcile import idempotency_cutoff
from service.settings import get_settings
from service.tables import IdempotentRequest, utcnow

REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",  # visible ASCII
    description="any unique string (e.g. a UUID) per intended request; a retry with the same key and body "
                "returns the first response instead of creating a second resource")]


def request_hash(request: Any) -> str:
    """sha256 of the request's canonical JSON: key order and whitespace do not make two requests differ."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def surface_hash(request: Any, surface: str) -> str:
    """request_hash for one API surface: a key reused for the same request on another surface (/v1 and the
    OpenAI-compatible one answer in different shapes) is a different request. /v1's hashes are unchanged."""
    return request_hash(request if surface == "v1" else {"surface": surface, "request": request})


def replay(session: Session, tenant_id: int, key: str, hash_: str) -> JSONResponse | None:
    """The first answer for this key, or None if the key is new or expired; 422 if it came with a different
    request."""
    earlier = session.scalar(select(IdempotentRequest).where(IdempotentRequest.tenant_id == tenant_id,
                                                             IdempotentRequest.key == key))
    if earlier is None:
        return None
    cutoff = idempotency_cutoff(utcnow(), get_settings())
    if cutoff is not None and earlier.created_at < cutoff:
        # Expired: the key names a new request now. Deleted at once (not at flush, where SQLAlchemy would
        # insert the new answer first); committed, or rolled back, with the route's own changes.
        session.execute(delete(IdempotentRequest).where(IdempotentRequest.id == earlier.id)
                        .execution_options(synchronize_session=False))
        session.expunge(earlier)
        return None
    if earlier.request_hash != hash_:  # a 422 like any other: {field, message} pairs
        raise SpecError("Idempotency-Key", "already used for a different request; send a new key for a new request")
    return JSONResponse(earlier.response_body, status_code=earlier.status_code, headers={REPLAYED_HEADER: "true"})


def remember(session: Session, tenant_id: int, key: str, hash_: str, status_code: int,
             body: dict[str, Any]) -> IdempotentRequest:
    """Adds the answer to the session; it is stored when the caller commits its own row."""
    record = IdempotentRequest(tenant_id=tenant_id, key=key, request_hash=hash_, status_code=status_code,
                               response_body=body)
    session.add(record)
    return record
