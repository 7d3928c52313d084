"""One training run for one job row: claim, build, train with progress reporting, export, record the outcome.

Plain functions, no Celery here: the task in worker/tasks.py only passes the job id in.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import delete, select

from service import artifacts
from service.dataset import DataError
from service.db import session_scope
from service.jobspec import JobSpec
from service.lifecycle import claim_job, finish_job, requeue_job
from service.progress import upsert_checkpoints
from service.redaction import hide_server_paths
from service.scratch import prune_scratch
from service.settings import get_settings
from service.store import StoreUnavailable, get_store
from service.tables import RUNNING_STATUSES, Checkpoint, Job, JobEvent
from worker.db_link import DatabaseLink, DatabaseUnavailable, run_link
from worker.heartbeat import heartbeat
from worker.reporting import ProgressReporter
from worker.run_setup import CHECKPOINTS, JobError, build, checkpoint_dir, set_up_run
from worker.trackers import Trackers

log = logging.getLogger(__name__)

PEFT_TASK_TYPES = {"sequence_classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
# How a run ends when this worker is shutting down: not a job status, record_outcome turns it into one (the job
# is handed back to the queue, or cancelled when a cancel came first).
WORKER_SHUTDOWN = "worker shutdown"


class JobBusy(Exception):
    """The job is running under a worker whose heartbeat is still fresh: ask again once it would be stale."""


def claim_and_run(job_id: str, worker: str = "worker", task_id: str | None = None) -> str | None:
    """Claim a queued job (or one whose run stopped beating) and run it to its end; returns its final status,
    "queued" when this worker is shutting down and handed it back, or None when there is nothing to run.

    Raises JobBusy when a live worker holds the job under this same message (redelivered while the first run
    may still be alive); the task then retries after the stale period, and takes over if the heartbeat stopped.
    """
    settings = get_settings()
    worker = f"{worker} pid {os.getpid()}"
    with session_scope() as session:
        claim = claim_job(session, job_id, worker, task_id, settings.stale_job_seconds)
        if claim is None:
            status, holder = session.execute(select(Job.status, Job.celery_task_id)
                                             .where(Job.id == job_id)).one_or_none() or (None, None)
            if status in RUNNING_STATUSES and holder == task_id:
                raise JobBusy(job_id)
            # Another message for a job that runs (the reconciler re-sent it while it waited): drop this one; if
            # that run dies, the reconciler requeues the job.
            log.info("job %s not run: it is %s", job_id, status or "gone")
            return None
        attempts, spec_json = claim
        session.add(JobEvent(job_id=job_id, message=f"started on {worker}"
                             + (f" (attempt {attempts}: the previous worker stopped)" if attempts > 1 else "")))
    make_room()
    # From here on the run survives a database outage: its writes go through `link`, which retries them.
    link = run_link(job_id)
    reporter = ProgressReporter(job_id, settings.metrics_flush_steps, settings.metrics_flush_seconds,
                                settings.cancel_poll_seconds, attempt=attempts, link=link,
                                event_steps=settings.progress_event_steps,
                                event_seconds=settings.progress_event_seconds)
    status, error = "failed", None
    try:
        with heartbeat(job_id, settings.heartbeat_seconds, link), reporter:
            status = _train_and_export(job_id, JobSpec.model_validate(spec_json), reporter, link)
    except (JobError, DatabaseUnavailable) as e:
        error = str(e)
    except ValidationError as e:
        # The API accepted it, so this worker sees other folders (MODEL_DIRS/DATA_DIRS) or a newer schema.
        error = f"the job spec is not valid on this worker: {_summary(e)}"
    except Exception as e:
        error = describe_failure(e, reporter.step)
        log.exception("job %s failed", job_id)
    finally:
        release_gpu_memory()
        if not reporter.lost:  # a lost job may be running again, in another worker of this host
            get_store().forget_local(artifacts.job_key(job_id))  # with S3: archives, checkpoints, fetched copies
    if error is not None:
        error = hide_server_paths(error)  # a loader's message may carry a folder of this server
    if reporter.lost:
        log.warning("job %s: stopped at step %s: the job was requeued or ended while this worker could not "
                    "reach the database; this run records nothing more", job_id, reporter.step)
        return None
    try:
        return record_outcome(job_id, spec_json, status, error, reporter, link)
    except DatabaseUnavailable as e:
        # The row stays running without a heartbeat: once the database is back, the reconciler requeues it.
        log.error("job %s: its outcome (%s%s) could not be recorded: %s", job_id, status,
                  f": {error}" if error else "", e)
        return None


def make_room() -> None:
    """Before a run fetches anything: this host's scratch back within SCRATCH_MAX_BYTES (service/scratch.py)."""
    try:
        prune_scratch(get_settings().scratch_max_bytes)
    except Exception:  # only space is at stake: the run goes on
        log.warning("could not prune this host's scratch", exc_info=True)


