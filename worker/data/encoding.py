"""Tokenising with truncation that is counted, shared by the task kinds.

Examples are plain dicts of python lists and numbers: `input_ids` (and `token_type_ids` where the
tokenizer makes them), `labels`; the attention mask is rebuilt from the lengths when batching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100  # label positions the loss skips: padding, prompts, non-assistant chat turns


@dataclass
class Encoded:
    examples: list[dict] = field(default_factory=list)
    truncated: int = 0  # rows cut to max_seq_len
    dropped: int = 0    # rows left with nothing to learn from after truncation (or empty)


def encode_truncating(tokenizer, first: list[str], second: list[str] | None, max_len: int
                      ) -> tuple[list[dict], list[int]]:
    """Token ids of each row (or pair of texts), cut to `max_len` with the tokenizer's own rule (it keeps
    the special tokens); returns the examples and the indices of the rows that needed cutting."""
    full = tokenizer(first, second, truncation=False, verbose=False)
    long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_len]
    if long:  # re-encode only the long rows: the tokenizer knows which tokens it must keep
        cut = tokenizer([first[i] for i in long], [second[i] for i in long] if second else None,
                        truncation=True, max_length=max_len, verbose=False)
        for key in full:
            for j, i in enumerate(long):
                full[key][i] = cut[key][j]
    keys = [k for k in ("input_ids", "token_type_ids") if k in full]
    return [{k: full[k][i] for k in keys} for i in range(len(first))], long
