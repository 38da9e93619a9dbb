"""Class prototypes kept incrementally from per-class running sums.

A prototype is the mean of a class's stored vectors (for cosine: the mean of
the normalised vectors, re-normalised, so a one-example class scores ~1.0
against its own example). Sums and counts live in SQLite (``classes``); this
module turns them into vectors and keeps them in a flat FAISS index in step,
touching only the classes a write changed.

The in-memory index is *slot*-addressed (row i = one class) rather than
id-mapped: changing a class overwrites its row in place and removing one moves
the last row into its slot, so an update costs O(dim) instead of the O(n)
rebuild of an ``IndexIDMap2`` reverse map. With 100k classes that is the
difference between microseconds and milliseconds per added example. The
cache file keeps the id-mapped form (class id = ``classes`` rowid).
"""

from __future__ import annotations

import faiss
import numpy as np

from . import faiss_util
from .sqlite_meta import ClassRow


def prototype_vector(count: int, vsum: np.ndarray, metric: str) -> np.ndarray:
    """float32 prototype from a count and a float64 sum."""
    return prototype_matrix(np.array([count]), np.asarray(vsum, dtype=np.float64)[None, :], metric)[0]


def prototype_matrix(counts: np.ndarray, vsums: np.ndarray, metric: str) -> np.ndarray:
    """float32 prototypes [n, dim] from counts [n] and float64 sums [n, dim] (vectorised)."""
    means = np.asarray(vsums, dtype=np.float64) / np.maximum(np.asarray(counts, dtype=np.float64), 1)[:, None]
    if metric == "cosine":
        norms = np.linalg.norm(means, axis=1)
        means = np.where(norms[:, None] > 0, means / np.where(norms > 0, norms, 1.0)[:, None], means)
    return np.ascontiguousarray(means.astype(np.float32))


