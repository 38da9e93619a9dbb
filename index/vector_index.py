"""VectorIndex: the stored vectors in one FAISS index of any kind, keyed by record id.

The store needs the same operations whatever the index type: add with ids,
remove, k-NN with per-call search parameters, an *exact* search restricted to
a set of ids (label filters), the live ids (to replay changes committed after
a cache file was written) and memory-mapped opening. FAISS offers these
unevenly, so this class evens them out:

* HNSW cannot delete, and a memory-mapped index cannot change at all: removed
  ids become *tombstones* (excluded from every search by an ``IDSelector``)
  until the store compacts by rebuilding; vectors added to a memory-mapped
  index go to a small in-memory flat *side* index whose hits are merged in.
* IVF indexes take record ids natively; flat and HNSW are wrapped in an
  ``IndexIDMap`` (not ``IDMap2``: its reverse hash map would cost ~50 bytes per
  vector and make every removal O(n) in Python-visible time).
* Exact restricted search: flat uses an id selector; HNSW scans its own flat
  storage by position (ids are added in increasing order, so ``id_map`` is
  sorted and positions come from a binary search); IVF probes every list
  with the selector, which is exact for IVF-Flat.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import faiss
import numpy as np

from . import faiss_util
from .index_config import IndexConfig

#: Training sample size per IVF list (FAISS warns below 39).
_TRAIN_PER_LIST = 40
_MAX_TRAIN = 160_000


def _metric_type(metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def _to_scores(dist: np.ndarray, metric: str) -> np.ndarray:
    return dist if metric == "cosine" else -dist


def kind_of(index: faiss.Index) -> str | None:
    """The kind name of a deserialised index, or None if it is not one this store writes."""
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlat):
            return "flat"
    return None


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k of several (scores, ids) results; -1 ids are padding."""
    parts = [p for p in parts if p[0].shape[1] > 0]
    if not parts:
        raise ValueError("merge_topk needs at least one non-empty part")
    if len(parts) == 1 and parts[0][0].shape[1] <= k:
        return parts[0]
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(ids < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out_s = np.take_along_axis(scores, order, axis=1)
    out_i = np.take_along_axis(ids, order, axis=1)
    out_i = np.where(np.isneginf(out_s), -1, out_i)
    return out_s.astype(np.float32), out_i


def exact_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Exact scores [n_queries, n_vectors] (cosine: dot product; l2: negative squared distance)."""
    if metric == "cosine":
        return queries @ vectors.T
    q2 = np.einsum("ij,ij->i", queries, queries)[:, None]
    v2 = np.einsum("ij,ij->i", vectors, vectors)[None, :]
    return -np.maximum(q2 + v2 - 2.0 * (queries @ vectors.T), 0.0)


class VectorIndex:
    """All stored vectors of a store in one FAISS index (see the module docstring)."""

    def __init__(self, kind: str, main: faiss.Index, dim: int, metric: str, *, mutable: bool = True) -> None:
        self.kind = kind
        self.main = main
        self.dim = dim
        self.metric = metric
        self.mutable = mutable
        self.side: faiss.IndexIDMap | None = None
        self.dead = np.zeros(0, dtype=np.int64)  # tombstoned ids still inside ``main`` (sorted)
        self._id_map: np.ndarray | None = None  # cached main ids for flat/hnsw positions
        self._exclude: tuple[object, object] | None = None  # cached selector of the tombstones

    # ------------------------------------------------------------------ construction

    @classmethod
    def empty(cls, dim: int, metric: str) -> "VectorIndex":
        """An empty exact index (the only kind that needs no training data)."""
        return cls("flat", faiss_util.new_index(dim, metric), dim, metric)

    @classmethod
    def build(
        cls,
        kind: str,
        dim: int,
        metric: str,
        config: IndexConfig,
        chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
        n: int,
    ) -> "VectorIndex":
        """Build a ``kind`` index over ``n`` vectors read from ``chunks()`` (called once or twice).

        ``chunks()`` yields (ids ascending, float32 vectors). IVF kinds are
        trained on an evenly strided sample of the first pass; everything
        else is added in one pass, so the vectors never all sit in memory twice.
        """
        mt = _metric_type(metric)
        if kind == "flat" or n == 0:
            index = faiss_util.new_index(dim, metric)
            kind = "flat"
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, mt)
            inner.hnsw.efConstruction = config.ef_construction
            inner.hnsw.efSearch = config.ef_search
            index = faiss.IndexIDMap(inner)
        elif kind in ("ivf", "ivfpq"):
            nlist = config.nlist_for(n)
            quantizer = faiss.IndexFlat(dim, mt)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, mt)
            else:
                index = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m_for(dim), 8, mt)
            index.own_fields = True
            quantizer.this.disown()  # owned by the IVF index from now on
            index.nprobe = config.nprobe_for(nlist)
            index.cp.niter = 12  # FAISS' 25 k-means iterations barely change recall and take twice as long
            index.train(_training_sample(chunks, n, max(nlist * _TRAIN_PER_LIST, 256 * 8)))
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        with faiss_util.threads(n):
            for ids, vecs in chunks():
                if len(ids):
                    index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids.astype(np.int64))
        return cls(kind, index, dim, metric)

    @classmethod
    def read(cls, path: Path, dim: int, metric: str, *, mmap: bool = False) -> "VectorIndex | None":
        """Load a cache file; None unless it is an index of a known kind, dim and metric.

        With ``mmap`` an HNSW or IVF file is mapped read-only (vectors paged in
        on demand): opening is O(1) in the index size, and the result is
        immutable. Flat files are always read into memory (see below).
        """
        try:
            if mmap:
                index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
                if isinstance(index, faiss.IndexIVF):
                    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            else:
                index = faiss.read_index(str(path))
        except Exception:  # FAISS raises RuntimeError subclasses for malformed files
            return None
        kind = kind_of(index)
        if kind is None or index.d != dim or index.metric_type != _metric_type(metric):
            return None
        if mmap and kind == "flat":
            # A flat search touches every page on every query: mapping gains nothing after the
            # first query and lets the kernel evict pages that each query then re-reads from disk.
            return cls.read(path, dim, metric, mmap=False)
        return cls(kind, index, dim, metric, mutable=not mmap)

    def write(self, path: Path) -> None:
        """Write ``main`` to ``path`` (not atomic: the caller writes a temp file and renames it)."""
        faiss.write_index(self.main, str(path))

    # ------------------------------------------------------------------ contents

    @property
    def ntotal(self) -> int:
        """Vectors held, tombstones included."""
        return int(self.main.ntotal) + (int(self.side.ntotal) if self.side is not None else 0)

    @property
    def live(self) -> int:
        """Vectors that searches can return."""
        return self.ntotal - len(self.dead)

    def main_ids(self) -> np.ndarray:
        """Ids stored in ``main`` (tombstones included), in storage order."""
        if self.kind in ("flat", "hnsw"):
            if self._id_map is None or len(self._id_map) != self.main.ntotal:
                self._id_map = faiss.vector_to_array(self.main.id_map).astype(np.int64)
            return self._id_map
        return faiss_util.ivf_ids(self.main)

    def ids(self) -> np.ndarray:
        """Sorted live ids."""
        parts = [self.main_ids()]
        if self.side is not None and self.side.ntotal:
            parts.append(faiss.vector_to_array(self.side.id_map).astype(np.int64))
        ids = np.sort(np.concatenate(parts))
        if len(self.dead):
            ids = ids[~np.isin(ids, self.dead, assume_unique=True)]
        return ids

    # ------------------------------------------------------------------ writes

    def add(self, vecs: np.ndarray, ids: np.ndarray, *, side: bool = False) -> None:
        """Add vectors under their record ids.

        They go to the flat side index when ``main`` is immutable or ``side``
        is asked for (replaying many changes into an HNSW graph is slow;
        :meth:`merge_side` moves them in later).
        """
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.mutable and not side:
            with faiss_util.threads(len(ids)):
                self.main.add_with_ids(vecs, ids)
            return
        if self.side is None:
            self.side = faiss_util.new_index(self.dim, self.metric)
        self.side.add_with_ids(vecs, ids)

    def merge_side(self) -> None:
        """Move the side index's vectors into ``main`` (mutable indexes only)."""
        side = self.side
        if side is None or side.ntotal == 0:
            self.side = None
            return
        if not self.mutable:
            raise ValueError("cannot merge into a memory-mapped index")
        ids = faiss.vector_to_array(side.id_map).astype(np.int64)
        inner = faiss.downcast_index(side.index)
        vecs = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * self.dim).reshape(inner.ntotal, self.dim).copy()
        order = np.argsort(ids)
        self.side = None
        self.add(vecs[order], ids[order])

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids (ids not present are ignored)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if len(ids) == 0:
            return
        if self.side is not None and self.side.ntotal:
            self.side.remove_ids(faiss.IDSelectorBatch(ids))
        if self.mutable and self.kind != "hnsw":
            self.main.remove_ids(faiss.IDSelectorBatch(ids))
            self._id_map = None
            return
        present = ids[np.isin(ids, self.main_ids())]
        if len(present):
            self.dead = np.union1d(self.dead, present)
            self._exclude = None

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef_search: int,
        nprobe: int | None,
        subset: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate (or exact for flat) top-k; (scores, ids), higher is better, -1 = none.

        ``subset`` restricts results to those ids (an ``IDSelector`` inside the
        index; the caller routes selective subsets to :meth:`search_exact`).
        """
        parts = []
        if self.main.ntotal:
            sel_ids = subset
            exclude = None if subset is not None or not len(self.dead) else self.dead
            parts.append(self._search_main(queries, k, ef_search, nprobe, sel_ids, exclude))
        if self.side is not None and self.side.ntotal:
            parts.append(faiss_util.search(self.side, queries, k, self.metric, subset))
        if not parts:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return merge_topk(parts, k)

    def _search_main(self, queries, k, ef_search, nprobe, subset, exclude):
        keep: list[object] = []  # selectors must outlive the search call
        sel = None
        if subset is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
            keep.append(sel)
        elif exclude is not None:
            if self._exclude is None:  # built once per change: O(tombstones)
                inner = faiss.IDSelectorBatch(exclude)
                self._exclude = (inner, faiss.IDSelectorNot(inner))
            sel = self._exclude[1]
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(int(ef_search), k)
        elif self.kind in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF()
            params.nprobe = int(nprobe) if nprobe else int(self.main.nprobe)
        else:
            params = faiss.SearchParameters() if sel is not None else None
        if params is not None and sel is not None:
            params.sel = sel
        kk = min(k, max(int(self.main.ntotal), 1))
        with faiss_util.threads(len(queries)):
            if params is None:
                dist, ids = self.main.search(queries, kk)
            else:
                dist, ids = self.main.search(queries, kk, params=params)
        del keep
        return _to_scores(dist, self.metric), ids

    def search_exact(self, queries: np.ndarray, k: int, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among ``subset`` ids (for IVF-PQ: complete candidates, approximate scores).

        Cost is one pass over the stored vectors checking the selector, with
        distances computed only for members, whatever the index kind.
        """
        subset = np.ascontiguousarray(np.setdiff1d(subset, self.dead), dtype=np.int64)
        parts = []
        if self.main.ntotal and len(subset):
            if self.kind == "flat":
                parts.append(self._search_main(queries, k, 0, None, subset, None))
            elif self.kind == "hnsw":
                parts.append(self._hnsw_exact(queries, k, subset))
            else:
                parts.append(self._search_main(queries, k, 0, int(self.main.nlist), subset, None))
        if self.side is not None and self.side.ntotal and len(subset):
            parts.append(faiss_util.search(self.side, queries, k, self.metric, subset))
        if not parts:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return merge_topk(parts, k)

    def _hnsw_exact(self, queries, k, subset):
        id_map = self.main_ids()
        order = None
        if len(id_map) > 1 and not np.all(id_map[1:] > id_map[:-1]):
            order = np.argsort(id_map)
            sorted_ids = id_map[order]
        else:
            sorted_ids = id_map
        pos = np.searchsorted(sorted_ids, subset)
        inside = pos < len(sorted_ids)
        pos = pos[inside]
        pos = pos[sorted_ids[pos] == subset[inside]]
        if order is not None:
            pos = order[pos]
        if len(pos) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        storage = faiss.downcast_index(faiss.downcast_index(self.main.index).storage)
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(pos, dtype=np.int64))
        params = faiss.SearchParameters()
        params.sel = sel
        kk = min(k, len(pos))
        with faiss_util.threads(len(queries)):
            dist, p = storage.search(queries, kk, params=params)
        ids = np.where(p >= 0, id_map[np.maximum(p, 0)], -1)
        return _to_scores(dist, self.metric), ids


def _training_sample(chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], n: int,
                     want: int) -> np.ndarray:
    """An evenly strided sample of about ``want`` vectors (all of them when n <= want)."""
    want = min(want, _MAX_TRAIN)
    stride = max(1, n // want)
    parts: list[np.ndarray] = []
    seen = 0
    for _ids, vecs in chunks():
        first = (-seen) % stride
        parts.append(np.asarray(vecs[first::stride], dtype=np.float32))
        seen += len(vecs)
    if not parts:
        raise ValueError("no vectors to train on")
    return np.ascontiguousarray(np.concatenate(parts))


def file_size(path: Path) -> int:
    """Size of a file in bytes (0 when missing)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


__all__ = ["VectorIndex", "exact_scores", "kind_of", "merge_topk"]
