"""`GET /v1/jobs/{id}` under load against a real uvicorn on Postgres, with a bare async endpoint as the baseline.

    .venv/bin/python bench/api_get_job.py [--seconds 15] [--connections 50,200] [--repeat 2] [--generator auto]

Makes a fresh database on the Postgres server of POSTGRES_URL (default: local, user postgres), migrates it and
seeds one tenant with --jobs running jobs of --metrics metric rows each. Two servers, one uvicorn process each:
ours (`api.main:app`, a valid API key on every request) and the baseline `bench/bare_app.py` (one async route
that reads the job row with async SQLAlchemy + asyncpg, nothing else). For each connection count they take
turns, --repeat times each, under the same load: wrk (--threads threads, keep-alive connections, random job
ids) when it is installed, else the asyncio load generator below. It prints req/s, p50/p99 latency and the
count of non-2xx answers and socket errors per run, the server process's CPU time per request (steadier than
req/s on a shared machine), and ours/bare per connection count (medians of the runs).

The load generator shares the machine's CPUs with the servers and Postgres: read the load average it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.keys import create_api_key  # noqa: E402
from service.tables import Job, Metric, Tenant, utcnow  # noqa: E402


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
def uvicorn_server(app: str, env: dict[str, str], port: int, probe: str, headers: dict[str, str]):
    """One uvicorn process serving `app`, ready once `probe` answers 200. Its log goes to a file; the lines it
    wrote (warnings: a 503 logs one) are printed after the run."""
    command = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(REPO), "--host", "127.0.0.1", "--port",
               str(port), "--no-access-log", "--log-level", "warning"]
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + probe, headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"uvicorn {app} did not start")
            time.sleep(0.2)
        yield base, psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # requests still waiting inside it
            process.kill()
            process.wait()
        log.seek(0)
        lines = log.read().splitlines()
        if lines:
            print(f"#   {app} logged {len(lines)} lines; the last: {lines[-1][:200]}")


@dataclass
class Run:
    rate: float      # requests per second
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int  # connect, read, write errors and timeouts
    server_cpu_ms: float = 0.0  # the server process's CPU time per request


WRK_SCRIPT = """
local ids = {%(ids)s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0; math.randomseed(os.time() + math.random(1000)) end
function request() return wrk.format("GET", "/v1/jobs/" .. ids[math.random(#ids)], {%(headers)s}) end
function response(status, headers, body) if status < 200 or status > 299 then non2xx = non2xx + 1 end end
function done(summary, latency, requests)
  local n = 0
  for _, thread in ipairs(threads) do n = n + thread:get("non2xx") end
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, "non_2xx": %%d, ' ..
    '"socket_errors": %%d}\\n', summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), n, e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_load(base: str, job_ids: list[str], headers: dict[str, str], connections: int, seconds: float,
             threads: int) -> Run:
    lua_headers = ", ".join(f'["{name}"] = "{value}"' for name, value in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"ids": ", ".join(f'"{i}"' for i in job_ids), "headers": lua_headers})
    try:
        out = subprocess.run(["wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d",
                              f"{seconds:.0f}s", "--timeout", "10s", "-s", script.name, base],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    return Run(result["requests"] / result["seconds"], result["p50_us"] / 1000, result["p99_us"] / 1000,
               result["requests"], result["non_2xx"], result["socket_errors"])


async def python_load(base: str, job_ids: list[str], headers: dict[str, str], connections: int,
                      seconds: float) -> Run:
    """wrk's method in asyncio: `connections` keep-alive sockets, each sending its next request when the last
    one answered. Raw HTTP/1.1 (an HTTP client library would cost more CPU than the server under test)."""
    host, port = base.removeprefix("http://").split(":")
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    requests = [f"GET /v1/jobs/{i} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode() for i in job_ids]
    latencies: list[float] = []
    non_2xx = socket_errors = 0
    deadline = time.monotonic() + seconds

    async def one_connection() -> None:
        nonlocal non_2xx, socket_errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                writer.write(random.choice(requests))
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                non_2xx += not head.startswith(b"HTTP/1.1 2")
        except (OSError, asyncio.IncompleteReadError):
            socket_errors += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return Run(len(latencies) / elapsed, q[49] * 1000, q[98] * 1000, len(latencies), non_2xx, socket_errors)


def load(generator: str, base: str, job_ids: list[str], headers: dict[str, str], connections: int,
         seconds: float, threads: int) -> Run:
    if generator == "wrk":
        return wrk_load(base, job_ids, headers, connections, seconds, threads)
    return asyncio.run(python_load(base, job_ids, headers, connections, seconds))


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=20, help="metric rows per job")
    parser.add_argument("--connections", default="50,200", help="comma-separated connection counts")
    parser.add_argument("--seconds", type=float, default=15, help="length of one run")
    parser.add_argument("--repeat", type=int, default=2, help="runs per server and connection count")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    generator = args.generator if args.generator != "auto" else ("wrk" if shutil.which("wrk") else "python")
    connection_counts = [int(c) for c in args.connections.split(",")]

    with fresh_database(args.postgres) as database_url:
        key, job_ids = migrate_and_seed(database_url, args.jobs, args.metrics)
        ours_env = {"DATABASE_URL": database_url,
                    "BROKER_URL": os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/15")}
        bare_env = {"DATABASE_URL": make_url(database_url).set(drivername="postgresql+asyncpg")
                    .render_as_string(hide_password=False)}
        servers = {"bare": ("bench.bare_app:app", bare_env, {}), "ours": ("api.main:app", ours_env,
                                                                     {"Authorization": f"Bearer {key}"})}
        print(f"# bench/api_get_job.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {os.cpu_count()} CPUs "
              f"(servers, Postgres and the load generator share them)  generator {generator}"
              + (f" -t {args.threads}" if generator == "wrk" else ""))
        print(f"# {args.jobs} running jobs x {args.metrics} metric rows on Postgres; one uvicorn process per server; "
              f"{args.seconds:.0f} s per run; load average before: {load_average()}")
        print("| connections | server | run | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | "
              "server CPU ms/req |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        results: dict[tuple[int, str], list[Run]] = {}
        for connections in connection_counts:
            for run in range(1, args.repeat + 1):
                for name, (app, env, headers) in servers.items():
                    with uvicorn_server(app, env, args.port, f"/v1/jobs/{job_ids[0]}", headers) as (base, server):
                        load(generator, base, job_ids, headers, connections, 2, args.threads)  # warm up
                        before = sum(server.cpu_times()[:2])
                        r = load(generator, base, job_ids, headers, connections, args.seconds, args.threads)
                        r.server_cpu_ms = 1000 * (sum(server.cpu_times()[:2]) - before) / max(1, r.requests)
                    results.setdefault((connections, name), []).append(r)
                    print(f"| {connections} | {name} | {run} | {r.rate:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
                          f"{r.requests} | {r.non_2xx} | {r.socket_errors} | {r.server_cpu_ms:.2f} |", flush=True)
        print(f"\n# load average after: {load_average()}")
        print("| connections | ours req/s | bare req/s | ours/bare | ours p50 ms | ours p99 ms | ours non-2xx | "
              "CPU ms/req ours / bare |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for connections in connection_counts:
            ours, bare = results[(connections, "ours")], results[(connections, "bare")]
            rate = statistics.median(r.rate for r in ours)
            bare_rate = statistics.median(r.rate for r in bare)
            print(f"| {connections} | {rate:.0f} | {bare_rate:.0f} | {rate / bare_rate:.2f} | "
                  f"{statistics.median(r.p50_ms for r in ours):.1f} | "
                  f"{statistics.median(r.p99_ms for r in ours):.1f} | "
                  f"{sum(r.non_2xx + r.socket_errors for r in ours)} | "
                  f"{statistics.median(r.server_cpu_ms for r in ours):.2f} / "
                  f"{statistics.median(r.server_cpu_ms for r in bare):.2f} |")


if __name__ == "__main__":
    main()
