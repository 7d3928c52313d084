"""Evaluation scores without scikit-learn, scipy or rouge-score: accuracy, macro F1 and Matthews
correlation for classes; Pearson and Spearman correlation for regression; ROUGE for generated text."""

from __future__ import annotations

import re
from collections import Counter

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


def rouge(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 over the pairs (Lin 2004), each in [0, 1]."""
    totals = Counter()
    for reference, prediction in zip(references, predictions, strict=True):
        ref, pred = words(reference), words(prediction)
        totals["rouge1"] += _f1(_ngram_overlap(ref, pred, 1), len(ref), len(pred))
        totals["rouge2"] += _f1(_ngram_overlap(ref, pred, 2), max(0, len(ref) - 1), max(0, len(pred) - 1))
        totals["rougeL"] += _f1(lcs_length(ref, pred), len(ref), len(pred))
    n = max(1, len(references))
    return {name: totals[name] / n for name in ("rouge1", "rouge2", "rougeL")}


def words(text: str) -> list[str]:
    """Lowercase runs of letters and digits, the unit rouge-score's default tokenizer compares (that one
    also drops non-ASCII letters; keeping them lets other scripts score too)."""
    return re.findall(r"[^\W_]+", text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence, by dynamic programming over one row (O(len(a)·len(b)) time)."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _ngram_overlap(ref: list[str], pred: list[str], n: int) -> int:
    """Matched n-grams, each counted at most as often as it occurs on both sides (clipped counts)."""
    return sum((_ngrams(ref, n) & _ngrams(pred, n)).values())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n))))


def _f1(matches: int, n_reference: int, n_predicted: int) -> float:
    """F1 of precision matches/n_predicted and recall matches/n_reference; 0 with nothing matched
    (an empty side included)."""
    return 2 * matches / (n_reference + n_predicted) if matches else 0.0
