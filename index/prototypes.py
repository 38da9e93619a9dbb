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
from .types import ClassMatches
from .sqlite_meta import ClassRow

#: Score-matrix elements computed at once when ranking a batch (64 MB of float32): large
#: enough that the matrix product runs at full BLAS speed (blocks of a few dozen queries
#: were 2.3x slower at 100k classes), small enough to bound memory.
SCORE_BLOCK = 1 << 24
#: Row length above which top-k first narrows each row to its best chunks (see top_k).
CHUNK = 1024


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
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None  # see _read_view

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
        self._cache = None
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
        self._cache = None
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

    def _read_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(rows, labels as an object array, squared row norms for l2), cached until the next change."""
        if self._cache is None:
            rows = self._rows()
            sq = np.einsum("ij,ij->i", rows, rows) if self.metric == "l2" else None
            self._cache = (rows, np.array(self._slot_label, dtype=object), sq)
        return self._cache

    def score_block(self, queries: np.ndarray) -> np.ndarray:
        """Scores ``[n_queries, n_classes]`` (float32, fresh buffer) against every prototype.

        A small batch takes FAISS' single-threaded SIMD inner products, one
        query at a time (no thread pool to wake: the thread rule of
        :mod:`index.faiss_util`); a large one is one BLAS matrix product on all
        threads, several times faster than ``IndexFlat.search`` on a batch
        (measured in ``benchmarks/classify_scale.py``).
        """
        rows, _, sq = self._read_view()
        n, d = rows.shape
        nq = len(queries)
        if nq < faiss_util.SMALL_BATCH:
            out = np.empty((nq, n), dtype=np.float32)
            q = np.ascontiguousarray(queries, dtype=np.float32)
            for i in range(nq):
                faiss.fvec_inner_products_ny(faiss.swig_ptr(out[i]), faiss.swig_ptr(q[i]), faiss.swig_ptr(rows), d, n)
        else:
            with faiss_util.blas_threads(nq * n * d):
                out = queries @ rows.T
        if self.metric == "l2":
            out *= 2.0
            out -= np.einsum("ij,ij->i", queries, queries)[:, None]
            out -= sq[None, :]
            np.minimum(out, 0.0, out=out)
        return out

    def top(self, queries: np.ndarray, k: int, temperature: float | None = None) -> ClassMatches:
        """The k best classes per query (exact), in blocks of queries that keep the score matrix small."""
        rows, labels, _ = self._read_view()
        n = len(rows)
        if temperature is None and n and 0 < len(queries) < faiss_util.SMALL_BATCH:
            return self._top_faiss(queries, k, labels)
        step = max(1, SCORE_BLOCK // max(n, 1))
        if n == 0 or len(queries) <= step:
            scores = self.score_block(queries) if n else np.zeros((len(queries), 0), np.float32)
            return rank_classes(scores, labels, k, temperature)
        parts = [rank_classes(self.score_block(queries[i:i + step]), labels, k, temperature)
                 for i in range(0, len(queries), step)]
        return ClassMatches([row for p in parts for row in p.labels], np.concatenate([p.scores for p in parts]),
                            None if temperature is None else np.concatenate([p.probabilities for p in parts]), n)

    def _top_faiss(self, queries: np.ndarray, k: int, labels: np.ndarray) -> ClassMatches:
        """Top-k of a few queries without probabilities by FAISS' flat search (a k-heap in C
        while it scans). For batches one BLAS product per block of queries and the numpy
        top-k below were faster at every size measured (100 to 100k classes: 1.5x to 3x)."""
        n = self.flat.ntotal
        kk = min(k, n)
        with faiss_util.threads(len(queries)):
            dist, slots = self.flat.search(queries, kk)
        scores = dist if self.metric == "cosine" else -dist
        out_labels = labels[slots].tolist()
        _order_ties(scores, out_labels)
        return ClassMatches(out_labels, scores, None, n)

    def scores(self, queries: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(labels in slot order, scores [n_queries, n_labels]) against every prototype."""
        return list(self._slot_label), self.score_block(queries)

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


# ---------------------------------------------------------------------- ranking

def rank_classes(scores: np.ndarray, labels: np.ndarray, k: int, temperature: float | None) -> ClassMatches:
    """The k best classes per row of ``scores`` ``[n_queries, n_classes]``.

    ``labels`` is an object array of the class labels in column order. Ties are
    broken by label, so the answer does not depend on storage order. With a
    temperature, the probability of each shown class is its softmax weight over
    *all* columns: ``exp((s - max) / T) / sum_j exp((s_j - max) / T)``.
    ``scores`` is used as scratch space (overwritten) when a temperature is given.
    """
    n_queries, n = scores.shape
    if n == 0:
        return ClassMatches([[] for _ in range(n_queries)], np.zeros((n_queries, 0), np.float32),
                            None if temperature is None else np.zeros((n_queries, 0), np.float32), 0)
    k = min(k, n)
    idx, top_s = top_k(scores, k)
    top_labels = labels[idx].tolist()
    _order_ties(top_s, top_labels)
    probs = None if temperature is None else _softmax_of_top(scores, top_s, temperature)
    return ClassMatches(top_labels, np.ascontiguousarray(top_s, dtype=np.float32), probs, n)


