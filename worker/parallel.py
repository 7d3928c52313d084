"""A job over several devices (`resources.gpus`): this worker process is rank 0 and starts one process per
further device (`python -m worker.parallel`, a plain subprocess: a Celery prefork child may not have
multiprocessing children), all in one torch.distributed group (NCCL on GPUs, gloo on a CPU host, where `gpus`
counts processes). Every process builds the same data and model on its own device and calls
adalora_core.train, which runs data-parallel (adalora_core.distributed); only rank 0 talks to the database,
the trackers and the artifact folder.

A cancel or a shutdown reaches the others through rank 0's stop decision at the next step (they ignore
SIGINT and SIGTERM, which a terminal or a service manager may send the whole group, and die with rank 0's
process). A process that dies, before or after joining the group, fails the job with its own error rather
than hanging it: rank 0 joins only once every peer says it is about to, and a watchdog aborts the group when
one exits with an error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from service.jobspec import JobSpec
from service.redaction import hide_server_paths

COLLECTIVE_TIMEOUT = timedelta(hours=1)  # the longest rank 0 may evaluate while the others wait
READY_SECONDS = 600.0                    # a peer's start-up (imports) before it joins the group
JOIN_SECONDS = 60.0                      # for all peers to exit once rank 0 leaves the group
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
        from worker.run_setup import JobError
        raise JobError(f"resources.gpus is {size}, but this worker sees {torch.cuda.device_count()} GPU(s): start "
                       f"it with {size} visible devices (CUDA_VISIBLE_DEVICES), or ask for fewer")
    return torch.device("cuda", rank)


def _backend() -> str:
    import torch
    return "nccl" if torch.cuda.is_available() else "gloo"


class Peer:
    """Rank `rank`'s process, with the files it leaves: `ready` before it joins, `error` if it fails."""

    def __init__(self, rank: int, base: Path, job_id: str, spec: JobSpec, size: int, init: str,
                 resume: str | None, warm_start: str | None) -> None:
        self.rank, self.ready, self.error = rank, base.with_suffix(f".{rank}.ready"), base.with_suffix(f".{rank}.error")
        arguments = base.with_suffix(f".{rank}.json")
        arguments.write_text(json.dumps({"rank": rank, "size": size, "init": init, "job_id": job_id,
                                         "spec": spec.model_dump(mode="json"), "resume": resume,
                                         "warm_start": warm_start, "ready": str(self.ready),
                                         "error": str(self.error)}))
        self.process = subprocess.Popen([sys.executable, "-m", "worker.parallel", str(arguments)],
                                        start_new_session=True)  # a terminal's Ctrl+C is rank 0's to handle

    @property
    def failed(self) -> bool:
        code = self.process.poll()
        return code is not None and code != 0

    def failure(self):
        from worker.run_setup import JobError

        said = self.error.read_text(errors="replace").strip() if self.error.is_file() else ""
        return JobError(f"rank {self.rank} of the data-parallel run (pid {self.process.pid}) "
                        + (f"failed: {said}" if said else f"died with exit code {self.process.returncode}"))


@contextmanager
def peers(job_id: str, spec: JobSpec, size: int, resume: str | None, warm_start: str | None, reporter):
    """Starts ranks 1..size-1 and joins this process to the group as rank 0, for the `with` block."""
    if size == 1:
        yield
        return
    import torch.distributed as dist

    from worker.run_setup import checkpoint_dir

    folder = checkpoint_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"rendezvous-{uuid.uuid4().hex}"  # files on this host: no port to pick
    init = base.as_uri()
    others: list[Peer] = []
    watchdog = Watchdog(others)
    try:
        others.extend(Peer(rank, base, job_id, spec, size, init, resume, warm_start) for rank in range(1, size))
        _wait_until_ready(others, reporter)
        dist.init_process_group(_backend(), init_method=init, rank=0, world_size=size, timeout=COLLECTIVE_TIMEOUT)
        reporter.event("info", f"training data-parallel on {size} processes (ranks 1-{size - 1}: pids "
                               f"{', '.join(str(p.process.pid) for p in others)})")
        watchdog.start()
        try:
            yield
        except Exception as exc:
            if _collective_failure(exc) and (watchdog.dead or watchdog.find_dead(within=5.0)):
                raise watchdog.dead.failure() from exc  # gloo may raise before the watchdog looks
            raise
        finally:
            watchdog.stop()
            if dist.is_initialized():  # the next job of this worker process forms a group of its own
                try:
                    dist.destroy_process_group()
                except Exception:  # a group broken by a dead rank
                    pass
    finally:
        _stop(others)
        for path in folder.glob(f"{base.name}*"):
            path.unlink(missing_ok=True)


