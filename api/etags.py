"""ETag and If-None-Match, so a client polling a resource gets a bodiless 304 while it has not changed."""

from __future__ import annotations

import hashlib

from fastapi import Request

NOT_MODIFIED_RESPONSE = {304: {"description": "nothing changed since the ETag sent in If-None-Match; no body"}}


def weak_etag(content: bytes) -> str:
    """A weak validator: the answers it stands for are equivalent, not byte-identical (an ETA that moved)."""
    return f'W/"{hashlib.blake2b(content, digest_size=12).hexdigest()}"'


def if_none_match(request: Request, etag: str) -> bool:
    """True when the request's If-None-Match names `etag` (or is `*`): weak comparison, as RFC 9110 asks."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in header.split(","))
