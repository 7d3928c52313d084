"""From a job spec to tokenised training and validation examples, through the on-disk cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.dataset import Columns, DataError
from service.dataset.columns import ColumnMap, map_columns
from service.dataset.labels import Labels, infer_labels
from service.dataset.packing import require_vocabulary
from service.dataset.readers import n_rows, read_splits
from service.jobspec import JobSpec
from worker.data import cache
from worker.data.batching import pack_examples
from worker.data.causal_lm import causal_lm_examples
from worker.data.classification import classification_examples
from worker.data.encoding import Encoded
from worker.data.seq2seq import seq2seq_examples


@dataclass
class PreparedData:
    train: list[dict]
    validation: list[dict]
    kind: str                        # classification | regression | causal_lm | seq2seq
    columns: str                     # which columns fed which role, for the job's events
    num_labels: int | None = None    # classification and regression (1) only
    label_names: list[str] | None = None  # id -> name, when the labels were strings
    rows: int = 0                    # rows read (training + validation)
    truncated: int = 0               # rows cut to max_seq_len
    dropped: int = 0                 # rows with nothing left to learn from (blank, or cut away)
    from_cache: bool = False
    packed_from: int | None = None   # training examples before training.packing joined them into rows

    def model_config_overrides(self) -> dict:
        """What the exported config.json must say about the labels."""
        if self.kind == "regression":
            return {"problem_type": "regression"}
        if self.kind != "classification":
            return {}
        overrides = {"problem_type": "single_label_classification"}
        if self.label_names:
            overrides |= {"id2label": dict(enumerate(self.label_names)),
                          "label2id": {n: i for i, n in enumerate(self.label_names)}}
        return overrides


def prepare(spec: JobSpec, tokenizer, cache_dir: Path | None = None) -> PreparedData:
    """Tokenised examples for the job; with `cache_dir`, reused from an earlier job with the same key. Packing
    (training.packing) comes after the cache: the cached examples are the same either way."""
    data = _tokenised(spec, tokenizer, cache_dir)
    if spec.training.packing and spec.task == "causal_lm":
        data.packed_from = len(data.train)
        data.train = pack_examples(data.train, spec.training.max_seq_len)
    return data


def _tokenised(spec: JobSpec, tokenizer, cache_dir: Path | None) -> PreparedData:
    require_vocabulary(tokenizer, spec.model)
    train_cols, val_cols = read_splits(spec)
    mapping = map_columns(spec, train_cols)
    if n_rows(val_cols):
        _require_same_columns(val_cols, mapping)
    path = None
    if cache_dir is not None:
        key = cache.cache_key(task=spec.task, roles=mapping.roles, layout=mapping.layout,
                              label_type=spec.dataset.label_type, max_seq_len=spec.training.max_seq_len,
                              tokenizer=cache.tokenizer_digest(tokenizer),
                              train=cache.data_digest(train_cols, mapping.names()),
                              validation=cache.data_digest(val_cols, mapping.names()) if n_rows(val_cols) else None)
        path = cache_dir / f"{key}.npz"
        if (hit := cache.load(path)) is not None:
            splits, meta = hit
            return PreparedData(splits["train"], splits["validation"], **meta, from_cache=True)
    data = _tokenise(spec, tokenizer, mapping, train_cols, val_cols)
    if path is not None:
        meta = {k: v for k, v in vars(data).items() if k not in ("train", "validation", "from_cache", "packed_from")}
        cache.save(path, {"train": data.train, "validation": data.validation}, meta)
    return data


def _tokenise(spec: JobSpec, tokenizer, mapping: ColumnMap, train_cols: Columns, val_cols: Columns) -> PreparedData:
    labels = None
    if spec.task == "sequence_classification":
        values = train_cols[mapping.roles["label"]]
        labels = infer_labels(values, spec.dataset.label_type)
        if not labels.regression and len(set(map(str, values))) < 2:
            raise DataError(f"dataset: column {mapping.roles['label']!r} has a single class; "
                            "classification needs at least two")
    train = _examples(spec, tokenizer, mapping, labels, train_cols, "training")
    validation = _examples(spec, tokenizer, mapping, labels, val_cols, "validation") if n_rows(val_cols) else Encoded()
    if not train.examples:
        raise DataError(f"dataset: no usable training rows ({mapping.describe()}); "
                        "check that the columns hold text")
    kind = spec.task if labels is None else "regression" if labels.regression else "classification"
    return PreparedData(train.examples, validation.examples, kind, mapping.describe(),
                        num_labels=labels.num_labels if labels else None, label_names=labels.names if labels else None,
                        rows=n_rows(train_cols) + n_rows(val_cols), truncated=train.truncated + validation.truncated,
                        dropped=train.dropped + validation.dropped)


def _examples(spec: JobSpec, tokenizer, mapping: ColumnMap, labels: Labels | None, columns: Columns,
              where: str) -> Encoded:
    max_len = spec.training.max_seq_len
    if spec.task == "sequence_classification":
        return classification_examples(tokenizer, columns, mapping, labels, max_len, where)
    if spec.task == "causal_lm":
        return causal_lm_examples(tokenizer, columns, mapping, max_len)
    return seq2seq_examples(tokenizer, columns, mapping, max_len)


def _require_same_columns(columns: Columns, mapping: ColumnMap) -> None:
    missing = [name for name in mapping.names() if name not in columns]
    if missing:
        raise DataError(f"dataset: the validation set lacks the column(s) {', '.join(map(repr, missing))} "
                        f"that training uses (it has: {', '.join(columns)})")
