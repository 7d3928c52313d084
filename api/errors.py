"""Readable error bodies: a 422 lists {field, message} pairs a user can act on."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.redaction import hide_server_paths
from service.store import StoreUnavailable

log = logging.getLogger(__name__)
REQUEST_PARTS = ("body", "query", "path", "header")


class FieldError(BaseModel):
    field: str
    message: str


class ValidationErrorBody(BaseModel):
    detail: list[FieldError]


class SpecError(Exception):
    """A request that parsed but cannot be honoured (e.g. a dry run of a model whose config is unreadable)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# Our validators start messages with the field they are about: "budget.target_r (5) must not exceed ...".
NAMED_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*)(: | \()")


def field_errors(errors: list[dict[str, Any]], body: Any) -> list[FieldError]:
    return [_field_error(error, body) for error in errors]


def _field_error(error: dict[str, Any], body: Any) -> FieldError:
    field, message = _field_name(error["loc"], body), hide_server_paths(_message(error))
    if error.get("type") == "json_invalid":
        field = "body"  # pydantic's loc ends with the character offset, not a field
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = error.get("ctx", {}).get("discriminator", "").strip("'")
        field = f"{field}.{discriminator}"
    named = NAMED_FIELD.match(message)
    # A cross-field check reports on its model's loc; the message names the precise field, so use that.
    if named and (field in REQUEST_PARTS or named[1] == field or named[1].startswith(field + ".")):
        field = named[1]
        if named[2] == ": ":
            message = message[named.end():]
    return FieldError(field=field, message=message)


def _field_name(loc: tuple, body: Any) -> str:
    """`budget.target_r` from pydantic's loc, dropping the request part and union tags (`dataset.server.path`)."""
    parts = list(loc)
    where = parts.pop(0) if parts and parts[0] in REQUEST_PARTS else None
    if where == "body":
        parts = _drop_union_tags(parts, body)
    if not parts:
        return where or "request"
    return ".".join(str(p) for p in parts)


def _drop_union_tags(parts: list, body: Any) -> list:
    """Keep only loc parts that exist in the submitted JSON (plus the last one, e.g. a missing field)."""
    kept, node = [], body
    for i, part in enumerate(parts):
        is_last = i == len(parts) - 1
        if isinstance(node, dict) and isinstance(part, str) and part not in node and not is_last:
            continue  # a tag pydantic inserted for a union member, not a key the user wrote
        kept.append(part)
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    return kept


def _message(error: dict[str, Any]) -> str:
    kind, msg, ctx = error.get("type", ""), str(error.get("msg", "")), error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field: remove it or check its spelling (see the schema at /docs)"
    if kind == "missing" and error["loc"] == ("body",):
        return "the body is empty: send the job spec as a JSON object"
    if kind == "missing":
        return "required field is missing"
    if kind == "json_invalid":
        return f"the body is not valid JSON ({ctx.get('error', msg)} at character {error['loc'][-1]})"
    if kind == "finite_number":
        return "must be a finite number, not NaN or Infinity"
    if kind == "union_tag_invalid":
        return f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}: use one of {ctx['expected_tags']}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return _not_an_object(error)
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _not_an_object(error: dict[str, Any]) -> str:
    value = error.get("input")
    if error["loc"][1:]:
        return f"must be an object {{...}} of named fields, not {_json_kind(value)}"
    if isinstance(value, bytes):  # FastAPI reads the body as JSON only when the request says it is JSON
        return ("the body is not marked as JSON: send the job spec with the header Content-Type: application/json "
                "(curl -H 'Content-Type: application/json')")
    return f"the body must be a JSON object {{...}} holding the job spec, not {_json_kind(value)}"


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "true or false", type(None): "null", int: "a number",
             float: "a number"}
    return kinds.get(type(value), "a value of another kind")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    body = ValidationErrorBody(detail=field_errors(list(exc.errors()), exc.body))
    return JSONResponse(body.model_dump(), status_code=422)


async def _spec_error(request: Request, exc: SpecError) -> JSONResponse:
    body = ValidationErrorBody(detail=[FieldError(field=exc.field, message=hide_server_paths(exc.message))])
    return JSONResponse(body.model_dump(), status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI answers a JSON body it could not read with a bare "There was an error parsing the body";
    the cause says which of the two it is."""
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        detail = (f"the body is not UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset {cause.start}); "
                  "send the job spec as UTF-8 JSON")
    elif exc.status_code == 400 and isinstance(cause, RecursionError):
        detail = ("the body nests arrays or objects too deeply to read (hundreds of levels; a job spec needs "
                  "four): send the job spec as the schema at /docs describes")
    else:
        return await http_exception_handler(request, exc)
    return JSONResponse({"detail": detail}, status_code=400)


# How long a client should wait while the database is unreachable: a Postgres restart or failover takes seconds.
DATABASE_RETRY_AFTER_SECONDS = 5


def is_database_outage(exc: Exception) -> bool:
    """A lost or refused connection (or a pool timeout), as opposed to an error in the query itself."""
    return not isinstance(exc, DBAPIError) or isinstance(exc, (OperationalError, InterfaceError)) \
        or exc.connection_invalidated


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A lost or refused database connection is the server's outage, not a bug: 503 the client can retry.
    The engine's pool_pre_ping replaces dead pooled connections, so service resumes when the database does."""
    if not is_database_outage(exc):
        raise exc  # a real query error (a constraint, bad SQL) stays a 500 with its traceback
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, type(exc.orig if
                isinstance(exc, DBAPIError) else exc).__name__)
    return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


STORE_RETRY_AFTER_SECONDS = 10


async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
    """The artifact store (S3) is down or refusing us: nothing was changed, the client can retry."""
    log.warning("artifact store unavailable during %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"{exc}; nothing was changed, retry shortly"}, status_code=503,
                        headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)


class ErrorBody(BaseModel):
    """Every error other than a 422: what went wrong and, where there is one, what to do next."""

    detail: str


def error_response(description: str) -> dict[str, Any]:
    """An entry for a route's `responses=`: this status, described, with the {"detail": "..."} body."""
    return {"model": ErrorBody, "description": description}


# For routers' `responses=`: documents the 422 shape in OpenAPI instead of FastAPI's default.
VALIDATION_RESPONSE = {422: {"model": ValidationErrorBody, "description": "invalid fields, each with what to change"}}

# What any route behind an API key may answer besides its own statuses.
AUTHENTICATED_RESPONSES = {
    401: error_response("no API key, a malformed one, or an unknown or revoked one (see WWW-Authenticate)"),
    **VALIDATION_RESPONSE,
    503: error_response("the database or the artifact store is unavailable; retry after Retry-After seconds"),
}
# ... and a route under /v1/jobs/{job_id}.
JOB_RESPONSES = {**AUTHENTICATED_RESPONSES, 404: error_response("no job with this id for this API key's tenant")}
