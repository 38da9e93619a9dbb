"""Small FAISS helpers: index construction, (de)serialisation and searching.

Isolated so the store logic does not depend on FAISS' SWIG details, and so the
thread-count policy lives in one place. The rule (measured by
``benchmarks/threads.py``, see docs/SCALING.md): a batch of fewer than
``SMALL_BATCH`` queries runs on **one** OpenMP thread, a larger batch on all of
them. Waking an OpenMP team costs far more than a small search: on this 2-core
machine one query against 100k x 64 vectors takes several times longer with 2
threads than with 1, while a batch of 1,000 queries does gain from threads.
The count is set per call and restored afterwards, so other FAISS users in the
process are unaffected; it is process-global while the call runs, so two
Python threads searching at once may briefly see each other's setting (which
only affects speed, never results).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss
import numpy as np

#: Batches smaller than this are searched single-threaded.
SMALL_BATCH = 64
_MAX_THREADS = max(1, faiss.omp_get_max_threads())


def new_index(dim: int, metric: str) -> faiss.IndexIDMap:
    """Empty exact index with caller-chosen int64 ids (inner product for cosine).

    ``IndexIDMap`` rather than ``IDMap2``: the latter's reverse hash map costs
    ~50 bytes per vector and is rebuilt (O(n)) on every removal.
    """
    flat = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    # faiss' Python wrapper keeps ``flat`` alive via ``referenced_objects``.
    return faiss.IndexIDMap(flat)


def serialize(index: faiss.Index) -> bytes:
    """Bytes of an index (what goes into a ``*.faiss`` file)."""
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes, dim: int, metric: str, ntotal: int | None) -> faiss.Index | None:
    """Index from bytes, or None if it is not the expected kind/shape/size (``ntotal=None``: any size)."""
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except Exception:  # FAISS raises RuntimeError subclasses for malformed input
        return None
    if not isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexIVF)):
        return None
    expected = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if index.d != dim or index.metric_type != expected or (ntotal is not None and index.ntotal != ntotal):
        return None
    return index


def index_ids(index: faiss.Index) -> np.ndarray:
    """The ids stored in an id-mapped or IVF index (storage order)."""
    if isinstance(index, faiss.IndexIVF):
        return ivf_ids(index)
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def ivf_ids(index: faiss.IndexIVF) -> np.ndarray:
    """All ids in an IVF index's inverted lists (list order)."""
    invlists = index.invlists
    parts = []
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if size:
            ptr = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64))
            invlists.release_ids(list_no, ptr)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def threads_for(n_queries: int) -> int:
    """OpenMP thread count for a batch of ``n_queries`` (1 for small batches, all for large)."""
    return 1 if n_queries < SMALL_BATCH else _MAX_THREADS


@contextlib.contextmanager
def threads(n_queries: int) -> Iterator[None]:
    """Run the enclosed FAISS call with :func:`threads_for` threads, then restore the setting."""
    previous = faiss.omp_get_max_threads()
    wanted = threads_for(n_queries)
    if wanted == previous:
        yield
        return
    faiss.omp_set_num_threads(wanted)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


#: Multiply-adds below which a numpy (OpenBLAS) matrix product runs on one thread.
BLAS_PARALLEL_WORK = 1 << 27
_blas_controller = None


@contextlib.contextmanager
def blas_threads(work: int) -> Iterator[None]:
    """Run the enclosed numpy matrix product on one BLAS thread unless ``work`` is large.

    The same lesson as the FAISS rule, for numpy's OpenBLAS pool: after a pause
    its threads are asleep, and waking them cost ~6 ms here, 16x the 0.37 ms that
    a 1,000 x 100 x 64 product takes on one thread; a second thread only pays
    when the product itself takes far longer than that (measured:
    ``benchmarks/classify_scale.py``). The limit costs ~25 us and is restored after.
    """
    global _blas_controller
    if work >= BLAS_PARALLEL_WORK:
        yield
        return
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


def search(
    index: faiss.Index,
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
    with threads(len(queries)):
        if subset is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
            dist, ids = index.search(queries, k, params=faiss.SearchParameters(sel=selector))
        else:
            dist, ids = index.search(queries, k)
    scores = dist if metric == "cosine" else -dist
    return scores, ids
