"""The batch prefetcher: the source's order, its errors where they happened, and no thread left behind."""

import threading
import time

import pytest
import torch

from adalora_core.prefetch import prefetched


def numbered(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"row {i} is broken")
        yield {"input_ids": torch.full((2, 3), i)}


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "batch-prefetch"]


def test_batches_come_in_the_sources_order_and_the_thread_ends():
    got = [int(b["input_ids"][0, 0]) for b in prefetched(numbered(7), pin=False)]
    assert got == list(range(7))
    time.sleep(0.2)
    assert not prefetch_threads()


def test_a_source_error_is_raised_at_its_batch():
    seen = []
    with pytest.raises(ValueError, match="row 3 is broken"):
        for batch in prefetched(numbered(7, fail_at=3), pin=False):
            seen.append(int(batch["input_ids"][0, 0]))
    assert seen == [0, 1, 2]


def test_leaving_an_endless_source_early_stops_its_thread():
    def endless():
        while True:
            yield {"input_ids": torch.zeros(1)}

    batches = prefetched(endless(), pin=False)
    next(batches)
    assert prefetch_threads()
    batches.close()
    deadline = time.monotonic() + 5
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not prefetch_threads()
