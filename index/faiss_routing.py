"""Search routing of a :class:`~index.faiss_store.FaissStore`: which search answers a query.

An unfiltered query goes to the index with the stored search effort. A label
filter matching at most ``FILTER_EXACT_FRACTION`` of the vectors is answered
by an exact scan of the matching ids whatever the index type, because
approximate indexes lose most of their recall under selective filters; a
broader filter goes to the index with its effort scaled up by how much of
the index the filter hides. IVF-PQ candidates are re-scored exactly with
the stored float32 vectors when ``rerank`` asks for it.

Plain functions of one loaded state and the store's database connection:
the caller holds the store's mutex (and a read snapshot where it needs one).
"""

from __future__ import annotations

import json
import numpy as np

from .faiss_state import State
from .sqlite_meta import MetaDB
from .types import Hit
from .vector_index import exact_scores

#: A label filter matching at most this share of the live vectors is answered by an
#: exact scan of the matching ids (see the module docstring).
FILTER_EXACT_FRACTION = 0.5


def vector_search(st: State, db: MetaDB, q: np.ndarray, k: int, subset: np.ndarray | None,
                  ef_search: int | None, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of one search: unfiltered, exact over a selective subset, or filtered ANN."""
    vi = st.vectors
    ef = ef_search or st.config.ef_search
    rerank_on = vi.kind == "ivfpq" and st.config.rerank > 1
    kc = k * st.config.rerank if rerank_on else k
    live = max(vi.live, 1)
    if subset is not None and len(subset) >= live:
        subset = None  # the filter covers every record
    if subset is None:
        scores, ids = vi.search(q, kc, ef_search=ef, nprobe=nprobe or nprobe_for(st))
    elif vi.kind == "flat" or len(subset) <= FILTER_EXACT_FRACTION * live:
        scores, ids = vi.search_exact(q, kc, subset)
    else:
        boost = live / len(subset)
        base_probe = nprobe or nprobe_for(st)
        nlist = int(getattr(vi.main, "nlist", 1))
        scores, ids = vi.search(q, kc, ef_search=int(ef * boost) + 1,
                                nprobe=None if base_probe is None else min(nlist, int(base_probe * boost) + 1),
                                subset=subset)
    if rerank_on and ids.size:
        scores, ids = rerank(st, db, q, ids, k)
    return scores, ids


def nprobe_for(st: State) -> int | None:
    """The stored ``nprobe`` for an IVF index of this size (None for other kinds)."""
    vi = st.vectors
    if vi.kind not in ("ivf", "ivfpq"):
        return None
    return st.config.nprobe_for(int(vi.main.nlist))


def rerank(st: State, db: MetaDB, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score IVF-PQ candidates exactly with the stored float32 vectors."""
    uniq = np.unique(cand[cand >= 0])
    found, vecs = db.vectors_for(uniq, st.dim)
    pos = {int(i): j for j, i in enumerate(found.tolist())}
    out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(q), k), -1, dtype=np.int64)
    for r in range(len(q)):
        row = [int(i) for i in cand[r] if i >= 0 and int(i) in pos]
        if not row:
            continue
        sc = exact_scores(q[r : r + 1].astype(np.float32), vecs[[pos[i] for i in row]], st.metric)[0]
        order = np.argsort(-sc, kind="stable")[:k]
        out_s[r, : len(order)] = sc[order]
        out_i[r, : len(order)] = np.asarray(row)[order]
    return out_s, out_i


def to_hits(db: MetaDB, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """One list of :class:`Hit` per query; ids removed since the search (or -1 padding) left out."""
    info = db.fetch_hit_info(ids[ids >= 0].tolist())
    out: list[list[Hit]] = []
    for row_scores, row_ids in zip(scores, ids):
        hits = []
        for score, rid in zip(row_scores.tolist(), row_ids.tolist()):
            if rid < 0 or rid not in info:
                continue
            label, meta = info[rid]
            hits.append(Hit(int(rid), label, float(score), json.loads(meta)))
        out.append(hits)
    return out


__all__ = ["FILTER_EXACT_FRACTION", "nprobe_for", "rerank", "to_hits", "vector_search"]
