"""Seq2seq (T5, BART) examples: the encoder reads the source, the labels are the target's token ids
(the model builds its decoder inputs by shifting them right)."""

from __future__ import annotations

from service.dataset import Columns
from service.dataset.columns import ColumnMap, texts_of
from worker.data.encoding import Encoded, encode_truncating


def seq2seq_examples(tokenizer, columns: Columns, mapping: ColumnMap, max_len: int) -> Encoded:
    sources, targets = texts_of(columns, mapping.roles["source"]), texts_of(columns, mapping.roles["target"])
    examples, cut_sources = encode_truncating(tokenizer, sources, None, max_len)
    target_ids, cut_targets = encode_truncating(tokenizer, targets, None, max_len)
    for example, target in zip(examples, target_ids):
        example.pop("token_type_ids", None)
        example["labels"] = target["input_ids"]
    return Encoded(examples, truncated=len(set(cut_sources) | set(cut_targets)))
