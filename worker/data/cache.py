"""Tokenised datasets cached on disk, so a second job on the same data and tokenizer skips tokenising.

The key hashes what the examples depend on: the rows of the chosen columns (after the hold-out split,
so the file's content, the split seed and fraction all count), the tokenizer's full definition, the task,
the column mapping, the label type and max_seq_len. Files are .npz (numpy, loaded without pickle): per
split and key, the concatenated values plus row offsets.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from service.dataset import Columns
from service.scratch import touch

FORMAT_VERSION = 1  # bump when the examples built for the same key change


def data_digest(columns: Columns, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(json.dumps([name, columns[name]], ensure_ascii=False, default=str).encode())
    return digest.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """Vocabulary, merges, normalisation, special tokens and chat template: everything that changes ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Calling the tokenizer with truncation/padding stores those settings in the backend: not part of its identity.
        definition = json.loads(backend.to_str())
        definition["truncation"] = definition["padding"] = None
        definition = json.dumps(definition, sort_keys=True)
    else:
        definition = json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = [type(tokenizer).__name__, definition, str(getattr(tokenizer, "chat_template", None)),
             json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_key(**parts: object) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True).encode()).hexdigest()


def save(path: Path, splits: dict[str, list[dict]], meta: dict) -> None:
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for split, examples in splits.items():
        arrays[f"{split}/count"] = np.array(len(examples))
        for key in (examples[0] if examples else {}):
            values = [e[key] for e in examples]
            if isinstance(values[0], list):
                arrays[f"{split}/{key}/values"] = np.array([x for v in values for x in v], dtype=np.int64)
                arrays[f"{split}/{key}/offsets"] = np.cumsum([0] + [len(v) for v in values])
            else:
                arrays[f"{split}/{key}"] = np.array(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)  # readers see the whole file or none


def load(path: Path) -> tuple[dict[str, list[dict]], dict] | None:
    """(examples per split, meta), or None when nothing usable is cached under this key."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = dict(stored)
    except (OSError, ValueError):  # missing, or cut short by a crash: tokenise again
        return None
    touch(path)  # a hit: evicted last (service/scratch.py bounds the cache)
    meta = json.loads(str(arrays.pop("meta")))
    splits: dict[str, list[dict]] = {}
    for name in [n[:-len("/count")] for n in arrays if n.endswith("/count")]:
        rows = [dict() for _ in range(int(arrays[f"{name}/count"]))]
        for array_name, array in arrays.items():
            split, _, key = array_name.partition("/")
            if split != name or key == "count" or key.endswith("/offsets"):
                continue
            if key.endswith("/values"):
                key = key[:-len("/values")]
                offsets = arrays[f"{name}/{key}/offsets"]
                for i, row in enumerate(rows):
                    row[key] = array[offsets[i]:offsets[i + 1]].tolist()
            else:
                for row, value in zip(rows, array.tolist()):
                    row[key] = value
        splits[name] = rows
    return splits, meta