class PrototypeTable:
    """Slot-addressed prototype index plus label <-> class-id bookkeeping.

    Class ids are the ``classes`` rowids, stable while a class exists.
    """

    def __init__(self, dim: int, metric: str) -> None:
        self.dim = dim
        self.metric = metric
        self.flat = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        self.by_label: dict[str, tuple[int, int]] = {}  # label -> (cid, count)
        self.by_cid: dict[int, str] = {}
        self._slot_of: dict[int, int] = {}  # cid -> row in ``flat``
        self._slot_label: list[str] = []  # row -> label
        self._slot_count: list[int] = []  # row -> example count
        self._slot_cid: list[int] = []  # row -> cid

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, rows: list[ClassRow], dim: int, metric: str,
              index: faiss.Index | None = None) -> "PrototypeTable":
        """Table for ``rows``; ``index`` is a cached id-mapped prototype index to reuse as-is."""
        table = cls(dim, metric)
        if not rows:
            return table
        cids = np.array([r.cid for r in rows], dtype=np.int64)
        if index is not None:
            cached_ids = faiss_util.index_ids(index)
            inner = faiss.downcast_index(index.index)
            vecs = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * dim).reshape(inner.ntotal, dim)
            order = np.argsort(cached_ids)
            pos = order[np.searchsorted(cached_ids[order], cids)]
            matrix = np.ascontiguousarray(vecs[pos], dtype=np.float32)
        else:
            matrix = prototype_matrix(np.array([r.count for r in rows]), np.stack([r.vsum for r in rows]), metric)
        table.flat.add(matrix)
        for slot, row in enumerate(rows):
            table.by_label[row.label] = (row.cid, row.count)
            table.by_cid[row.cid] = row.label
            table._slot_of[row.cid] = slot
        table._slot_label = [r.label for r in rows]
        table._slot_count = [r.count for r in rows]
        table._slot_cid = [r.cid for r in rows]
        return table

    def to_faiss(self) -> faiss.IndexIDMap:
        """Id-mapped copy (class id -> prototype) for the cache file."""
        index = faiss_util.new_index(self.dim, self.metric)
        n = self.flat.ntotal
        if n:
            index.add_with_ids(self._rows(), np.array(self._slot_cid, dtype=np.int64))
        return index

    # ------------------------------------------------------------------ updates

    def apply(self, changed: dict[str, ClassRow]) -> None:
        """Bring the touched classes up to date (count 0 = class removed)."""
        live = [row for row in changed.values() if row.count > 0]
        vecs = prototype_matrix(np.array([r.count for r in live]), np.stack([r.vsum for r in live]),
                                self.metric) if live else None
        for label in changed:
            old = self.by_label.get(label)
            if old is not None and changed[label].count <= 0:
                self._drop(label, old[0])
        for i, row in enumerate(live):
            old = self.by_label.get(row.label)
            if old is not None and old[0] != row.cid:
                self._drop(row.label, old[0])
                old = None
            if old is None:
                slot = self.flat.ntotal
                self.flat.add(vecs[i : i + 1])
                self._slot_of[row.cid] = slot
                self._slot_label.append(row.label)
                self._slot_count.append(row.count)
                self._slot_cid.append(row.cid)
            else:
                slot = self._slot_of[row.cid]
                self._rows()[slot] = vecs[i]
                self._slot_count[slot] = row.count
            self.by_label[row.label] = (row.cid, row.count)
            self.by_cid[row.cid] = row.label

    def _drop(self, label: str, cid: int) -> None:
        slot = self._slot_of.pop(cid)
        last = self.flat.ntotal - 1
        if slot != last:
            rows = self._rows()
            rows[slot] = rows[last]
            moved_cid = self._slot_cid[last]
            self._slot_of[moved_cid] = slot
            self._slot_label[slot] = self._slot_label[last]
            self._slot_count[slot] = self._slot_count[last]
            self._slot_cid[slot] = moved_cid
        self.flat.remove_ids(faiss.IDSelectorRange(last, last + 1))
        self._slot_label.pop()
        self._slot_count.pop()
        self._slot_cid.pop()
        del self.by_label[label]
        self.by_cid.pop(cid, None)

    def _rows(self) -> np.ndarray:
        n = self.flat.ntotal
        return faiss.rev_swig_ptr(self.flat.get_xb(), n * self.dim).reshape(n, self.dim)

    # ------------------------------------------------------------------ reads

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float, int]]]:
        """Per query, up to k (label, score, count) best first (score: higher is better)."""
        n = self.flat.ntotal
        if n == 0:
            return [[] for _ in range(len(queries))]
        kk = min(k, n)
        with faiss_util.threads(len(queries)):
            dist, slots = self.flat.search(queries, kk)
        scores = dist if self.metric == "cosine" else -dist
        labels, counts = self._slot_label, self._slot_count
        return [[(labels[s], sc, counts[s]) for s, sc in zip(row_s.tolist(), row_d.tolist()) if s >= 0]
                for row_s, row_d in zip(slots, scores)]

    def scores(self, queries: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(labels in slot order, scores [n_queries, n_labels]) against every prototype."""
        rows = self._rows()
        if self.metric == "cosine":
            s = queries @ rows.T
        else:
            s = -(np.einsum("ij,ij->i", queries, queries)[:, None] + np.einsum("ij,ij->i", rows, rows)[None, :]
                  - 2.0 * (queries @ rows.T))
        return list(self._slot_label), s

    @property
    def size(self) -> int:
        """Number of classes."""
        return int(self.flat.ntotal)

    def counts(self) -> dict[str, int]:
        """label -> record count, sorted by label."""
        return {label: self.by_label[label][1] for label in sorted(self.by_label)}

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """(labels sorted, [n_labels, dim] float32 prototypes)."""
        labels = sorted(self.by_label)
        rows = self._rows()
        out = np.zeros((len(labels), self.dim), dtype=np.float32)
        for i, label in enumerate(labels):
            out[i] = rows[self._slot_of[self.by_label[label][0]]]
        return labels, out
