"""Batches: dynamic padding, and training batches grouped by length.

adalora_core.train shuffles the sequence it is given with its own seeded permutation. To keep rows of
similar length together we hand it whole batches as its "examples" (with TrainArgs.batch_size=1): the
loop then shuffles the order of batches, never their contents.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from worker.data.encoding import IGNORE_INDEX

# Rows are sorted by length within windows of this many batches: batches stay random in what they hold
# (a full sort would put, say, all short negative reviews together) while padding shrinks.
GROUP_WINDOW_BATCHES = 32


def make_collate(pad_token_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """Pads each key of a batch to its own longest row (sources and targets differ in seq2seq), and
    builds the attention mask from the input lengths."""
    pads = {"input_ids": pad_token_id, "token_type_ids": 0, "labels": IGNORE_INDEX}

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in examples[0]:
            values = [e[key] for e in examples]
            if not isinstance(values[0], list):  # a class id or a regression score
                batch[key] = torch.tensor(values)
                continue
            width = max(len(v) for v in values)
            batch[key] = torch.tensor([v + [pads[key]] * (width - len(v)) for v in values])
        lengths = torch.tensor([len(e["input_ids"]) for e in examples])
        batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1]) < lengths[:, None]).long()
        return batch

    return collate


def length_grouped_batches(examples: list[dict], batch_size: int, seed: int) -> list[list[dict]]:
    """Full batches of rows of similar length, in a seeded order; the rows that do not fill a last batch
    are left out (as the loop itself would drop them)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    order = order[:len(order) - len(order) % batch_size]
    window = batch_size * GROUP_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        rows = sorted(order[start:start + window], key=lambda i: len(examples[i]["input_ids"]))
        batches += [[examples[i] for i in rows[j:j + batch_size]] for j in range(0, len(rows), batch_size)]
    return batches


def collate_grouped(collate: Callable[[list[dict]], dict]) -> Callable[[list[list[dict]]], dict]:
    """The loop's collate for pre-grouped batches: it receives a list holding one batch."""
    def collate_one(batches: list[list[dict]]) -> dict[str, torch.Tensor]:
        assert len(batches) == 1, "pre-grouped batches need TrainArgs.batch_size=1"
        return collate(batches[0])

    return collate_one
