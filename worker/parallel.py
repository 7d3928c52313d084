"""A job over several devices (`resources.gpus`): this worker process is rank 0 and starts one process per
further device, all in one torch.distributed group (NCCL on GPUs, gloo on a CPU host, where `gpus` counts
processes). Every process builds the same data and model on its own device and calls adalora_core.train,
which runs data-parallel (adalora_core.distributed); only rank 0 talks to the database, the trackers and the
artifact folder. A cancel or a shutdown reaches the others through rank 0's stop decision at the next step; a
process that dies breaks the others' next collective, so the job fails with that error rather than hanging,
and whatever survives is stopped when rank 0 leaves the group.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

from service.jobspec import JobSpec
from service.settings import get_settings

COLLECTIVE_TIMEOUT = timedelta(hours=1)  # the longest rank 0 may evaluate while the others wait
JOIN_SECONDS = 60.0
WATCH_SECONDS = 1.0


class _Quiet:
    """What a peer reports to: nothing (rank 0 reports for the run)."""

    def event(self, level: str, message: str) -> None:
        pass


def device_for(rank: int, size: int):
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    if size == 1:
        return torch.device("cuda")  # this worker's GPU, as CUDA_VISIBLE_DEVICES gives it
    if torch.cuda.device_count() < size:
        from worker.setup import JobError
        raise JobError(f"resources.gpus is {size}, but this worker sees {torch.cuda.device_count()} GPU(s): start "
                       f"it with {size} visible devices (CUDA_VISIBLE_DEVICES), or ask for fewer")
    return torch.device("cuda", rank)


def _backend() -> str:
    import torch
    return "nccl" if torch.cuda.is_available() else "gloo"


@contextmanager
def peers(job_id: str, spec: JobSpec, size: int, resume: str | None, warm_start: str | None, reporter):
    """Starts ranks 1..size-1 and joins this process to the group as rank 0, for the `with` block."""
    if size == 1:
        yield
        return
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from worker.setup import checkpoint_dir

    folder = checkpoint_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    rendezvous = folder / f"rendezvous-{uuid.uuid4().hex}"  # a file on this host: no port to pick
    init = rendezvous.as_uri()
    context = mp.get_context("spawn")
    others = [context.Process(target=_peer, args=(rank, size, init, job_id, spec.model_dump(mode="json"), resume,
                                                  warm_start), name=f"job-{job_id}-rank-{rank}", daemon=True)
              for rank in range(1, size)]
    for process in others:
        process.start()
    watchdog = Watchdog(others)
    try:
        dist.init_process_group(_backend(), init_method=init, rank=0, world_size=size, timeout=COLLECTIVE_TIMEOUT)
        reporter.event("info", f"training data-parallel on {size} processes (ranks 1-{size - 1}: pids "
                               f"{', '.join(str(p.pid) for p in others)})")
        watchdog.start()
        try:
            yield
        except Exception as exc:
            if watchdog.dead or watchdog.find_dead(within=5.0):  # gloo may raise before the watchdog looks
                raise watchdog.failure() from exc
            raise
        finally:
            watchdog.stop()
            if dist.is_initialized():  # the next job of this worker process forms a group of its own
                try:
                    dist.destroy_process_group()
                except Exception:  # a group broken by a dead rank
                    pass
    finally:
        for process in others:
            process.join(JOIN_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join()
        rendezvous.unlink(missing_ok=True)


class Watchdog:
    """Watches the other ranks while rank 0 trains. One that exits with an error aborts the group: rank 0's
    collective in progress raises (NCCL would otherwise wait out COLLECTIVE_TIMEOUT), and the job fails
    naming the process."""

    def __init__(self, others: list) -> None:
        self.others = others
        self.dead = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ddp-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stopped.wait(WATCH_SECONDS):
            if self.find_dead(within=0):
                try:
                    from torch.distributed.distributed_c10d import _abort_process_group
                    _abort_process_group()
                except Exception:  # already broken: the collective raises by itself
                    pass
                return

    def find_dead(self, within: float) -> object | None:
        """A rank that exited with an error, waiting up to `within` seconds for one to."""
        deadline = time.monotonic() + within
        while True:
            for process in self.others:
                if process.exitcode not in (None, 0):
                    self.dead = process
                    return process
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def failure(self):
        from worker.setup import JobError

        process = self.dead
        rank = process.name.rsplit("-", 1)[-1]
        return JobError(f"the rank {rank} process (pid {process.pid}) died with exit code {process.exitcode}: the "
                        "data-parallel run stopped; its latest checkpoint is kept, so a retry resumes from there")


def _peer(rank: int, size: int, init: str, job_id: str, spec_json: dict, resume: str | None,
          warm_start: str | None) -> None:
    """Rank `rank`'s whole life: the same setup and loop as rank 0, reporting nothing."""
    import torch.distributed as dist

    import adalora_core as core
    from worker.setup import set_up_run

    get_settings.cache_clear()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spec = JobSpec.model_validate(spec_json)
    # Joined first: once connected, this process dying (in its setup, too) breaks rank 0's next collective.
    dist.init_process_group(_backend(), init_method=init, rank=rank, world_size=size, timeout=COLLECTIVE_TIMEOUT)
    try:
        run = set_up_run(job_id, spec, _Quiet(), device_for(rank, size))
        core.train(run.model, run.config, run.args, run.data.train, run.collate, resume_from=resume,
                   batch_order=run.batch_order, warm_start=warm_start)
    finally:
        dist.destroy_process_group()
