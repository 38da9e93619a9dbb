"""Small FAISS helpers: index construction, (de)serialisation and searching.

Isolated so the store logic does not depend on FAISS' SWIG details, and so the
thread-count policy lives in one place: on this class of machine a single small
query is ~30x slower with several OpenMP threads than with one, while big
batches do benefit from threads.
"""

from __future__ import annotations

import faiss
import numpy as np

#: Batches smaller than this are searched single-threaded.
SMALL_BATCH = 64
_MAX_THREADS = max(1, faiss.omp_get_max_threads())


def new_index(dim: int, metric: str) -> faiss.IndexIDMap2:
    """Empty exact index with caller-chosen int64 ids (inner product for cosine)."""
    flat = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    # faiss' Python wrapper keeps ``flat`` alive via ``referenced_objects``.
    return faiss.IndexIDMap2(flat)


def serialize(index: faiss.Index) -> bytes:
    """Bytes of an index (what goes into a ``*.faiss`` file)."""
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes, dim: int, metric: str, ntotal: int) -> faiss.IndexIDMap2 | None:
    """Index from bytes, or None if it is not the expected kind/shape/size."""
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except Exception:  # FAISS raises RuntimeError subclasses for malformed input
        return None
    if not isinstance(index, faiss.IndexIDMap2):
        return None
    expected = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if index.d != dim or index.metric_type != expected or index.ntotal != ntotal:
        return None
    return index


def index_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    """The ids stored in an IndexIDMap2, in insertion order."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def threads_for(n_queries: int) -> int:
    """OpenMP thread count for a batch of ``n_queries`` (1 for small batches)."""
    return 1 if n_queries < SMALL_BATCH else _MAX_THREADS


def search(
    index: faiss.IndexIDMap2,
    queries: np.ndarray,
    k: int,
    metric: str,
    subset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN; returns (scores, ids), higher score = better, -1 id = no result.

    ``subset`` restricts the search to those ids (flat index: still exact).
    For l2 the score is the negative squared distance. The OpenMP thread
    count is chosen for this call and restored afterwards, so other FAISS
    users in the process are not affected.
    """
    k = min(k, max(index.ntotal, 1))
    if subset is not None:
        k = min(k, max(len(subset), 1))
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads_for(len(queries)))
    try:
        if subset is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
            dist, ids = index.search(queries, k, params=faiss.SearchParameters(sel=selector))
        else:
            dist, ids = index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(previous)
    scores = dist if metric == "cosine" else -dist
    return scores, ids
