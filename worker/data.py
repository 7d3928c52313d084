"""Datasets for a job: pick the columns, tokenize, batch, evaluate (rows come from service.datafiles).

Errors are DataError with a message that says what to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from service.datafiles import Columns, DataError, n_rows, read_splits
from service.jobspec import JobSpec

TEXT_NAMES = ("text", "sentence", "content", "review", "document", "prompt", "input", "question")
# (first, second) names of paired-text datasets, tried before the single-text names.
PAIR_NAMES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
              ("question", "sentence"), ("text", "text_pair"))
LABEL_NAMES = ("label", "labels", "target", "class", "category")
IGNORE_INDEX = -100  # positions the causal LM loss skips (padding)


@dataclass
class PreparedData:
    train: list[dict[str, list[int] | int]]
    validation: list[dict[str, list[int] | int]]
    num_labels: int | None           # classification only
    label_names: list[str] | None    # id → name, when the labels were strings
    text_columns: tuple[str, ...]


# -- columns ---------------------------------------------------------------------------------------

def pick_text_columns(spec: JobSpec, columns: Columns) -> tuple[str, ...]:
    ds, names = spec.dataset, list(columns)
    if ds.text_column:
        _require(ds.text_column, names, "text_column")
        if ds.text_pair_column:
            _require(ds.text_pair_column, names, "text_pair_column")
            return ds.text_column, ds.text_pair_column
        return (ds.text_column,)
    if spec.task == "sequence_classification":
        for first, second in PAIR_NAMES:
            if first in names and second in names:
                return first, second
    for name in TEXT_NAMES:
        if name in names:
            return (name,)
    label = pick_label_column(spec, columns, required=False)
    strings = [n for n in names if n != label and all(isinstance(v, str) for v in columns[n][:100])]
    if len(strings) == 1:
        return (strings[0],)
    raise DataError(f"dataset: cannot tell which column holds the text (columns: {', '.join(names)}); "
                    "set dataset.text_column")


def pick_label_column(spec: JobSpec, columns: Columns, required: bool = True) -> str | None:
    names = list(columns)
    if spec.dataset.label_column:
        _require(spec.dataset.label_column, names, "label_column")
        return spec.dataset.label_column
    for name in LABEL_NAMES:
        if name in names:
            return name
    if required:
        raise DataError(f"dataset: cannot tell which column holds the label (columns: {', '.join(names)}); "
                        "set dataset.label_column")
    return None


def _require(name: str, names: list[str], field: str) -> None:
    if name not in names:
        raise DataError(f"dataset.{field}: no column {name!r} (columns: {', '.join(names)})")


def label_map(values: list) -> tuple[list[str] | None, int]:
    """(names or None, num_labels). Integers (also as digit strings) are used as they are; other strings
    become ids in sorted order."""
    if any(v is None or v == "" for v in values):
        raise DataError("dataset: some rows have no label; remove them or fill the label column")
    if all(isinstance(v, bool) or isinstance(v, int) or (isinstance(v, str) and v.lstrip("-").isdigit())
           for v in values):
        ints = [int(v) for v in values]
        if min(ints) < 0:
            raise DataError(f"dataset: label {min(ints)} is negative (an unlabelled test split?); "
                            "use a labelled split or file")
        return None, max(ints) + 1
    if all(isinstance(v, str) for v in values):
        return sorted(set(values)), len(set(values))
    raise DataError("dataset: labels must be integers or strings (regression labels are not supported); "
                    "check dataset.label_column")


def encode_labels(values: list, names: list[str] | None, num_labels: int) -> list[int]:
    if names is None:
        ids = [int(v) for v in values]
        if ids and max(ids) >= num_labels:
            raise DataError(f"dataset: validation label {max(ids)} never occurs in training "
                            f"(labels 0..{num_labels - 1}); check the validation set")
        return ids
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise DataError(f"dataset: validation labels {unknown[:5]} never occur in training; check the validation set")
    return [index[v] for v in values]


# -- tokenizing ------------------------------------------------------------------------------------

def _texts(columns: Columns, name: str) -> list[str]:
    values = columns[name]
    if not all(isinstance(v, str) for v in values):
        raise DataError(f"dataset: column {name!r} must hold text in every row; fix the rows "
                        "or choose another column")
    return values


def tokenize(tokenizer, columns: Columns, text_columns: tuple[str, ...], max_len: int) -> list[dict]:
    texts = [_texts(columns, name) for name in text_columns]
    encoded = tokenizer(*texts, truncation=True, max_length=max_len)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(encoded["input_ids"]))]


def prepare(spec: JobSpec, tokenizer) -> PreparedData:
    train_cols, val_cols = read_splits(spec)
    text_columns = pick_text_columns(spec, train_cols)
    if spec.task == "causal_lm":
        train_cols, val_cols = _drop_blank(train_cols, text_columns[0]), _drop_blank(val_cols, text_columns[0])
    max_len = spec.training.max_seq_len
    train = tokenize(tokenizer, train_cols, text_columns, max_len)
    validation = tokenize(tokenizer, val_cols, text_columns, max_len) if n_rows(val_cols) else []
    if spec.task == "causal_lm":
        train, validation = _lm_examples(train), _lm_examples(validation)
        if not train:
            raise DataError(f"dataset: column {text_columns[0]!r} has no non-empty text")
        return PreparedData(train, validation, None, None, text_columns)
    label = pick_label_column(spec, train_cols)
    names, num_labels = label_map(train_cols[label])
    if num_labels < 2:
        raise DataError(f"dataset: column {label!r} has a single class; classification needs at least two")
    for examples, cols in ((train, train_cols), (validation, val_cols)):
        if examples:
            for example, y in zip(examples, encode_labels(cols[label], names, num_labels)):
                example["labels"] = y
    return PreparedData(train, validation, num_labels, names, text_columns)


def _drop_blank(columns: Columns, text_column: str) -> Columns:
    keep = [i for i, text in enumerate(columns.get(text_column, [])) if not isinstance(text, str) or text.strip()]
    return {name: [values[i] for i in keep] for name, values in columns.items()}


def _lm_examples(examples: list[dict]) -> list[dict]:
    return [{**e, "labels": list(e["input_ids"])} for e in examples]


# -- batches and evaluation ------------------------------------------------------------------------

def make_collate(pad_token_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """Pads each batch to its own longest example (dynamic padding)."""
    pads = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        batch = {}
        for key in examples[0]:
            if isinstance(examples[0][key], int):
                batch[key] = torch.tensor([e[key] for e in examples])
            else:
                batch[key] = torch.tensor([e[key] + [pads[key]] * (width - len(e[key])) for e in examples])
        return batch

    return collate


def make_eval_fn(task: str, validation: list[dict], collate: Callable, batch_size: int
                 ) -> Callable[[nn.Module], dict[str, float]] | None:
    """accuracy + loss for classification, loss + perplexity for causal LM; None without validation data."""
    if not validation:
        return None
    # Similar lengths together: less padding, same result.
    batches = [collate(chunk) for chunk in _chunks(sorted(validation, key=lambda e: len(e["input_ids"])),
                                                   batch_size)]

    def eval_fn(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        loss_sum, weight, correct = 0.0, 0, 0
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            if task == "causal_lm":
                n_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                loss_sum, weight = loss_sum + out.loss.item() * n_tokens, weight + n_tokens
            else:
                n = batch["labels"].shape[0]
                loss_sum, weight = loss_sum + out.loss.item() * n, weight + n
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
        loss = loss_sum / max(1, weight)
        if task == "causal_lm":
            return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
        return {"loss": loss, "accuracy": correct / max(1, weight)}

    return eval_fn


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
