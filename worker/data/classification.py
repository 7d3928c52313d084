"""Sequence classification and regression examples: single or paired text, with the labels' ids or scores
(service.dataset.labels tells which)."""

from __future__ import annotations

from service.dataset import Columns
from service.dataset.columns import ColumnMap, texts_of
from service.dataset.labels import Labels
from worker.data.encoding import Encoded, encode_truncating


def classification_examples(tokenizer, columns: Columns, mapping: ColumnMap, labels: Labels,
                            max_len: int, where: str) -> Encoded:
    first = texts_of(columns, mapping.roles["text"])
    second = texts_of(columns, mapping.roles["text_pair"]) if "text_pair" in mapping.roles else None
    examples, truncated = encode_truncating(tokenizer, first, second, max_len)
    for example, y in zip(examples, labels.encode(columns[mapping.roles["label"]], where)):
        example["labels"] = y
    return Encoded(examples, len(truncated))
