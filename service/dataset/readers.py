"""Reading a job's dataset into plain columns (dict of lists), without torch: the worker tokenizes what
this returns, and the API's dry run counts training rows with the same rules.

Server files and uploads are parsed by the readers that check an upload (service.dataset.formats), so both
are read under the same rules; hub datasets through `datasets.load_dataset`, imported only when a hub
dataset is used. Uploads were checked row by row when they arrived; an uploaded file's row count comes
from its File row.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

from service.dataset import Columns, DataError
from service.dataset.formats import parquet_batches, text_rows
from service.files import local_copy, stored_file
from service.jobspec import SERVER_SUFFIX_FORMATS, FileDataset, HubDataset, JobSpec, ServerDataset
from service.redaction import first_line
from service.settings import get_settings

PLACED = re.compile(r"^(line|item) \d+")  # a parse error that names its place in the file


def read_file(path: Path, fmt: str, column_names: list[str] | None = None) -> Columns:
    """Rows of a csv/tsv (header row, or `column_names` when it has none), jsonl, json or parquet file,
    as columns. A json file may also hold {"data": [records]} or an object of column lists."""
    try:
        if fmt == "parquet":
            return read_parquet(path)
        with open(path, "rb") as f:
            rows = [row for _, row in text_rows(f, fmt, get_settings().max_line_bytes, column_names,
                                                json_columns=True)]
    except DataError as e:
        where = f"{path.name}, " if PLACED.match(str(e)) else ""
        raise DataError(f"dataset file {path.name} is not valid {fmt}: {where}{e}") from None
    names = list(dict.fromkeys(name for row in rows for name in row))  # a field first seen late counts too
    return {name: [row.get(name) for row in rows] for name in names}


def read_parquet(path: Path) -> Columns:
    columns: Columns = {}
    for batch in parquet_batches(path):
        for name, values in batch.to_pydict().items():
            columns.setdefault(name, []).extend(values)
    return columns


def read_hub(spec: HubDataset, split: str) -> Columns:
    import datasets

    try:
        dataset = datasets.load_dataset(spec.path, spec.name, split=split, revision=spec.revision)
    except Exception as e:  # the hub raises many types; all mean "cannot get this dataset"
        raise DataError(f"hub dataset {spec.path!r} (name={spec.name!r}, split={split!r}) could not be loaded: "
                        f"{first_line(e)}. Check dataset.path/name/split, and that this server can reach "
                        "the hub or has the dataset cached") from e
    return dataset.to_dict()


def read_splits(spec: JobSpec) -> tuple[Columns, Columns]:
    """(train, validation) columns: the named validation set, or a seeded hold-out of the training rows."""
    ds = spec.dataset
    if isinstance(ds, ServerDataset):
        assert ds.format is not None, "ServerDataset._infer_format sets it"
        train = read_file(ds.resolved_path(), ds.format, ds.column_names)
        validation_path = ds.resolved_validation_path()
        validation = (read_file(validation_path, _format_of(validation_path, ds.format), ds.column_names)
                      if validation_path else None)
    elif isinstance(ds, FileDataset):
        train = read_upload(ds.file_id)
        validation = read_upload(ds.validation_file_id) if ds.validation_file_id else None
    else:
        train = read_hub(ds, ds.split)
        validation = read_hub(ds, ds.validation_name) if ds.validation_name else None
    if validation is None:
        return hold_out(train, ds.validation_split, spec.training.seed)
    return train, validation


def read_upload(file_id: str) -> Columns:
    file = stored_file(file_id)
    return read_file(local_copy(file), file.format)


def _format_of(path: Path, fallback: str) -> str:
    return SERVER_SUFFIX_FORMATS.get(path.suffix.lower(), fallback)


def held_out_count(n_rows: int, fraction: float | None) -> int:
    return max(1, math.floor(n_rows * fraction)) if fraction else 0


def hold_out(columns: Columns, fraction: float | None, seed: int) -> tuple[Columns, Columns]:
    """A seeded random split: (train, validation). A fraction of 0 or None holds nothing out."""
    order = list(range(n_rows(columns)))
    random.Random(seed).shuffle(order)
    n_val = held_out_count(len(order), fraction)
    pick = lambda idx: {name: [values[i] for i in idx] for name, values in columns.items()}  # noqa: E731
    return pick(sorted(order[n_val:])), pick(sorted(order[:n_val]))


def n_rows(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def count_training_rows(spec: JobSpec) -> int:
    """How many rows the run trains on (after any hold-out), for planning its length; reads the file
    or, for a hub dataset, the split sizes in its metadata."""
    ds = spec.dataset
    if isinstance(ds, ServerDataset):
        assert ds.format is not None, "ServerDataset._infer_format sets it"
        total = n_rows(read_file(ds.resolved_path(), ds.format, ds.column_names))
        named_validation = ds.validation_path
    elif isinstance(ds, FileDataset):
        total, named_validation = stored_file(ds.file_id).row_count, ds.validation_file_id
    else:
        total, named_validation = _hub_split_size(ds), ds.validation_name
    return total if named_validation else total - held_out_count(total, ds.validation_split)


def _hub_split_size(spec: HubDataset) -> int:
    import datasets

    try:
        info = datasets.load_dataset_builder(spec.path, spec.name, revision=spec.revision).info
        return info.splits[spec.split].num_examples
    except Exception as e:
        raise DataError(f"hub dataset {spec.path!r} (name={spec.name!r}): no size for split {spec.split!r} "
                        f"({first_line(e)}); set training.max_steps instead of epochs") from e
