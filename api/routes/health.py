"""Liveness, readiness and Prometheus metrics; unauthenticated, outside /v1, for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.schemas import Health
from service.db import async_session
from service.queue import broker_reachable
from service.store import StoreUnavailable, get_store

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and serving; says nothing about its dependencies."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "names what is down"}})
async def readyz() -> Response:
    broker = await run_in_threadpool(broker_reachable)  # a blocking client
    checks = {"database": await _check_database(), "broker": "ok" if broker else "unreachable",
              "artifact_store": await run_in_threadpool(_check_store)}
    ready = all(result == "ok" for result in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def _check_database() -> str:
    try:
        async with async_session() as session:
            await session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"


def _check_store() -> str:
    try:
        get_store().check()
        return "ok"
    except StoreUnavailable as exc:
        return str(exc)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def prometheus_metrics(request: Request) -> Response:
    await request.app.state.jobs_by_status.count()
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
