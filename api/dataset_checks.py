"""Checks on a job's uploaded files before it is queued, from what the upload recorded (columns, their
types, NaN and missing counts, distinct values, row count): no file is read, no torch is imported.

What only the data can tell (a missing column, a single class, labels seen only in validation, NaN or
infinite scores, fewer rows than a batch) is refused here with a 422 instead of failing the job later.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import SpecError
from service.dataset.columns import LABEL_NAMES, default_label_column
from service.dataset.readers import held_out_count
from service.files import tenant_file
from service.jobspec import FileDataset, JobSpec
from service.tables import File


def check_file_dataset(session: Session, tenant_id: int, spec: JobSpec) -> None:
    ds = spec.dataset
    if not isinstance(ds, FileDataset):
        return
    train = _owned(session, tenant_id, ds.file_id, "dataset.file_id")
    validation = (_owned(session, tenant_id, ds.validation_file_id, "dataset.validation_file_id")
                  if ds.validation_file_id else None)
    for file in (train, validation):
        if file is not None:
            _mapped_columns_exist(ds, file)
    if spec.task == "sequence_classification":
        _labels_usable(ds, train, validation)
    if spec.task != "causal_lm":  # causal LM text is packed into blocks: rows are not examples there
        _enough_rows_for_a_batch(spec, train)


def _owned(session: Session, tenant_id: int, file_id: str, field: str) -> File:
    file = tenant_file(session, tenant_id, file_id)
    if file is None:
        raise SpecError(field, f"no file {file_id}; upload the data with POST /v1/files (GET /v1/files lists "
                               "your files)")
    return file


def _names(file: File) -> list[str]:
    return [column["name"] for column in file.columns]


def _missing(name: str, file: File) -> str:
    return f"column {name!r} missing from {file.filename} ({file.id}); {_found(file)}"


def _found(file: File) -> str:
    found = _names(file)
    message = f"found: {', '.join(found)}"
    if len(found) == 1 and any(sep in found[0] for sep in ";|\t,"):
        message += (f". The header {found[0]!r} looks like several names joined by another delimiter: "
                    "upload the file as comma-separated CSV or tab-separated TSV")
    return message


def _mapped_columns_exist(ds: FileDataset, file: File) -> None:
    for field in type(ds).model_fields:
        name = getattr(ds, field)
        if field.endswith("_column") and name is not None and name not in _names(file):
            raise SpecError(f"dataset.{field}", _missing(name, file))


def label_column(ds: FileDataset, file: File) -> str:
    if ds.label_column:
        return ds.label_column
    found = default_label_column(_names(file))
    if found is None:
        raise SpecError("dataset.label_column", f"no label column in {file.filename} ({file.id}): none of "
                                                f"{', '.join(LABEL_NAMES)}; {_found(file)}; set "
                                                "dataset.label_column")
    return found


def _column(file: File, name: str) -> dict:
    return next(column for column in file.columns if column["name"] == name)


def _labels_usable(ds: FileDataset, train: File, validation: File | None) -> None:
    name = label_column(ds, train)
    if validation is not None and name not in _names(validation):
        raise SpecError("dataset.validation_file_id", _missing(name, validation))
    _every_row_labelled(train, name, "dataset.label_column")
    if validation is not None:
        _every_row_labelled(validation, name, "dataset.validation_file_id")
    stats = _column(train, name)
    if _is_regression(ds.label_type, stats["type"]):
        if stats["type"] not in ("int", "float"):
            raise SpecError("dataset.label_type", f"regression needs numbers, but {name!r} holds "
                                                  f"{stats['type']} values; fix the column or use label_type classes")
        return
    classes = stats["values"]
    if classes is not None and len(classes) < 2:
        raise SpecError("dataset.label_column", f"{name!r} has a single class ({classes[0]!r}) in {train.filename}; "
                                                "classification needs at least two: add rows of other classes")
    if validation is not None and classes is not None:
        val_stats = _column(validation, name)
        unseen = sorted(set(val_stats["values"] or []) - set(classes))
        if unseen:
            raise SpecError("dataset.validation_file_id",
                            f"labels {unseen[:5]} occur in {validation.filename} but never in training "
                            f"({train.filename} has {', '.join(classes)}); the model cannot predict them: fix the "
                            "labels or add training rows of those classes")


def _every_row_labelled(file: File, name: str, field: str) -> None:
    """No missing, NaN or infinite label: the worker refuses each of them (infinities were not counted in
    files uploaded before, hence the default)."""
    stats = _column(file, name)
    for count, what in ((stats["nulls"], "no value"), (stats["nans"], "NaN"),
                        (stats.get("infs", 0), "Infinity or -Infinity")):
        if count:
            raise SpecError(field, f"{count} rows of {file.filename} have {what} in {name!r}; every row needs "
                                   "a finite score or a label: remove those rows or fix their labels")


def _is_regression(label_type: str, column_type: str) -> bool:
    return label_type == "regression" or (label_type == "auto" and column_type == "float")


def _enough_rows_for_a_batch(spec: JobSpec, train: File) -> None:
    ds, batch = spec.dataset, spec.training.batch_size
    held_out = 0 if ds.validation_file_id else held_out_count(train.row_count, ds.validation_split)
    rows = train.row_count - held_out
    if rows < batch:
        after = f" after holding out {held_out} for validation" if held_out else ""
        raise SpecError("training.batch_size", f"{train.filename} has {rows} training rows{after}, fewer than "
                                               f"batch_size {batch}: lower training.batch_size or upload more rows")