def _softmax_of_top(scores: np.ndarray, top_s: np.ndarray, temperature: float) -> np.ndarray:
    """float32 ``[n, k]``: softmax weight over *all* columns of each top score (``scores`` is overwritten)."""
    best = top_s[:, :1]
    scores -= best
    scores *= np.float32(1.0 / temperature)
    np.exp(scores, out=scores)
    denom = scores.sum(axis=1, dtype=np.float64)[:, None]
    return (np.exp((top_s - best).astype(np.float64) / temperature) / denom).astype(np.float32)


def _order_ties(top_s: np.ndarray, top_labels: list[list[str]]) -> None:
    """Within each row (best first), put equal scores in label order, in place: the answer must not
    depend on storage order. Rare (duplicate prototypes), so a Python sort per tied row is fine."""
    if top_s.shape[1] < 2:
        return
    for r in np.flatnonzero((top_s[:, 1:] == top_s[:, :-1]).any(axis=1)).tolist():
        row, labs = top_s[r].tolist(), top_labels[r]
        order = sorted(range(len(row)), key=lambda j: (-row[j], labs[j]))
        top_s[r] = [row[j] for j in order]
        top_labels[r] = [labs[j] for j in order]


# ---------------------------------------------------------------------- top-k of score rows

def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, scores), both ``[n_rows, k]``, of the k largest scores of each row, best first.

    ``np.argpartition(axis=1)`` costs ~2 us per row plus ~3.5 ns per element
    here, then a sort; for the small k of classification two cheaper exact
    routes that come out already sorted:

    * k passes of ``argmax`` (vectorised, a fraction of a ns per element);
    * for long rows, first the maximum of each chunk of ``CHUNK`` columns: the
      chunks holding the k best scores are among the k chunks with the highest
      maxima (each such chunk's maximum is one of the k best scores, so at most
      k chunks can reach the k-th best), so only those k chunks are searched.

    At 1,000 x 100k scores: 347 ms (argpartition), 198 ms (k argmax), 90 ms (chunks).
    Equal scores come out in column order (which of several equal scores at the
    k-th place makes it in is unspecified). ``scores`` is left unchanged.
    """
    n_rows, n = scores.shape
    if n_rows == 1 and k < n:  # one query: 1-D operations, a few microseconds instead of tens
        row = scores[0]
        part = np.sort(np.argpartition(row, n - k)[n - k:])  # column order, so ties stay in column order
        order = np.argsort(-row[part], kind="stable")
        return part[order][None, :], row[part[order]][None, :]
    if k >= n:
        cols = np.argsort(-scores, axis=1, kind="stable")
        return cols, np.take_along_axis(scores, cols, axis=1)
    if k > 16 or 4 * k >= n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k:]
        part.sort(axis=1)  # column order first, so that the stable sort below keeps ties in column order
        vals = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)
    if n >= 16 * CHUNK and 4 * k * CHUNK <= n:
        return _top_k_chunked(scores, k)
    return _top_k_argmax(scores, k)


def _top_k_argmax(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_rows, n = scores.shape
    if not scores.flags.c_contiguous:
        scores = np.ascontiguousarray(scores)
    flat = scores.reshape(-1)  # a view: 1-D fancy indexing is several times cheaper than [rows, cols]
    base = np.arange(n_rows) * n
    idx = np.empty((k, n_rows), dtype=np.int64)
    vals = np.empty((k, n_rows), dtype=scores.dtype)
    for j in range(k):  # take the best, hide it, repeat; then put the hidden scores back
        best = scores.argmax(axis=1)
        pos = base + best
        idx[j], vals[j] = best, flat[pos]
        flat[pos] = -np.inf
    flat[(base + idx).ravel()] = vals.ravel()
    return idx.T, vals.T


def _top_k_chunked(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_rows, n = scores.shape
    n_chunks = n // CHUNK
    chunk_max = scores[:, : n_chunks * CHUNK].reshape(n_rows, n_chunks, CHUNK).max(axis=2)
    best_chunks, _ = _top_k_argmax(chunk_max, k)
    best_chunks.sort(axis=1)  # candidates in column order: ties then come out in column order
    cols = (best_chunks[:, :, None] * CHUNK + np.arange(CHUNK)).reshape(n_rows, k * CHUNK)
    if n_chunks * CHUNK < n:  # the ragged tail is always a candidate
        tail = np.arange(n_chunks * CHUNK, n)
        cols = np.concatenate([cols, np.broadcast_to(tail, (n_rows, len(tail)))], axis=1)
    pick, vals = _top_k_argmax(np.take_along_axis(scores, cols, axis=1), k)
    return np.take_along_axis(cols, pick, axis=1), vals
