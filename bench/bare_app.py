"""The baseline of bench/api_get_job.py: the least a FastAPI endpoint can do to answer GET /v1/jobs/{id} from
Postgres. One async route, no auth, no middleware; it reads the job row with async SQLAlchemy on asyncpg (engine
defaults: a 5 + 10 pool, no pre-ping) and returns a few of its columns.

    DATABASE_URL=postgresql+asyncpg://... uvicorn --app-dir bench bare_app:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException
from sqlalchemy import column, select, table
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine(os.environ["DATABASE_URL"])
jobs = table("jobs", column("id"), column("status"), column("step"), column("total_steps"),
             column("current_budget"))
app = FastAPI()


@app.get("/v1/jobs/{job_id}")
async def get_job(job_id: str) -> dict:
    async with engine.connect() as conn:
        row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).mappings().first()
    if row is None:
        raise HTTPException(404)
    return dict(row)
