"""API keys: `ada_<prefix>_<secret>`. Only the prefix (to find the row) and a sha256 (to verify) are stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from service.tables import ApiKey, Tenant, utcnow

KEY_SCHEME = "ada"
# What new_raw_key makes: a hex prefix and a URL-safe secret. Anything else is refused before it reaches a
# query (Postgres rejects NUL bytes with an error, which would be a 500, not a 401).
KEY_FORMAT = re.compile(rf"{KEY_SCHEME}_([0-9a-f]{{1,32}})_[A-Za-z0-9_-]{{1,256}}")


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_raw_key() -> tuple[str, str]:
    """(prefix, full key). 128 random bits in the secret; the prefix only identifies the row."""
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(16)}"


def create_api_key(session: Session, tenant_name: str, key_name: str | None = None) -> str:
    """Create the tenant if needed and a key for it; returns the raw key, which is never stored."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    prefix, raw = new_raw_key()
    session.add(ApiKey(tenant_id=tenant.id, prefix=prefix, key_hash=hash_key(raw), name=key_name))
    session.flush()
    return raw


def key_prefix(raw: str) -> str | None:
    """The prefix that finds a presented key's row, or None for a malformed key."""
    well_formed = KEY_FORMAT.fullmatch(raw)
    return well_formed[1] if well_formed else None


def key_matches(key_hash: str, raw: str) -> bool:
    """The prefix is no secret: a found row counts only if the whole key hashes to its hash."""
    return hmac.compare_digest(key_hash, hash_key(raw))


# The active key row with a given prefix (bound as :prefix), to join what a request reads onto. Built once: an
# SQLAlchemy statement costs more to build per request than the database takes to answer it.
_keys = ApiKey.__table__
ACTIVE_KEY = (_keys.c.prefix == bindparam("prefix")) & _keys.c.revoked_at.is_(None)
TENANT_FOR_KEY = select(Tenant, ApiKey.key_hash).join(ApiKey).where(ACTIVE_KEY)


def tenant_for_key(session: Session, raw: str) -> Tenant | None:
    """The tenant a presented key belongs to, or None for a malformed, unknown or revoked key."""
    prefix = key_prefix(raw)
    if prefix is None:
        return None
    row = session.execute(TENANT_FOR_KEY, {"prefix": prefix}).one_or_none()
    if row is None or not key_matches(row.key_hash, raw):
        return None
    return row.Tenant


def revoke_api_key(session: Session, prefix: str) -> bool:
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    return True


def revoke_tenant_keys(session: Session, tenant_name: str) -> int | None:
    """Revoke every active key of a tenant (None: no such tenant). Its jobs and files stay; a new key from
    create-key gives it access again."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        return None
    active = [key for key in tenant.api_keys if key.revoked_at is None]
    for key in active:
        key.revoked_at = utcnow()
    return len(active)


def list_api_keys(session: Session, tenant_name: str | None = None) -> list[ApiKey]:
    """Keys by tenant and age (never a secret: only the prefix and hash are stored)."""
    query = select(ApiKey).join(Tenant).order_by(Tenant.name, ApiKey.created_at)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return list(session.scalars(query))
