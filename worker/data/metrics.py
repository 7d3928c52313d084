"""Evaluation scores in numpy (no scikit-learn or scipy needed): accuracy, macro F1 and Matthews
correlation for classes; Pearson and Spearman correlation for regression."""

from __future__ import annotations

import numpy as np


def confusion(gold: np.ndarray, pred: np.ndarray, num_labels: int) -> np.ndarray:
    """counts[true class, predicted class]"""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (gold, pred), 1)
    return counts


def accuracy(gold: np.ndarray, pred: np.ndarray) -> float:
    return float((gold == pred).mean())


def macro_f1(gold: np.ndarray, pred: np.ndarray, num_labels: int) -> float:
    """Mean F1 over the classes that occur in gold or pred (a class absent from both says nothing)."""
    c = confusion(gold, pred, num_labels)
    tp, actual, predicted = np.diag(c), c.sum(1), c.sum(0)
    present = (actual + predicted) > 0
    f1 = 2 * tp[present] / (actual[present] + predicted[present])
    return float(f1.mean())


def matthews(gold: np.ndarray, pred: np.ndarray, num_labels: int) -> float:
    """Matthews correlation, multi-class form (Gorodkin 2004); 0 when either side holds a single class."""
    c = confusion(gold, pred, num_labels).astype(np.float64)
    t, p, correct, n = c.sum(1), c.sum(0), np.trace(c), c.sum()
    denominator = np.sqrt(n * n - p @ p) * np.sqrt(n * n - t @ t)
    return float((correct * n - t @ p) / denominator) if denominator > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (undefined)."""
    x, y = x - x.mean(), y - y.mean()
    scale = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / scale) if scale > 0 else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(ranks(x), ranks(y))


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as scipy.stats.rankdata does)."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(x)]
    out = np.empty(len(x))
    out[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return out
