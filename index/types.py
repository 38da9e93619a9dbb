"""The value types every backend returns (and the metric names), free of store logic.

Kept apart from :mod:`index.base` so that low-level modules
(:mod:`index.validation`, :mod:`index.prototypes`) can use them without
importing the store contract, which itself uses those modules: no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

METRICS = ("cosine", "l2")


@dataclass(frozen=True, eq=False)
class ClassMatches:
    """The k best classes of each query, as arrays: what classification needs.

    One object for a whole batch (no Python object per hit), so classifying a
    batch costs the matrix product, not the bookkeeping.

    * ``labels``: per query, the k best class labels, best first;
    * ``scores``: float32 ``[n_queries, k]`` (higher is better, see the score convention);
    * ``probabilities``: float32 ``[n_queries, k]``, the softmax of ``score / temperature``
      over **all** classes (not just the k shown), or None if no temperature was given;
    * ``n_classes``: how many classes the queries were ranked against (one snapshot).
    """

    labels: list[list[str]]
    scores: np.ndarray
    probabilities: np.ndarray | None
    n_classes: int


@dataclass(frozen=True)
class Hit:
    """One search result. ``id`` is -1 for prototype hits (a class, not a record)."""

    id: int
    label: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Record:
    """One stored example: its label, caller metadata and (normalised) vector."""

    id: int
    label: str
    metadata: dict[str, Any]
    vector: np.ndarray
    created: float

    def __eq__(self, other: object) -> bool:
        # Dataclass equality would compare arrays element-wise and fail; compare
        # the vector by value instead.
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.id == other.id
            and self.label == other.label
            and self.metadata == other.metadata
            and self.created == other.created
            and np.array_equal(self.vector, other.vector)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable payload; not hashable


__all__ = ["METRICS", "ClassMatches", "Hit", "Record"]
