"""Prometheus metrics: requests by route template and status, latency by route, jobs by status.

Each app gets its own registry, so several apps in one process (tests) never clash.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import async_session
from service.tables import JOB_STATUSES, Job


class RequestMetrics:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware, and it does not buffer SSE streams)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("http_requests", "HTTP requests served", ["method", "route", "status"],
                                registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Time to the response headers",
                                 ["method", "route"], registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_time(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.latency.labels(scope["method"], _route(scope)).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_and_time)
        finally:
            self.requests.labels(scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    """The path template (`/v1/jobs/{job_id}`), so ids never become label values."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


class JobsByStatus:
    """Jobs per status (all tenants), counted by one small GROUP BY when /metrics is scraped: the route awaits
    `count()`, then the registry's (blocking) collect reports what it found."""

    def __init__(self) -> None:
        self.counts: dict[str, int] | None = None

    async def count(self) -> None:
        try:
            async with async_session() as session:
                rows = await session.execute(select(Job.status, func.count()).group_by(Job.status))
                self.counts = dict(rows.all())
        except Exception:
            self.counts = None  # the database is down: /readyz says so; the scrape still serves request metrics

    def collect(self):
        if self.counts is None:
            return
        gauge = GaugeMetricFamily("adalora_jobs", "Jobs by status", labels=["status"])
        for status in JOB_STATUSES:
            gauge.add_metric([status], self.counts.get(status, 0))
        yield gauge


def make_registry(jobs_by_status: JobsByStatus) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(jobs_by_status)
    return registry
