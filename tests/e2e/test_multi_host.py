"""Past one machine: the API, two GPU-worker hosts, Postgres, Redis and the S3 store each on a host of its own
(network namespaces on a private bridge: separate addresses, and every folder the service writes private to
its host). A dataset uploaded to the API host trains on a worker host; metrics, ranks and downloads work from
the API host; the worker host running the job is killed mid-training and the other worker host resumes it
from the checkpoint in the store, ending with every metric step exactly once.

What the hosts do share is what an image would hold: this checkout's code and virtualenv, and a copy of the
tiny model per host (each host's MODEL_DIRS is its own folder)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys

import httpx
import pytest

from tests.conftest import REPO, sentiment_rows, wait_for
from tests.netns import Host, netns_problem, network
from tests.s3 import CREDENTIALS, new_bucket, objects
from tests.throwaway_postgres import throwaway_postgres

pytestmark = pytest.mark.skipif(bool(problem := netns_problem()), reason=f"no separate hosts here: {problem}")

STEPS, CHECKPOINT_EVERY = 400, 20
HOSTS = ["db", "cache", "s3", "api", "gpu-a", "gpu-b"]
BIN = os.path.dirname(sys.executable)


def service_env(host: Host, hosts: dict[str, Host], bucket: str, database_url: str, model_root) -> dict[str, str]:
    """What each host's operator would set: the shared services by address, the host's own folders."""
    models = host.folder / "models"
    shutil.copytree(model_root, models / model_root.name)
    return {
        "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(host.folder), "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
        "ENV": "production", "DATABASE_URL": database_url, "REDIS_URL": f"redis://{hosts['cache'].address}:6379/0",
        "ARTIFACT_STORE": f"s3://{bucket}/service", "AWS_ENDPOINT_URL": f"http://{hosts['s3'].address}:5000",
        **CREDENTIALS, "ARTIFACT_DIR": str(host.folder / "artifacts"), "MODEL_DIRS": str(models),
        "QUEUE_NAME": "training", "METRICS_FLUSH_STEPS": "5", "METRICS_FLUSH_SECONDS": "0.5",
        "CHECKPOINT_EVERY": str(CHECKPOINT_EVERY), "HEARTBEAT_SECONDS": "0.5", "STALE_JOB_SECONDS": "3",
        "RECONCILE_SECONDS": "0.5",
    }


def start_worker(host: Host, env: dict[str, str]):
    return host.start([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "training",
                       "-c", "1", "--pool", "solo", "--without-heartbeat", "--without-gossip", "--without-mingle",
                       "-n", f"{host.name}@%h", "-l", "info"], {**env, "PWD": str(REPO)}, "worker.log")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.TransportError:
        return False


def test_a_job_moves_to_another_host_when_its_host_dies_and_ends_with_every_step_once(tmp_path, tiny_model_dir):
    with network(HOSTS, tmp_path) as (here, hosts):
        db, cache, s3, api_host, gpu_a, gpu_b = (hosts[name] for name in HOSTS)
        cache.start(["redis-server", "--bind", cache.address, "--port", "6379", "--save", "", "--appendonly", "no",
                     "--protected-mode", "no"], {}, "redis.log")
        s3.start([f"{BIN}/moto_server", "-H", s3.address, "-p", "5000"], dict(os.environ), "moto.log")
        with throwaway_postgres(host=db.address, netns=db.netns, clients=f"{here}/24") as postgres:
            wait_for(lambda: answers(f"http://{s3.address}:5000"), 60, what="the S3 host")
            bucket = new_bucket(f"http://{s3.address}:5000")
            envs = {h.name: service_env(h, hosts, bucket, postgres.url, tiny_model_dir)
                    for h in (api_host, gpu_a, gpu_b)}
            api_host.run([f"{BIN}/adalora-svc", "migrate"], envs["api"])
            key = api_host.run([f"{BIN}/adalora-svc", "create-key", "--tenant", "multi-host"], envs["api"]).strip()
            api_host.start([sys.executable, "-m", "uvicorn", "api.main:app", "--host", api_host.address, "--port",
                            "8000"], envs["api"], "api.log")
            base = f"http://{api_host.address}:8000"
            wait_for(lambda: answers(f"{base}/readyz"), 90, what=f"the API host: {api_host.log('api.log')}")
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert api.get("/readyz").json()["checks"]["artifact_store"] == "ok"

            rows = "sentence,label\n" + "".join(f"{s},{y}\n" for s, y in sentiment_rows(96))
            uploaded = api.post("/v1/files", files={"file": ("sentiment.csv", rows.encode())})
            assert uploaded.status_code == 201, uploaded.text
            start_worker(gpu_a, envs["gpu-a"])
            spec = {"model": "tiny-bert", "task": "sequence_classification",
                    "dataset": {"source": "file", "file_id": uploaded.json()["id"], "validation_split": 0.25},
                    "budget": {"init_r": 4, "target_r": 2, "lora_alpha": 8},
                    "schedule": {"tinit": 20, "tfinal": 100, "delta_t": 10},
                    "training": {"max_steps": STEPS, "batch_size": 8, "learning_rate": 5e-3, "warmup_ratio": 0.0}}
            created = api.post("/v1/jobs", json=spec)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            def checkpointed() -> bool:
                job = api.get(f"/v1/jobs/{job_id}").json()
                assert job["status"] in ("queued", "running"), (job, gpu_a.log("worker.log"))
                return bool(api.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"])

            wait_for(checkpointed, 180, interval=0.1, what=f"a checkpoint: {gpu_a.log('worker.log')}")
            killed_at = api.get(f"/v1/jobs/{job_id}").json()["step"]
            gpu_a.kill()
            assert killed_at < STEPS, "the job finished before its host could be killed"
            start_worker(gpu_b, envs["gpu-b"])

            def finished() -> dict | None:
                job = api.get(f"/v1/jobs/{job_id}").json()
                return job if job["status"] in ("succeeded", "failed", "cancelled") else None

            job = wait_for(finished, 240, what=f"the takeover: {gpu_b.log('worker.log')}")
            assert (job["status"], job["step"], job["attempts"]) == ("succeeded", STEPS, 2), job

            steps, after = [], 0
            while True:  # every metric step, page by page, from the API host
                page = api.get(f"/v1/jobs/{job_id}/metrics", params={"after_step": after, "limit": 5000}).json()
                steps += [row["step"] for row in page["data"]]
                if not page["has_more"]:
                    break
                after = steps[-1]
            assert steps == list(range(1, STEPS + 1))  # each step exactly once, across the two hosts
            events = [e["message"] for e in api.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]]
            started = [m for m in events if m.startswith("started on")]
            assert [m.split()[2].split("@")[0] for m in started] == ["gpu-a", "gpu-b"], started
            [resumed] = [m for m in events if m.startswith("resumed from step")]
            resumed_step = int(resumed.split()[-1])
            assert resumed_step % CHECKPOINT_EVERY == 0 and resumed_step <= killed_at + CHECKPOINT_EVERY, events
            ranks = api.get(f"/v1/jobs/{job_id}/ranks").json()
            assert ranks["data"] and ranks["data"][-1]["final"]

            download = api.get(f"/v1/jobs/{job_id}/artifacts/adapter")
            assert download.status_code == 200
            assert hashlib.sha256(download.content).hexdigest() == download.headers["x-checksum-sha256"]
            tail = api.get(f"/v1/jobs/{job_id}/artifacts/merged", headers={"Range": "bytes=-100"})
            assert tail.status_code == 206 and len(tail.content) == 100

            stored = objects(f"http://{s3.address}:5000", bucket, "service/")
            assert not [k for k in stored if "/checkpoints/" in k]  # discarded after success
            assert {f"service/jobs/{job_id}/{kind}.tar" for kind in ("adapter", "merged", "lora")} <= set(stored)
            # Each host wrote only under its own folder: the resumed checkpoint was fetched onto gpu-b.
            assert not (api_host.folder / "artifacts" / "jobs").exists() or not any(
                (api_host.folder / "artifacts" / "jobs").rglob("*.pt"))
            print(f"killed gpu-a at step {killed_at}, gpu-b resumed from step {resumed_step}; "
                  f"{len(steps)} metric rows, {len(stored)} objects in the store")
