"""Batches collated ahead of the training step, on a thread, into pinned memory when the device is a GPU.

Collating (Python lists to tensors, padding) otherwise runs on the training thread between steps, while the
GPU waits. The order is the source's: a resumed run sees the same batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator

import torch

# Batches held ready: enough to hide one slow collate, few enough that memory stays small.
PREFETCH_DEPTH = 2
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(batches: Iterator[dict[str, torch.Tensor]], pin: bool,
               depth: int = PREFETCH_DEPTH) -> Generator[dict[str, torch.Tensor], None, None]:
    """`batches`, read ahead by up to `depth` on a daemon thread; an error in the source is raised here, at the
    batch where it happened. Pinned (page-locked) memory lets the copy to a GPU run asynchronously. Closing the
    returned generator (or dropping it) stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                if not put(batch):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put(_Failure(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
