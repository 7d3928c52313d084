"""Requests per second for `GET /v1/jobs/{id}` against a real uvicorn on Postgres, under concurrent clients.

    .venv/bin/python bench/api_get_job.py [--jobs 1000] [--concurrency 32] [--seconds 10] [--workers 1]

Makes a fresh database on the Postgres server of POSTGRES_URL (default: local, user postgres), migrates it,
seeds one tenant with --jobs running jobs (each with --metrics metric rows, so "latest metrics" has work to
do), starts `uvicorn api.main:app`, and drives it with httpx.AsyncClient tasks for --seconds. The baseline is
`GET /healthz` (no auth, no database) on the same server: the ratio shows what auth plus the job queries cost.
The load generator runs on the same machine and takes CPU from the server; read numbers with that in mind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.keys import create_api_key  # noqa: E402
from service.models import Job, Metric, Tenant, utcnow  # noqa: E402


@contextmanager
def fresh_database(server_url: str):
    url = make_url(server_url)
    name = f"bench_api_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate_and_seed(database_url: str, n_jobs: int, n_metrics: int) -> tuple[str, list[str]]:
    """Schema via the migrations; one tenant's running jobs with metrics; returns (api key, job ids)."""
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=REPO, check=True,
                   env={**os.environ, "DATABASE_URL": database_url})
    engine = create_engine(database_url)
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        key = create_api_key(session, "bench")
        tenant_id = session.query(Tenant.id).filter_by(name="bench").scalar()
        spec = {"model": "tiny-bert", "task": "sequence_classification", "budget": {"init_r": 12, "target_r": 8}}
        started = utcnow()
        job_ids = [str(uuid.uuid4()) for _ in range(n_jobs)]
        session.execute(insert(Job), [dict(id=i, tenant_id=tenant_id, spec=spec, status="running", started_at=started,
                                           step=n_metrics, total_steps=2 * n_metrics, current_budget=96.0)
                                      for i in job_ids])
        session.execute(insert(Metric), [dict(job_id=i, step=s, values={"loss": 1.0 / s, "lr": 1e-3, "budget": 96.0})
                                         for i in job_ids for s in range(1, n_metrics + 1)])
        session.commit()
    engine.dispose()
    return key, job_ids


@contextmanager
def uvicorn_server(database_url: str, port: int, workers: int):
    env = {**os.environ, "DATABASE_URL": database_url, "BROKER_URL": os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/15")}
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(10)


async def load(base: str, paths: list[str], headers: dict[str, str], concurrency: int, seconds: float):
    """`concurrency` clients, each sending its next request as soon as the last one answered."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
        deadline = time.monotonic() + seconds

        async def one_client():
            nonlocal errors
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = await client.get(random.choice(paths))
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

        started = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return len(latencies) / elapsed, latencies, errors


def report(name: str, rate: float, latencies: list[float], errors: int) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(f"{name:<22} {rate:8.0f} req/s   p50 {q[49] * 1000:6.1f} ms   p99 {q[98] * 1000:6.1f} ms   "
          f"requests {len(latencies)}   errors {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=50, help="metric rows per job")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    with fresh_database(args.postgres) as database_url:
        key, job_ids = migrate_and_seed(database_url, args.jobs, args.metrics)
        headers = {"Authorization": f"Bearer {key}"}
        with uvicorn_server(database_url, args.port, args.workers) as base:
            print(f"{args.jobs} jobs x {args.metrics} metric rows on Postgres; uvicorn workers={args.workers}; "
                  f"{args.concurrency} concurrent clients for {args.seconds:.0f} s each; {os.cpu_count()} CPUs "
                  "shared by server and load generator")
            asyncio.run(load(base, ["/healthz"], {}, args.concurrency, 2))  # warm up connections and caches
            job_paths = [f"/v1/jobs/{i}" for i in job_ids]
            asyncio.run(load(base, job_paths, headers, args.concurrency, 2))
            baseline = asyncio.run(load(base, ["/healthz"], {}, args.concurrency, args.seconds))
            measured = asyncio.run(load(base, job_paths, headers, args.concurrency, args.seconds))
    report("GET /healthz (base)", *baseline)
    report("GET /v1/jobs/{id}", *measured)
    print(f"ratio GET /v1/jobs/{{id}} / GET /healthz: {measured[0] / baseline[0]:.2f}")


if __name__ == "__main__":
    main()
