"""Does a big download stream with flat memory? The API's RSS while it serves a 1 GiB artifact, whole and then
resumed with Range after a cut half-way.

    .venv/bin/python bench/download_memory.py [--gib 1] [--interval 0.05] [--store folder|s3]

A fresh SQLite database and artifact folder; a finished job whose merged archive is a --gib GiB file of random
bytes (its sha256 on the Artifact row, as the worker stores it); `uvicorn api.main:app` in its own process.
The client (httpx, in this process) downloads it once whole, then again cut off half-way and resumed with
`Range: bytes=N-` and `If-Range: <ETag>`, checking the sha256 of both. A thread samples the server's RSS every
--interval seconds (psutil). Printed: the RSS after a warm-up request (the baseline), the peak during each
download, the growth over the baseline (the goal: under 50 MB), and MB/s. With --store s3 the archive sits in
an S3 bucket (moto_server on loopback, the tests' endpoint) and the API streams it from there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CHUNK = 1 << 20
MB = 1e6


def make_artifact(path: Path, size: int) -> str:
    """`size` random bytes at `path` (random, so no layer can compress them away); returns the sha256."""
    digest = hashlib.sha256()
    block = os.urandom(16 * CHUNK)
    with open(path, "wb") as f:
        for offset in range(0, size, len(block)):
            chunk = block[: min(len(block), size - offset)]
            chunk = hashlib.sha256(offset.to_bytes(8, "little")).digest() + chunk[32:]  # no two blocks alike
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def seed(database_url: str, artifact_dir: Path, size: int) -> tuple[str, str, str]:
    """Migrated database, a tenant key and a succeeded job with a merged archive; (key, job id, sha256)."""
    subprocess.run([sys.executable, "-m", "cli", "migrate"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "DATABASE_URL": database_url})
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from service.keys import create_api_key
    from service.tables import Artifact, Job, Tenant, utcnow

    job_id = str(uuid.uuid4())
    relative = f"jobs/{job_id}/merged.tar"
    (artifact_dir / relative).parent.mkdir(parents=True)
    sha256 = make_artifact(artifact_dir / relative, size)
    engine = create_engine(database_url)
    with Session(engine) as session:
        key = create_api_key(session, "bench")
        tenant_id = session.query(Tenant.id).filter_by(name="bench").scalar()
        session.add(Job(id=job_id, tenant_id=tenant_id, status="succeeded", finished_at=utcnow(),
                        spec={"model": "tiny-bert", "task": "sequence_classification"}))
        session.flush()
        session.add(Artifact(job_id=job_id, kind="merged", path=relative, size=size, sha256=sha256))
        session.commit()
    engine.dispose()
    return key, job_id, sha256


@contextmanager
def api_server(env: dict[str, str], port: int):
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
               "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.2)
        yield base, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(10)


class RssSampler:
    """The peak RSS of a process, sampled from a thread while the block runs."""

    def __init__(self, process: psutil.Process, interval: float) -> None:
        self.process, self.interval, self.peak = process, interval, 0
        self._done = threading.Event()

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._done.wait(self.interval)


def download(client: httpx.Client, url: str, digest, start: int = 0, stop_after: int | None = None,
             etag: str | None = None) -> tuple[int, httpx.Headers]:
    """Stream `url` from byte `start` into `digest`; stop (close the connection) after `stop_after` bytes."""
    headers = {"Range": f"bytes={start}-", "If-Range": etag} if start else {}
    received = 0
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code != (206 if start else 200):
            raise RuntimeError(f"GET {url} answered {response.status_code}: {response.read()[:200]!r}")
        for chunk in response.iter_bytes(CHUNK):
            if stop_after is not None and received + len(chunk) > stop_after:
                chunk = chunk[: stop_after - received]
            digest.update(chunk)
            received += len(chunk)
            if stop_after is not None and received >= stop_after:
                break  # leaving the block closes the connection mid-body, like a dropped download
        return received, response.headers


@contextmanager
def store_env(store: str, folder: Path):
    """The variables of the store: none for the folder; for s3, a moto_server on loopback and a bucket."""
    if store == "folder":
        yield {}
        return
    sys.path.insert(0, str(REPO))
    from tests.s3 import moto_server, new_bucket
    from tests.s3 import store_env as s3_env

    with moto_server(folder / "moto.log") as endpoint:
        yield s3_env(endpoint, new_bucket(endpoint), prefix="bench")


def upload(env: dict[str, str], key: str, artifact_dir: Path) -> None:
    os.environ.update({**env, "ARTIFACT_DIR": str(artifact_dir)})
    sys.path.insert(0, str(REPO))
    from service.store import get_store

    store = get_store()
    store.put(key, store.local_path(key))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="artifact size in GiB")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between RSS samples")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--store", choices=["folder", "s3"], default="folder")
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))

    with tempfile.TemporaryDirectory() as folder, store_env(args.store, Path(folder)) as env:
        artifact_dir = Path(folder) / "artifacts"
        database_url = f"sqlite:///{folder}/bench.sqlite"
        key, job_id, sha256 = seed(database_url, artifact_dir, size)
        if args.store == "s3":  # the archive moves into the bucket, as a worker's put does
            upload(env, f"jobs/{job_id}/merged.tar", artifact_dir)
        env = {**env, "DATABASE_URL": database_url, "ARTIFACT_DIR": str(artifact_dir),
               "BROKER_URL": f"sqla+sqlite:///{folder}/broker.sqlite"}
        with api_server(env, args.port) as (base, server):
            url = f"{base}/v1/jobs/{job_id}/artifacts/merged"
            with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
                assert client.get(f"{base}/v1/jobs/{job_id}").status_code == 200  # warm up: imports, pools,
                assert client.head(url).status_code == 200  # and the store's client (boto3 for S3)
                baseline = server.memory_info().rss
                print(f"# bench/download_memory.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
                      f"{os.cpu_count()} CPUs; a {size / (1 << 30):g} GiB artifact from uvicorn api.main:app "
                      f"(SQLite; store: {args.store}); load average {os.getloadavg()[0]:.2f}")
                print(f"API RSS after warm-up requests (baseline): {baseline / MB:.1f} MB")
                print("| download | bytes | MB/s | sha256 ok | peak RSS MB | growth over baseline MB |")
                print("|---|---:|---:|---|---:|---:|")
                rows = []
                digest, started = hashlib.sha256(), time.perf_counter()
                with RssSampler(server, args.interval) as whole:
                    received, headers = download(client, url, digest)
                rows.append(("whole", received, time.perf_counter() - started, digest.hexdigest() == sha256,
                             whole.peak))
                half = size // 2
                digest, started = hashlib.sha256(), time.perf_counter()
                with RssSampler(server, args.interval) as resumed:
                    first, _ = download(client, url, digest, stop_after=half)
                    rest, _ = download(client, url, digest, start=first, etag=headers["etag"])
                rows.append(("cut at half, resumed with Range", first + rest, time.perf_counter() - started,
                             digest.hexdigest() == sha256, resumed.peak))
        for name, received, seconds, ok, peak in rows:
            print(f"| {name} | {received} | {received / MB / seconds:.0f} | {ok} | {peak / MB:.1f} | "
                  f"{(peak - baseline) / MB:+.1f} |")
        worst = max(peak for *_, peak in rows) - baseline
        print(f"\nlargest RSS growth: {worst / MB:+.1f} MB (goal: under 50 MB); "
              f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
