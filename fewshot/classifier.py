"""PrototypeClassifier: nearest-prototype classification in memory, scikit-learn style.

Same maths as the index (:mod:`fewshot.prototypes`), for embeddings you already
hold: ``fit(X, y)`` computes one prototype per class, ``predict`` picks the
nearest, ``predict_proba`` is the softmax of the scores over a temperature.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fewshot.prototypes import check_metric, class_prototypes, prototype_scores, softmax


class PrototypeClassifier:
    """Nearest class prototype (mean embedding) classifier.

    Parameters
    ----------
    metric : "cosine" (default; embeddings L2-normalised) or "l2".
    temperature : softmax temperature for ``predict_proba`` (> 0).
    """

    def __init__(self, metric: str = "cosine", temperature: float = 0.1):
        self.metric = metric
        self.temperature = temperature

    def _check_params(self) -> None:
        check_metric(self.metric)
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {self.temperature!r}")

    @staticmethod
    def _check_X(X, dim: int | None = None) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array [n_samples, n_features], got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or inf")
        if dim is not None and X.shape[1] != dim:
            raise ValueError(f"X has {X.shape[1]} features, but the classifier was fitted with {dim}")
        return X

    def fit(self, X, y: Sequence) -> "PrototypeClassifier":
        self._check_params()
        X = self._check_X(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have one label per row of X ({X.shape[0]}), got shape {y.shape}")
        classes, self.prototypes_ = class_prototypes(X, y, self.metric)
        self.classes_ = np.asarray(classes)
        self.n_features_in_ = X.shape[1]
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "prototypes_"):
            raise RuntimeError("this PrototypeClassifier is not fitted yet; call fit(X, y) first")

    def decision_function(self, X) -> np.ndarray:
        """Scores [n_samples, n_classes]: cosine similarity or minus squared L2 distance."""
        self._fitted()
        return prototype_scores(self._check_X(X, self.n_features_in_), self.prototypes_, self.metric)

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[scores.argmax(axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X), self.temperature)

    def score(self, X, y) -> float:
        """Mean accuracy on (X, y)."""
        return float((self.predict(X) == np.asarray(y)).mean())

    def get_params(self, deep: bool = True) -> dict:
        return {"metric": self.metric, "temperature": self.temperature}

    def set_params(self, **params) -> "PrototypeClassifier":
        for k, v in params.items():
            if k not in ("metric", "temperature"):
                raise ValueError(f"unknown parameter {k!r}")
            setattr(self, k, v)
        return self