def record_outcome(job_id: str, spec: dict, status: str, error: str | None, reporter: ProgressReporter,
                   link: DatabaseLink) -> str:
    """The rest of the progress, then the job's final status; each write waits through a database outage."""
    reporter.flush()
    if status == WORKER_SHUTDOWN:
        if hand_back(job_id, spec, reporter.step, link):
            return "queued"
        status = "cancelled"  # a cancel arrived while this worker was shutting down
    message = {"succeeded": "succeeded", "cancelled": f"cancelled at step {reporter.step}"}.get(status, error)

    def finish(session) -> None:
        if finish_job(session, job_id, status, error):  # one event even if a lost commit is retried
            session.add(JobEvent(job_id=job_id, level="error" if status == "failed" else "info", message=message))
    link.write(finish, "recording the outcome")
    return status


def _train_and_export(job_id: str, spec: JobSpec, reporter: ProgressReporter, link: DatabaseLink) -> str:
    import adalora_core as core
    from worker.data import make_eval_fn
    from worker.parallel import device_for, peers

    gpus = spec.resources.gpus
    run = set_up_run(job_id, spec, reporter, device_for(0, gpus))
    data = run.data
    # Rank 0 evaluates alone, on one device: twice the rows a device trains on, not twice the whole batch.
    eval_fn = make_eval_fn(data.kind, data.validation, run.collate, 2 * run.args.batch_size // gpus,
                           data.num_labels, tokenizer=run.tokenizer)
    warm_start = warm_start_path(spec, link)
    if warm_start:
        reporter.event("info", f"starting from {spec.from_checkpoint}: its weights, rank pattern and importance "
                               "scores, under this job's own budget schedule")
    resume = latest_checkpoint(job_id, link)
    trackers = Trackers(job_id, spec, warn=lambda message: reporter.event("warning", message))
    outcome = "failed"
    try:
        with peers(job_id, spec, gpus, resume, warm_start, reporter):  # rank 0 is this process
            result = core.train(run.model, run.config, run.args, data.train, run.collate, eval_fn=eval_fn,
                                callbacks=trackers.around(reporter), resume_from=resume,
                                batch_order=run.batch_order, warm_start=warm_start)
        if result.stopped:
            outcome = WORKER_SHUTDOWN if reporter.shutdown else "cancelled"
            return outcome
        reporter.event("info", "writing the adapter and the merged model")
        reporter.flush()
        full_base = None
        if run.quantization:  # a 4-bit base cannot hold dW: the merged download folds it into a full-precision copy
            full_base = build(spec, run.source, num_labels=data.num_labels,
                              config_overrides=data.model_config_overrides(), dtype=run.dtype)
        puts = PatientPuts(get_settings().store_outage_limit_seconds, lambda text: reporter.event("warning", text))
        store_final_state(job_id, result, puts)  # first: once it is stored, a store outage costs no training
        try:
            export(job_id, spec, result, run.tokenizer, link, puts, full_base=full_base)
        except StoreUnavailable as exc:
            keep_final_state(job_id, result.step, link)
            start = f'"from_checkpoint": "{job_id}:{result.step}"'
            raise JobError(f"training finished, but the downloads could not be stored: {exc}. The trained weights "
                           f"are kept: start a new job from them with {start}") from None
        reporter.wait_for_uploads()  # a checkpoint still uploading would come back on record after the discard
        discard_checkpoints(job_id, link)
        outcome = "succeeded"
        return outcome
    finally:
        trackers.finish(outcome)


def hand_back(job_id: str, spec: dict, step: int, link: DatabaseLink) -> bool:
    """This worker is shutting down: put the job back on the queue, to resume from the checkpoint just saved."""
    from service.queue import enqueue_job

    def requeue(session) -> bool:
        if not requeue_job(session, job_id):
            return False
        session.add(JobEvent(job_id=job_id, message=f"its worker is shutting down: stopped at step {step} and "
                                                    "queued again, to resume from there"))
        return True
    if not link.write(requeue, "handing the job back"):
        return False
    enqueue_job(job_id, spec)  # after the commit: the message must find the job queued
    return True


