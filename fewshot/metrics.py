"""Classification metrics in plain numpy: confusion matrix and macro precision / recall / F1.

Few-shot evaluation computes these per episode (over that episode's classes) and
averages them, so they must be cheap and must not depend on scikit-learn's
warnings machinery. Conventions follow scikit-learn's: rows of the confusion
matrix are true classes, columns predicted ones; a class that is never predicted
has precision 0 (not NaN), and macro F1 is the mean of the per-class F1 scores.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _encode(y_true: Sequence, y_pred: Sequence, labels: Sequence | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of y_true and y_pred in ``labels`` order (sorted union when None)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of equal length, got {t.shape} and {p.shape}")
    labs = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels)
    if labs.ndim != 1 or len(labs) == 0:
        raise ValueError("labels must be a non-empty 1-D sequence")
    if len(np.unique(labs)) != len(labs):
        raise ValueError("labels must be unique")
    order = np.argsort(labs, kind="stable")
    sorted_labs = labs[order]

    def codes(y: np.ndarray, what: str) -> np.ndarray:
        pos = np.searchsorted(sorted_labs, y)
        pos = np.clip(pos, 0, len(sorted_labs) - 1)
        ok = sorted_labs[pos] == y
        if not ok.all():
            raise ValueError(f"{what} holds a value not in labels: {y[~ok][0]!r}")
        return order[pos]

    return codes(t, "y_true"), codes(p, "y_pred"), len(labs)


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> np.ndarray:
    """Counts [n_labels, n_labels] (int64): entry (i, j) = true ``labels[i]`` predicted as ``labels[j]``."""
    t, p, n = _encode(y_true, y_pred, labels)
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n).astype(np.int64)


def per_class_precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    pred, true = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def precision_recall_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None
                        ) -> tuple[float, float, float]:
    """Macro-averaged (precision, recall, F1) over ``labels`` (each class weighs the same).

    Pass ``labels`` (an episode's classes) so that a class with no query
    predicted for it still counts, with precision 0.
    """
    p, r, f = per_class_precision_recall_f1(confusion_matrix(y_true, y_pred, labels))
    return float(p.mean()), float(r.mean()), float(f.mean())


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the normal 95% interval: 1.96 * std / sqrt(n)).

    The std is the population one (ddof=0), the convention of the few-shot
    literature's episodic confidence intervals; with 1000 episodes the choice
    changes the interval by 0.05%.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), float(1.96 * v.std() / np.sqrt(v.size))