def _wait_until_ready(others: list[Peer], reporter) -> None:
    """Until every peer is about to join; a peer that fails first fails the job now, not after a timeout."""
    deadline = time.monotonic() + READY_SECONDS
    while not all(p.ready.exists() for p in others):
        for peer in others:
            if peer.failed:
                raise peer.failure()
        if reporter.should_stop():
            from worker.run_setup import JobError
            raise JobError("stopped while the data-parallel processes were starting")
        if time.monotonic() > deadline:
            from worker.run_setup import JobError
            raise JobError(f"the data-parallel processes did not start within {READY_SECONDS:.0f} s")
        time.sleep(0.2)


def _collective_failure(exc: BaseException) -> bool:
    """Whether rank 0's error is its group breaking (a peer gone), not one every rank raised alike (a
    diverged loss, a configuration error, an out-of-memory), which says more as it is."""
    from adalora_core import ConfigError, TrainingDiverged
    from worker.run_setup import JobError

    return not isinstance(exc, (ConfigError, TrainingDiverged, JobError, MemoryError)) and \
        "out of memory" not in str(exc).lower()


def _stop(others: list[Peer]) -> None:
    deadline = time.monotonic() + JOIN_SECONDS  # one deadline for all, not one each
    for peer in others:
        try:
            peer.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            peer.process.kill()
            peer.process.wait()


class Watchdog:
    """Watches the other ranks while rank 0 trains. One that exits with an error aborts the group: rank 0's
    collective in progress raises (NCCL would otherwise wait out COLLECTIVE_TIMEOUT), and the job fails
    naming the process."""

    def __init__(self, others: list[Peer]) -> None:
        self.others = others
        self.dead: Peer | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ddp-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
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

    def find_dead(self, within: float) -> Peer | None:
        """A rank that exited with an error, waiting up to `within` seconds for one to."""
        deadline = time.monotonic() + within
        while True:
            for peer in self.others:
                if peer.failed:
                    self.dead = peer
                    return peer
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when rank 0's dies (a SIGKILLed worker leaves no GPU holders)."""
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _peer(arguments: dict) -> None:
    """Rank `rank`'s whole life: the same setup and loop as rank 0, reporting nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when to stop, for every rank at once
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rank, size = arguments["rank"], arguments["size"]
    try:
        import torch
        import torch.distributed as dist

        import adalora_core as core
        from worker.run_setup import set_up_run

        device = device_for(rank, size)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # what "the current device" means for NCCL and friends
        spec = JobSpec.model_validate(arguments["spec"])
        Path(arguments["ready"]).touch()
        dist.init_process_group(_backend(), init_method=arguments["init"], rank=rank, world_size=size,
                                timeout=COLLECTIVE_TIMEOUT)
        try:
            run = set_up_run(arguments["job_id"], spec, _Quiet(), device)
            core.train(run.model, run.config, run.args, run.data.train, run.collate,
                       resume_from=arguments["resume"], batch_order=run.batch_order,
                       warm_start=arguments["warm_start"])
        finally:
            dist.destroy_process_group()
    except Exception as exc:
        Path(arguments["error"]).write_text(hide_server_paths(f"{type(exc).__name__}: {exc}")[:2000])
        raise


if __name__ == "__main__":
    _peer(json.loads(Path(sys.argv[1]).read_text()))