def latest_checkpoint(job_id: str, link: DatabaseLink) -> str | None:
    """The newest checkpoint an earlier attempt of this job left (on any host: fetched from the store), to
    resume from; None for a fresh start."""
    keys = link.read(lambda session: session.scalars(select(Checkpoint.path).where(Checkpoint.job_id == job_id)
                                                     .order_by(Checkpoint.step.desc())).all(),
                     "reading checkpoints")
    for key in keys:
        if (path := get_store().local_copy(key)) is not None:
            return str(path)
    return None


FINAL_STATE = "final-state.pt"


def store_final_state(job_id: str, result, puts: PatientPuts) -> None:
    """A succeeded job's weights and allocator state (no optimizer): what `from_checkpoint: "<job id>"` starts
    from. A store that stays away past the limit fails the job with its checkpoints kept."""
    import adalora_core as core

    path = core.save_warm_start(str(artifacts.job_dir(job_id) / FINAL_STATE), result)
    try:
        puts.put(artifacts.job_key(job_id, FINAL_STATE), Path(path))
    except StoreUnavailable as exc:
        raise JobError(f"training finished, but its result could not be stored: {exc}. The job's checkpoints "
                       f"are kept (GET /v1/jobs/{job_id}/checkpoints): start a new job from the latest with "
                       "from_checkpoint, or submit this one again") from None


def keep_final_state(job_id: str, step: int, link: DatabaseLink) -> None:
    """The stored final state on record as the job's checkpoint at its last step, so that a job failed after
    training can be started from (`from_checkpoint: "<job id>:<step>"`) without training again."""
    key = artifacts.job_key(job_id, FINAL_STATE)
    link.write(lambda session: upsert_checkpoints(session, job_id, {step: key}), "keeping the final state")


STORE_RETRY_SECONDS = (2.0, 60.0)  # the first pause after a failed put, doubling up to the second


class PatientPuts:
    """Store puts that wait through a store outage: a failed put (after boto3's own retries) is tried again
    after a pause that doubles up to a minute, until the store has been away for `limit` seconds
    (STORE_OUTAGE_LIMIT_SECONDS); then StoreUnavailable. A job's results cost a training run: worth the wait."""

    def __init__(self, limit: float, warn: Callable[[str], None]) -> None:
        self.limit, self.warn = limit, warn
        self.down_since: float | None = None

    def put(self, key: str, path: Path) -> None:
        pause = STORE_RETRY_SECONDS[0]
        while True:
            try:
                get_store().put(key, path)
            except StoreUnavailable as exc:
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                    self.warn(f"{exc}; storing the results is retried for up to {self.limit:g} s")
                if now - self.down_since + pause > self.limit:
                    raise StoreUnavailable(f"{exc} for {now - self.down_since:.0f} s "
                                           f"(STORE_OUTAGE_LIMIT_SECONDS={self.limit:g})") from None
                time.sleep(pause)
                pause = min(2 * pause, STORE_RETRY_SECONDS[1])
            else:
                if self.down_since is not None:
                    self.warn(f"the artifact store is back after {time.monotonic() - self.down_since:.0f} s")
                    self.down_since = None
                return


def warm_start_path(spec: JobSpec, link: DatabaseLink) -> str | None:
    """The file from_checkpoint names: a succeeded job's final state, or a checkpoint of a job at a step."""
    source = spec.checkpoint_source()
    if source is None:
        return None
    job_id, step = source
    if step is None:
        key = artifacts.job_key(job_id, FINAL_STATE)
    else:
        key = link.read(lambda session: session.scalar(select(Checkpoint.path).where(
            Checkpoint.job_id == job_id, Checkpoint.step == step)), "reading the checkpoint to start from")
    path = get_store().local_copy(key) if key else None
    if path is None:
        raise JobError(f"from_checkpoint: {spec.from_checkpoint} is no longer stored on this server")
    return str(path)


