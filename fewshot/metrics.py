"""Classification metrics: scikit-learn's, with the conventions fixed in one place.

Few-shot evaluation computes these per episode (over that episode's classes) and
averages them. Conventions are scikit-learn's: rows of the confusion matrix are
true classes, columns predicted ones; a class never predicted has precision 0
(``zero_division=0``, not NaN or a warning), and macro F1 is the mean of the
per-class F1 scores. scikit-learn is imported on first use (it takes a second).

The one confidence-interval convention of the project is :func:`mean_ci95`:
``1.96 * std(ddof=1) / sqrt(n)``, the normal interval of a mean estimated from
a sample of episodes.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _labels(y_true: Sequence, y_pred: Sequence, labels: Sequence | None) -> np.ndarray:
    """The label set (sorted union when None), checked the way our callers need it."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of equal length, got {t.shape} and {p.shape}")
    labs = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels)
    if labs.ndim != 1 or len(labs) == 0:
        raise ValueError("labels must be a non-empty 1-D sequence")
    if len(np.unique(labs)) != len(labs):
        raise ValueError("labels must be unique")
    unknown = np.setdiff1d(np.concatenate([t, p]), labs)
    if len(unknown):
        raise ValueError(f"y_true or y_pred holds a value not in labels: {unknown[0]!r}")
    return labs


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> np.ndarray:
    """Counts [n_labels, n_labels] (int64): entry (i, j) = true ``labels[i]`` predicted as ``labels[j]``."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    labs = _labels(y_true, y_pred, labels)
    return sk_confusion(np.asarray(y_true), np.asarray(y_pred), labels=labs).astype(np.int64)


def precision_recall_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None
                        ) -> tuple[float, float, float]:
    """Macro-averaged (precision, recall, F1) over ``labels`` (each class weighs the same).

    Pass ``labels`` (an episode's classes) so that a class with no query
    predicted for it still counts, with precision 0.
    """
    from sklearn.metrics import precision_recall_fscore_support

    labs = _labels(y_true, y_pred, labels)
    p, r, f, _ = precision_recall_fscore_support(np.asarray(y_true), np.asarray(y_pred), labels=labs,
                                                 average="macro", zero_division=0)
    return float(p), float(r), float(f)


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the normal 95% interval: ``1.96 * std(ddof=1) / sqrt(n)``).

    The sample std (ddof=1), because the episodes are a sample of all possible
    ones; NaN for a single value, whose spread cannot be estimated (JSON output
    writes it as null).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, inf) replaced by None, numpy scalars made Python ones.

    ``json.dumps`` writes NaN as the bare word ``NaN``, which is not JSON; every
    ``--json`` output goes through this so that it parses with any strict parser.
    """
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
