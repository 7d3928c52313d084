"""Checkpoints into the store off the training thread: one upload at a time, each retried through a short store
outage. A checkpoint that cannot be stored costs that checkpoint, not the run: it is dropped with a warning and
the next one tries again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from service.store import StoreUnavailable, get_store

CHECKPOINT_RETRY_SECONDS = (2.0, 8.0)  # pauses between attempts to store a checkpoint (boto3 retries inside each)


class CheckpointUploader:
    """Puts a run's checkpoint files into the store from a thread, so training goes on while a file uploads.
    `stored(step, key)` is called (on that thread) once a file is whole in the store, and only then: the
    reporter puts it on record there, so a takeover on any host resumes only from stored files. `warn(text)`
    says a checkpoint was dropped.

    One upload at a time: `upload` waits for the one before to end, so the training thread waits only when
    checkpoints come faster than the store takes them. `wait` is for the places that need every checkpoint
    stored and on record: before the run discards its checkpoints, and before the job is finished or handed
    back."""

    def __init__(self, job_id: str, stored: Callable[[int, str], None], warn: Callable[[str], None]) -> None:
        self.job_id, self.stored, self.warn = job_id, stored, warn
        self.failure: Exception | None = None  # what broke an upload other than a store outage
        self._thread: threading.Thread | None = None

    def upload(self, step: int, path: str) -> None:
        """Hands the checkpoint of `step` at `path` to the upload thread, once the previous upload has ended."""
        self.join()
        self.raise_failure()
        self._thread = threading.Thread(target=self._upload, args=(step, Path(path)),
                                        name=f"checkpoint-upload-{self.job_id}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the last checkpoint handed over is stored and on record, or dropped; raises what broke it."""
        self.join()
        self.raise_failure()

    def join(self) -> None:
        """Until the upload in progress, if any, has ended."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _upload(self, step: int, path: Path) -> None:
        try:
            store = get_store()
            key = store.key_for(path)
            for attempt, pause in enumerate((*CHECKPOINT_RETRY_SECONDS, None)):
                try:
                    store.put(key, path)
                    break
                except StoreUnavailable as exc:
                    if pause is None:
                        path.unlink(missing_ok=True)
                        self.warn(f"the checkpoint at step {step} could not be stored after {attempt + 1} "
                                  f"attempts ({exc}); training goes on, the next checkpoint tries again")
                        return
                    time.sleep(pause)
            self.stored(step, key)
        except Exception as e:  # not a store outage (a full disk, a bug): the run fails at its next callback
            self.failure = e