def discard_checkpoints(job_id: str, link: DatabaseLink) -> None:
    """After success the adapter supersedes them: they are internal (optimizer state) and can be large."""
    link.write(lambda session: session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id)),
               "discarding checkpoints")
    try:
        get_store().delete_prefix(artifacts.job_key(job_id, f"{CHECKPOINTS}/"))
    except StoreUnavailable as exc:  # off the record already: the objects only cost space
        log.warning("job %s: its checkpoints stay in the store: %s", job_id, exc)
    shutil.rmtree(checkpoint_dir(job_id), ignore_errors=True)


def export(job_id: str, spec: JobSpec, result, tokenizer, link: DatabaseLink, puts: PatientPuts,
           full_base=None) -> None:
    """The downloads: the AdaLoRA adapter (PEFT), the merged model, and the adapter rewritten as plain LoRA
    for serving engines (per-module ranks, and one padded rank; adalora_core/lora_format.py)."""
    from adalora_core import save_lora_adapter, save_merged, save_peft_adapter, save_serving_adapter

    with tempfile.TemporaryDirectory(dir=artifacts.job_dir(job_id)) as work:  # this host's scratch
        folders = {kind: Path(work) / kind for kind in ("adapter", "merged", "lora", "lora-serving")}
        adapter = save_peft_adapter(result, str(folders["adapter"]), base_model=spec.model,
                                    task_type=PEFT_TASK_TYPES[spec.task])
        save_merged(result, str(folders["merged"]), base_model=full_base)
        tokenizer.save_pretrained(str(folders["merged"]))
        notes = []
        ranks = save_lora_adapter(adapter, folders["lora"])
        notes.append(f"lora: {len(ranks)} modules at ranks {min(ranks.values())}-{max(ranks.values())}" if ranks else
                     "lora: every module was pruned to rank 0, so it holds rank-1 zeros (PEFT takes no rank 0): "
                     "the adapted layers are the base model's")
        notes.append(f"lora-serving: rank {save_serving_adapter(adapter, folders['lora-serving'])} "
                     "everywhere, zero-padded, the scale folded into lora_B")

        archives = [artifacts.archive_folder(job_id, kind, folder, put=puts.put) for kind, folder in folders.items()]

    def record(session) -> None:  # stored first, recorded once: a row never names a half-stored archive
        for archive in archives:
            artifacts.record_archive(session, job_id, archive)
            session.add(JobEvent(job_id=job_id, message=f"{archive.kind} ready: {archive.size} bytes, "
                                                        f"sha256 {archive.sha256}"))
        session.add_all(JobEvent(job_id=job_id, message=note) for note in notes)
    link.write(record, "recording the downloads")


def release_gpu_memory() -> None:
    """Give cached GPU memory back after a run, so the next job (maybe a bigger model) starts clean."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _summary(error: ValidationError) -> str:
    """Each problem as the API would word it: our validators' messages already start with their field."""
    problems = []
    for e in error.errors():
        message = e["msg"].removeprefix("Value error, ")
        loc = e["loc"]  # empty for a check across fields, whose message names them
        problems.append(message if not loc or message.startswith(str(loc[0])) else
                        f"{'.'.join(map(str, loc))}: {message}")
    return "; ".join(problems)


def describe_failure(error: BaseException, step: int) -> str:
    """A message a user can act on for the failures we can name; otherwise the error's own words."""
    from adalora_core import ConfigError, TrainingDiverged

    if isinstance(error, ConfigError):
        return f"configuration: {error}"
    if isinstance(error, TrainingDiverged):
        return (f"{str(error).split(': the run diverged')[0]}: the run diverged; lower training.learning_rate or "
                "keep training.max_grad_norm set, and check that regression labels are on a modest scale")
    if isinstance(error, DataError):
        return str(error)
    if isinstance(error, StoreUnavailable):
        return f"at step {step}: {error}; submit the job again once the store answers"
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return (f"out of GPU memory at step {step}: lower training.batch_size (raise training.grad_accum to keep "
                "the effective batch) or training.max_seq_len, turn on training.gradient_checkpointing, use "
                "training.base_dtype bf16, lower budget.init_r, or use a smaller model")
    if isinstance(error, MemoryError):
        return (f"out of host memory at step {step}: use a smaller dataset or model, or ask the operator "
                "for a worker with more memory")
    if type(error).__name__ == "SoftTimeLimitExceeded":
        return f"stopped at step {step}: the run exceeded this server's time limit; train for fewer steps"
    last = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" in {Path(last.filename).name}:{last.lineno}" if last else ""
    return f"internal error at step {step}: {type(error).__name__}: {error}{where}"
