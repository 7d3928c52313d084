"""Classes or regression, read from a classification dataset's label values: which, how many classes, and
each row's class id or score. Plain Python: the worker encodes labels with it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.dataset import DataError


@dataclass(frozen=True)
class Labels:
    regression: bool
    num_labels: int              # 1 for regression
    names: list[str] | None      # id -> name when the labels were strings (written to id2label)

    def encode(self, values: list, where: str) -> list[int] | list[float]:
        if self.regression:
            return _numbers(values, where)
        if self.names is None:
            ids = [int(v) for v in _integers(values, where)]
            if ids and max(ids) >= self.num_labels:
                raise DataError(f"dataset: {where} label {max(ids)} never occurs in training "
                                f"(labels 0..{self.num_labels - 1}); check the {where} set")
            return ids
        index = {name: i for i, name in enumerate(self.names)}
        unknown = sorted({str(v) for v in values if str(v) not in index})
        if unknown:
            raise DataError(f"dataset: {where} labels {unknown[:5]} never occur in training; "
                            f"check the {where} set")
        return [index[str(v)] for v in values]


# Integer labels are class ids used as they are, so the head has max id + 1 outputs: a score column of whole
# numbers (1e30 is one) would otherwise build a head that fills the worker's memory.
MAX_CLASS_ID = 10_000


def infer_labels(values: list, label_type: str = "auto") -> Labels:
    """Classes or regression from the training labels. Integers (also as digit strings) are class ids as
    they are; other strings become ids in sorted order; fractional numbers (STS-B scores) mean regression
    unless label_type says classes."""
    missing = next((i for i, v in enumerate(values) if v is None or v == ""), None)
    if missing is not None:
        raise DataError(f"dataset: training row {missing + 1} has no label; remove such rows or fill the label column")
    numbers = _as_numbers(values)
    if label_type == "regression" or (label_type == "auto" and numbers is not None
                                      and any(x != int(x) for x in numbers if math.isfinite(x))):
        _numbers(values, "training")  # names the first row that is not a finite number
        return Labels(regression=True, num_labels=1, names=None)
    if numbers is not None and all(math.isfinite(x) and x == int(x) for x in numbers):
        ids = [int(x) for x in numbers]
        if min(ids) < 0:
            raise DataError(f"dataset: label {min(ids)} is negative (an unlabelled test split?); "
                            "use a labelled split or file")
        if max(ids) >= MAX_CLASS_ID:
            raise DataError(f"dataset: label {max(ids)} would be a class id, which needs a head of {max(ids) + 1:,} "
                            f"outputs (at most {MAX_CLASS_ID:,}); number classes 0..N-1, or set dataset.label_type "
                            "to regression if these are scores")
        return Labels(regression=False, num_labels=max(ids) + 1, names=None)
    names = sorted({str(v) for v in values})
    return Labels(regression=False, num_labels=len(names), names=names)


def label_map(values: list) -> tuple[list[str] | None, int]:
    """(names or None, num_labels) of class labels; kept for callers that only need the class view."""
    labels = infer_labels(values, "classes")
    return labels.names, labels.num_labels


def _as_numbers(values: list) -> list[float] | None:
    """Every label as a float when all are numbers (or numeric strings from csv/tsv), else None."""
    out = []
    for v in values:
        if isinstance(v, bool) or isinstance(v, (int, float)):
            out.append(float(v))
        elif isinstance(v, str):
            try:
                out.append(float(v))
            except ValueError:
                return None
        else:
            return None
    return out


def _numbers(values: list, where: str) -> list[float]:
    numbers = _as_numbers(values)
    if numbers is None:
        raise DataError(f"dataset: {where} labels must all be numbers for regression; "
                        "set dataset.label_type to classes or fix the labels")
    bad = next((i for i, x in enumerate(numbers) if not math.isfinite(x)), None)
    if bad is not None:
        raise DataError(f"dataset: {where} row {bad + 1} has the score {values[bad]!r}; "
                        "regression needs a finite number in every row")
    return numbers


def _integers(values: list, where: str) -> list[float]:
    numbers = _as_numbers(values)
    if numbers is None or any(not math.isfinite(x) or x != int(x) for x in numbers):
        raise DataError(f"dataset: {where} labels must be whole numbers like the training labels")
    return numbers
