"""Nearest-prototype classification: the maths of one-shot and few-shot learning.

A class prototype is the mean of its examples' embeddings (Snell et al., 2017).
With the cosine metric, embeddings are L2-normalised first and the mean is
normalised again, so a one-example class's prototype *is* that example and a
query scores ``cos(query, prototype)`` in [-1, 1]. With L2, the prototype is
the plain mean and the score is minus the squared distance (higher is better).
Probabilities are a softmax over prototype scores divided by a temperature.

Everything here is numpy; the index, ``PrototypeClassifier`` and ``fewshot
evaluate`` all call these functions, so there is one implementation of the maths.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("cosine", "l2")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def class_prototypes(embeddings: np.ndarray, labels: Sequence, metric: str = "cosine"
                     ) -> tuple[list, np.ndarray]:
    """(classes in sorted order, prototypes [n_classes, dim])."""
    check_metric(metric)
    x = l2_normalize(embeddings) if metric == "cosine" else np.asarray(embeddings, np.float32)
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    protos = (class_sums(x, inverse, counts) / counts[:, None]).astype(np.float32)
    if metric == "cosine":
        protos = l2_normalize(protos)
    return classes.tolist(), protos


def class_sums(x: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per class (``inverse``: each row's class; ``counts``: each class's rows, all >= 1), the float64
    sum of its rows, added in row order: bit for bit what adding the rows one by one gives
    (``np.add.at``), but as one grouped ``reduceat`` after a stable sort, many times faster on
    wide vectors (benchmarks/prototype_speed.py)."""
    if not len(counts):
        return np.zeros((0, x.shape[1]))
    if len(inverse) > 1 and np.any(inverse[1:] < inverse[:-1]):
        order = np.argsort(inverse, kind="stable")
        x, inverse = x[order], inverse[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(x, starts, axis=0, dtype=np.float64)


def prototype_scores(queries: np.ndarray, prototypes: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Scores [n_queries, n_classes]: cosine similarity, or minus squared L2 distance."""
    check_metric(metric)
    q = np.asarray(queries, dtype=np.float32)
    if metric == "cosine":
        return l2_normalize(q) @ prototypes.T
    d = (q * q).sum(1)[:, None] - 2 * q @ prototypes.T + (prototypes * prototypes).sum(1)[None, :]
    return -np.maximum(d, 0)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature`` (numerically stable)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    z = np.asarray(scores, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
