"""OpenAI's error body, {"error": {"message", "type", "param", "code"}}, for every error under /openai/v1:
the `openai` client reads it into its exceptions (NotFoundError, BadRequestError ...)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import DATABASE_RETRY_AFTER_SECONDS, SpecError, field_errors, is_database_outage

ERROR_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error",
               503: "server_error"}
CODES = {401: "invalid_api_key", 404: "not_found", 409: "conflict", 413: "file_too_large", 429: "rate_limit_exceeded",
         503: "service_unavailable"}


class OpenAIError(Exception):
    """An error to answer in OpenAI's shape: `param` names the request field it is about."""

    def __init__(self, status_code: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.param, self.code = status_code, message, param, code


def error_body(status_code: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status_code, "invalid_request_error"),
                      "param": param, "code": code or CODES.get(status_code)}}


def openai_error(status_code: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status_code, message, param, code), status_code=status_code, headers=headers)


async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return openai_error(exc.status_code, exc.message, exc.param, exc.code)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = field_errors(list(exc.errors()), exc.body)
    message = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return openai_error(400, message, errors[0].field if errors else None, "invalid_value")


async def _spec_error(request: Request, exc: SpecError) -> JSONResponse:
    return openai_error(400, f"{exc.field}: {exc.message}", exc.field, "invalid_value")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return openai_error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_outage(exc):
        raise exc  # a real query error stays a 500, as on /v1
    return openai_error(503, "the database is unavailable; retry shortly",
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


def install_openai_errors(app: FastAPI) -> None:
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
