"""A job's event log: a JSON page, or a Server-Sent Events stream that ends when the job finishes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import JobDep, SessionDep
from api.errors import JOB_RESPONSES
from api.routes import MAX_BIGINT, V1
from api.schemas import EventPublic, EventsPublic
from service.db import async_session
from service.tables import FINISHED_STATUSES, Job, JobEvent

router = APIRouter(prefix=f"{V1}/jobs/{{job_id}}/events", tags=["events"], responses=JOB_RESPONSES)

POLL_SECONDS = 0.5   # how often a stream re-reads the database
PING_SECONDS = 15    # keeps proxies from closing an idle stream
STREAM_BATCH = 500


async def read_events(session: AsyncSession, job_id: str, after_id: int, limit: int) -> list[JobEvent]:
    return list(await session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
                                      .order_by(JobEvent.id).limit(limit)))


@router.get("", response_model=EventsPublic,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "JSON page, or an SSE stream when Accept: text/event-stream"}})
async def list_events(request: Request, job: JobDep, session: SessionDep,
                after_id: Annotated[int, Query(ge=0, le=MAX_BIGINT, description="only events with a larger id")] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                last_event_id: Annotated[int | None, Header(ge=0, le=MAX_BIGINT,
                                                     description="SSE reconnect: resume after this id")] = None,
                ):
    if "text/event-stream" in request.headers.get("accept", ""):
        start = max(after_id, last_event_id or 0)
        await session.close()  # hand the connection back: the stream polls with short sessions of its own
        return EventSourceResponse(stream_events(job.id, start), ping=PING_SECONDS)
    events = await read_events(session, job.id, after_id, limit + 1)
    return EventsPublic(data=[EventPublic.model_validate(e) for e in events[:limit]], has_more=len(events) > limit)


async def _poll(job_id: str, after_id: int) -> tuple[list[EventPublic], str]:
    """New events and the job's status, read in one short session (a stream must not pin a connection)."""
    async with async_session() as session:
        # Status first: if the job had finished by then, its last events were committed before and are seen below.
        status = await session.scalar(select(Job.status).where(Job.id == job_id))
        events = [EventPublic.model_validate(e) for e in await read_events(session, job_id, after_id, STREAM_BATCH)]
        return events, status


async def stream_events(job_id: str, after_id: int) -> AsyncIterator[ServerSentEvent]:
    while True:
        events, status = await _poll(job_id, after_id)
        for event in events:
            yield ServerSentEvent(data=event.model_dump_json(), id=str(event.id))  # a plain `message` event
            after_id = event.id
        if (status is None or status in FINISHED_STATUSES) and len(events) < STREAM_BATCH:
            yield ServerSentEvent(data=json.dumps({"status": status}), event="end")  # null: the job is gone
            return
        if len(events) < STREAM_BATCH:
            await anyio.sleep(POLL_SECONDS)
