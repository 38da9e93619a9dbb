"""Which FAISS index type serves the stored vectors, and with which parameters.

One small, validated settings object decides this, so the store, the CLI and
the benchmarks agree on defaults. The defaults come from ``benchmarks/knn_lookup.py``
on 2 slow CPU cores (see docs/SCALING.md):

* ``flat`` (exact) is the right answer while an index is small: a single query
  over 100k x 128 float32 vectors takes a few ms and needs no training.
* ``auto`` (the default) stays flat up to ``auto_threshold`` live vectors
  (100,000) and switches to HNSW above it, built in the background.
* ``hnsw`` (M=16): recall@10 >= 0.95 at efSearch=96 on 1M x 128, memory about
  1.3x the raw vectors, no training; removals are tombstones until compaction.
* ``ivf`` (IVF-Flat): nlist ~ 2 sqrt(n), nprobe = nlist/32; exact distances
  inside probed lists, memory ~1.02x raw, needs training.
* ``ivfpq``: product-quantised codes (``pq_m`` bytes per vector) for indexes
  that do not fit in memory otherwise; distances are approximate, so the top
  ``rerank x k`` candidates are re-scored exactly from the records on disk.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ValidationError

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
KINDS = ("flat", "hnsw", "ivf", "ivfpq")

#: Live vectors above which ``auto`` leaves exact flat search for HNSW.
AUTO_THRESHOLD = 100_000
#: HNSW is rebuilt (in the background) when tombstones exceed this share of its nodes.
COMPACT_FRACTION = 0.2


@dataclass(frozen=True)
class IndexConfig:
    """Index type and build/search parameters (``None`` = derived from the size).

    ``ef_search`` / ``nprobe`` / ``rerank`` are search-time defaults and can be
    overridden per call; the others take effect at the next (re)build.
    """

    index_type: str = "auto"
    auto_threshold: int = AUTO_THRESHOLD
    hnsw_m: int = 16
    ef_construction: int = 80
    ef_search: int = 96
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None
    rerank: int = 4

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValidationError(
                f"index type must be one of {', '.join(INDEX_TYPES)}; got {self.index_type!r}"
            )
        for name in ("auto_threshold", "hnsw_m", "ef_construction", "ef_search", "rerank"):
            _positive(name, getattr(self, name))
        for name in ("nlist", "nprobe", "pq_m"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))

    # -- (de)serialisation -------------------------------------------------------
    def to_json(self) -> str:
        """Stable JSON for the ``meta`` table."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "IndexConfig":
        """Settings stored by :meth:`to_json`; unknown keys are ignored (newer writers)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def updated(self, **changes: Any) -> "IndexConfig":
        """Copy with ``changes`` applied (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- derived values ------------------------------------------------------------
    def kind_for(self, live: int) -> str:
        """The concrete index kind to use for ``live`` vectors."""
        if self.index_type != "auto":
            return self.index_type
        return "hnsw" if live > self.auto_threshold else "flat"

    def nlist_for(self, n: int) -> int:
        """IVF list count: ~2 sqrt(n), at least 1, and at most n / 39 (FAISS' training rule)."""
        if self.nlist is not None:
            want = self.nlist
        else:
            want = int(2 * math.sqrt(max(n, 1)))
        return max(1, min(want, max(1, n // 39)))

    def nprobe_for(self, nlist: int) -> int:
        """Default lists probed per query: nlist/32 (at least 8), capped by nlist."""
        if self.nprobe is not None:
            return min(self.nprobe, nlist)
        return min(nlist, max(8, nlist // 32))

    def pq_m_for(self, dim: int) -> int:
        """PQ sub-quantisers: ``pq_m`` if it divides dim, else the largest divisor of dim <= dim/4."""
        want = self.pq_m if self.pq_m is not None else max(1, dim // 4)
        for m in range(min(want, dim), 0, -1):
            if dim % m == 0:
                return m
        return 1


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValidationError(f"{name} must be an integer >= 1; got {value!r}")


__all__ = ["AUTO_THRESHOLD", "COMPACT_FRACTION", "INDEX_TYPES", "KINDS", "IndexConfig"]
