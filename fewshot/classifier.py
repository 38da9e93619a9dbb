"""PrototypeClassifier: nearest-prototype classification in memory, a scikit-learn estimator.

Same maths as the index (:mod:`fewshot.prototypes`), for embeddings you already
hold: ``fit(X, y)`` computes one prototype per class, ``predict`` picks the
nearest, ``predict_proba`` is the softmax of the scores over a temperature.

It subclasses scikit-learn's ``BaseEstimator``/``ClassifierMixin`` so that it
works in ``make_pipeline``, ``cross_val_score`` and ``GridSearchCV`` (they read
``__sklearn_tags__``), and passes ``check_estimator``. Labels are kept as the
objects they were: ``1`` and ``'1'`` are two classes, and ``predict`` returns
the label objects given to ``fit``.
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import validate_data

from fewshot.prototypes import METRICS, class_prototypes, prototype_scores, softmax


class ClassifierNotFittedError(NotFittedError, RuntimeError):
    """``predict`` before ``fit``: scikit-learn's NotFittedError, and a RuntimeError as fewshot raised before."""


def _label_key(v) -> tuple:
    """Identity of a label: its type and value, so that ``1`` and ``'1'`` stay two classes.

    numpy scalars count as their Python type (``np.int64(1)`` is ``1``), so an
    array of ints and a list of ints give the same classes.
    """
    if isinstance(v, np.generic):
        v = v.item()
    return (type(v).__name__, v)


def _sort_key(v):
    """Classes in sorted order, as scikit-learn keeps them; mixed types grouped by type name."""
    k = _label_key(v)
    return (k[0], k[1]) if isinstance(k[1], (numbers.Real, str)) else (k[0], repr(k[1]))


def _encode_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes_, codes): unique labels (original objects) and each sample's class index."""
    if y.dtype != object:
        classes, codes = np.unique(y, return_inverse=True)
        return classes, codes.reshape(-1)
    for v in y:
        if v is None or (isinstance(v, float) and v != v):
            raise ValueError("y contains None or NaN; every sample needs a label")
    first: dict[tuple, object] = {}
    for v in y:
        first.setdefault(_label_key(v), v)
    ordered = sorted(first.values(), key=_sort_key)
    index = {_label_key(v): i for i, v in enumerate(ordered)}
    classes = np.empty(len(ordered), dtype=object)
    classes[:] = ordered
    return classes, np.fromiter((index[_label_key(v)] for v in y), np.int64, len(y))


class PrototypeClassifier(ClassifierMixin, BaseEstimator):
    """Nearest class prototype (mean embedding) classifier.

    Parameters
    ----------
    metric : "cosine" (default; embeddings L2-normalised) or "l2".
    temperature : softmax temperature for ``predict_proba`` (> 0).

    Attributes
    ----------
    classes_ : the labels seen by ``fit``, sorted, as the objects given (types kept).
    prototypes_ : float32 [n_classes, n_features], one mean embedding per class.
    """

    def __init__(self, metric: str = "cosine", temperature: float = 0.1):
        self.metric = metric
        self.temperature = temperature

    def _check_params(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t < float("inf"):
            raise ValueError(f"temperature must be a number > 0, got {t!r}")

    def fit(self, X, y) -> "PrototypeClassifier":
        """One prototype per class of ``y`` (any hashable labels; None and NaN are refused)."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        if y.dtype != object and y.dtype.kind in "fc" and type_of_target(y) == "continuous":
            raise ValueError("Unknown label type: continuous. PrototypeClassifier needs class labels, "
                             "not continuous values")
        self.classes_, codes = _encode_labels(y)
        _, self.prototypes_ = class_prototypes(X, codes, self.metric)
        return self

    def _scores(self, X) -> np.ndarray:
        if not hasattr(self, "prototypes_"):
            raise ClassifierNotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return prototype_scores(X, self.prototypes_, self.metric)

    def decision_function(self, X) -> np.ndarray:
        """Scores [n_samples, n_classes]: cosine similarity or minus squared L2 distance.

        With two classes, scikit-learn's convention: one score per sample, the
        second class's score minus the first's (> 0 means ``classes_[1]``).
        """
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict(self, X) -> np.ndarray:
        scores = self._scores(X)
        return self.classes_[scores.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self._scores(X), self.temperature)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy on (X, y), comparing label objects (so mixed-type labels work)."""
        y = np.asarray(y, dtype=object).reshape(-1)
        pred = self.predict(X)
        hits = np.fromiter((_label_key(p) == _label_key(t) for p, t in zip(pred, y)), float, len(y))
        return float(np.average(hits, weights=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

