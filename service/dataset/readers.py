"""Reading a job's dataset into plain columns (dict of lists), without torch: the worker tokenizes what
this returns, and the API's dry run counts training rows with the same rules.

Server files and uploads are read with the csv/json modules (Parquet with pyarrow); hub datasets through
`datasets.load_dataset`, imported only when a hub dataset is used. Uploads were checked row by row when they
arrived (service.dataset.formats); an uploaded file's row count comes from its File row.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

from service.dataset import Columns, DataError
from service.files import local_copy, stored_file
from service.jobspec import SERVER_SUFFIX_FORMATS, FileDataset, HubDataset, JobSpec, ServerDataset
from service.redaction import first_line


def read_file(path: Path, fmt: str, column_names: list[str] | None = None) -> Columns:
    """Rows of a csv/tsv (header row, or `column_names` when it has none), jsonl, json or parquet file,
    as columns."""
    if fmt == "parquet":
        return read_parquet(path)
    try:
        if fmt in ("csv", "tsv"):
            with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: skip an Excel byte-order mark
                # TSV corpora (GLUE) use bare quotes inside text: read them literally.
                dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
                rows = list(csv.DictReader(f, fieldnames=column_names, **dialect))
            _check_widths(rows, path)
        elif fmt == "jsonl":
            with open(path, encoding="utf-8-sig") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        else:
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
            rows = loaded if isinstance(loaded, list) else _rows_from_columns(loaded, path)
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise DataError(f"dataset file {path.name} is not valid {fmt}: {e}") from e
    except RecursionError:  # a value nested thousands deep; uploads refuse these when they arrive
        raise DataError(f"dataset file {path.name}: values are nested too deeply to read (lists or objects "
                        "inside each other, thousands of levels); flatten them") from None
    if not rows:
        raise DataError(f"dataset file {path.name} has no rows")
    if not all(isinstance(row, dict) for row in rows):
        raise DataError(f"dataset file {path.name}: every record must be an object with named fields")
    names = list(dict.fromkeys(name for row in rows for name in row))  # a field first seen late counts too
    return {name: [row.get(name) for row in rows] for name in names}


def read_parquet(path: Path) -> Columns:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pydict()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"dataset file {path.name} is not readable Parquet: {first_line(e)}") from e


def _check_widths(rows: list[dict], path: Path) -> None:
    """DictReader puts extra fields under None and fills missing ones with None: both mean a broken row."""
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise DataError(f"dataset file {path.name}, line {number}: {len(row) - (None in row)} columns expected, "
                            "the row has a different number (a tab or comma inside unquoted text, or a file "
                            "without a header row: set dataset.column_names)")


def _rows_from_columns(loaded: object, path: Path) -> list[dict]:
    if isinstance(loaded, dict) and isinstance(loaded.get("data"), list):
        return loaded["data"]
    if isinstance(loaded, dict) and loaded and all(isinstance(v, list) for v in loaded.values()):
        names = list(loaded)
        return [dict(zip(names, values)) for values in zip(*loaded.values())]
    raise DataError(f"dataset file {path.name}: expected a list of records, {{'data': [...]}} or column lists")


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
