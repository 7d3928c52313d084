"""Many more concurrent requests than pooled connections: they wait their turn and all succeed.

Before the API was async, 200 concurrent polls on the 40-thread pool deadlocked on 15 connections (a request
held one while it waited for a thread to finish on) until the pool's 30 s timeout turned them into 503s."""

from __future__ import annotations

import asyncio

import httpx

from api.main import create_app
from service.db import dispose_async_engine


def test_200_concurrent_requests_on_a_pool_of_two_connections_all_succeed(env_override, alice, seed_job):
    env_override(DATABASE_POOL_SIZE="2")
    job_id = seed_job(alice, "running", step=3, total_steps=10)
    # The polled route (one autocommit statement) and routes on a session (a transaction each), interleaved.
    paths = [f"/v1/jobs/{job_id}", "/v1/jobs", f"/v1/jobs/{job_id}/metrics", f"/v1/jobs/{job_id}/events"] * 50

    async def send_all() -> list[int]:
        app = create_app()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                                         timeout=120) as http:
                responses = await asyncio.gather(*(http.get(path, headers=alice) for path in paths))
        finally:
            await dispose_async_engine()
        return [response.status_code for response in responses]

    assert asyncio.run(send_all()) == [200] * len(paths)
