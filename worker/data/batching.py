"""Batches: dynamic padding, and training batches grouped by length (less padding per step)."""

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
    builds the 2-D attention mask from the input lengths. Packed rows get the same mask (it counts their
    real tokens): their position_ids keep attention inside each example once adalora_core.model_inputs
    hands them to the model without it. Pad positions are 0, so each pad token is an example of its own."""
    pads = {"input_ids": pad_token_id, "token_type_ids": 0, "labels": IGNORE_INDEX, "position_ids": 0}

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


def pack_examples(examples: list[dict], max_len: int) -> list[dict]:
    """Consecutive examples joined into rows of at most `max_len` tokens, in order. Each row's position_ids
    restart at 0 where an example starts (from them the model keeps attention inside each example), and an
    example's first label is ignored: it would be predicted from the previous example's last token."""
    rows: list[dict] = []
    for example in examples:
        ids, labels = example["input_ids"], example["labels"]
        row = rows[-1] if rows and len(rows[-1]["input_ids"]) + len(ids) <= max_len else None
        if row is None:
            rows.append({"input_ids": list(ids), "labels": list(labels), "position_ids": list(range(len(ids)))})
            continue
        row["input_ids"] += ids
        row["labels"] += [IGNORE_INDEX, *labels[1:]]
        row["position_ids"] += range(len(ids))
    return rows


def length_grouped_order(lengths: list[int], batch_size: int, seed: int) -> Callable[[int], list[list[int]]]:
    """adalora_core.train's batch_order: epoch e's batches (row indices) hold rows of similar length, in a
    random order seeded by (seed, e), so a resumed run sees the same batches. Rows that do not fill a last
    batch are left out of that epoch, as the loop's default order does."""
    window = batch_size * GROUP_WINDOW_BATCHES

    def batches_of(epoch: int) -> list[list[int]]:
        rng = random.Random(seed * 100_003 + epoch)
        rows = list(range(len(lengths)))
        rng.shuffle(rows)
        rows = rows[:len(rows) - len(rows) % batch_size]
        batches = []
        for start in range(0, len(rows), window):
            ordered = sorted(rows[start:start + window], key=lengths.__getitem__)
            batches += [ordered[j:j + batch_size] for j in range(0, len(ordered), batch_size)]
        rng.shuffle(batches)  # short and long batches interleave across the epoch
        return batches

    return batches_of
