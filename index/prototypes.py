"""Class prototypes kept incrementally from per-class running sums.

A prototype is the mean of a class's stored vectors (for cosine: the mean of
the normalised vectors, re-normalised, so a one-example class scores ~1.0
against its own example). Sums and counts live in SQLite (``classes``); this
module turns them into vectors and keeps a small FAISS index of prototypes in
step, touching only the classes a write changed.
"""

from __future__ import annotations

import faiss
import numpy as np

from . import faiss_util
from .sqlite_meta import ClassRow


def prototype_vector(count: int, vsum: np.ndarray, metric: str) -> np.ndarray:
    """float32 prototype from a count and a float64 sum."""
    mean = np.asarray(vsum, dtype=np.float64) / max(int(count), 1)
    if metric == "cosine":
        norm = np.linalg.norm(mean)
        if norm > 0:
            mean = mean / norm
    return mean.astype(np.float32)


class PrototypeTable:
    """In-memory prototype index plus label <-> class-id bookkeeping.

    Class ids are the ``classes`` rowids, stable while a class exists, so an
    update is ``remove_ids`` + ``add_with_ids`` for the touched classes only.
    """

    def __init__(self, dim: int, metric: str, index: faiss.IndexIDMap2 | None = None) -> None:
        self.dim = dim
        self.metric = metric
        self.index = index if index is not None else faiss_util.new_index(dim, metric)
        self.by_label: dict[str, tuple[int, int]] = {}  # label -> (cid, count)
        self.by_cid: dict[int, str] = {}

    @classmethod
    def build(cls, rows: list[ClassRow], dim: int, metric: str,
              index: faiss.IndexIDMap2 | None = None) -> "PrototypeTable":
        """Table for ``rows``; ``index`` is a cached prototype index to reuse as-is."""
        table = cls(dim, metric, index)
        for row in rows:
            table.by_label[row.label] = (row.cid, row.count)
            table.by_cid[row.cid] = row.label
        if index is None and rows:
            vecs = np.stack([prototype_vector(r.count, r.vsum, metric) for r in rows])
            table.index.add_with_ids(vecs, np.array([r.cid for r in rows], dtype=np.int64))
        return table

    def apply(self, changed: dict[str, ClassRow]) -> None:
        """Bring the touched classes up to date (count 0 = class removed)."""
        stale = [self.by_label[label][0] for label in changed if label in self.by_label]
        if stale:
            self.index.remove_ids(np.array(stale, dtype=np.int64))
        for label in changed:
            old = self.by_label.pop(label, None)
            if old is not None:
                self.by_cid.pop(old[0], None)
        live = [row for row in changed.values() if row.count > 0]
        if live:
            vecs = np.stack([prototype_vector(r.count, r.vsum, self.metric) for r in live])
            self.index.add_with_ids(vecs, np.array([r.cid for r in live], dtype=np.int64))
            for row in live:
                self.by_label[row.label] = (row.cid, row.count)
                self.by_cid[row.cid] = row.label

    def counts(self) -> dict[str, int]:
        """label -> record count, sorted by label."""
        return {label: self.by_label[label][1] for label in sorted(self.by_label)}

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """(labels sorted, [n_labels, dim] float32 prototypes)."""
        labels = sorted(self.by_label)
        out = np.zeros((len(labels), self.dim), dtype=np.float32)
        for i, label in enumerate(labels):
            out[i] = self.index.reconstruct(int(self.by_label[label][0]))
        return labels, out
