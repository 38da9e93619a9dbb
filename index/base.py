"""The backend-neutral vector-store API the rest of fewshot codes against.

``VectorStore`` fixes the contract (names, shapes, score convention) so that a
second backend (e.g. Milvus) can be plugged in behind ``create_store`` /
``open_store`` without touching the callers.

Score convention: higher is better. For ``metric="cosine"`` the score is the
cosine similarity (vectors and queries are L2-normalised). For ``metric="l2"``
the score is the *negative squared* L2 distance.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

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


def check_expect(extra: dict[str, Any], expect: dict[str, Any] | None, where: object) -> None:
    """Raise :class:`ConflictError` when a stored ``extra`` field differs from the caller's expectation."""
    from .errors import ConflictError

    for key, value in (expect or {}).items():
        found = extra.get(key)
        if found != value:
            raise ConflictError(
                f"{where}: {key} is now {found!r}, not {value!r}: the index changed (e.g. it was reindexed) "
                "since this write was prepared; prepare it again against the current index",
                field=key, expected=value, found=found)


def cover_records(existing: np.ndarray, wanted: np.ndarray, vecs: np.ndarray, records_of: Any,
                  fill: Any, dim: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The (ids, vectors) of a ``rewrite_vectors`` that cover exactly the ``existing`` records.

    Called under the writer lock. Ids removed since the caller listed them are
    dropped; records added since are passed (``records_of(ids)``, as
    :class:`Record`) to ``fill``, which returns their new vectors. Without
    ``fill`` any difference raises :class:`RecordsChangedError`.
    """
    from .errors import RecordsChangedError, ValidationError
    from .validation import prepare_vectors

    missing, unknown = np.setdiff1d(existing, wanted), np.setdiff1d(wanted, existing)
    if not len(missing) and not len(unknown):
        return wanted, vecs
    if fill is None:
        raise RecordsChangedError(
            f"rewrite_vectors must cover every record exactly once: {len(missing)} record(s) missing "
            f"(e.g. {missing[:3].tolist()}), {len(unknown)} unknown id(s) (e.g. {unknown[:3].tolist()}); "
            "re-read records() and retry")
    keep = np.isin(wanted, existing)
    wanted, vecs = wanted[keep], vecs[keep]
    if len(missing):
        more = prepare_vectors(fill(records_of(missing)), dim, metric)
        if len(more) != len(missing):
            raise ValidationError(f"fill returned {len(more)} vectors for {len(missing)} records")
        wanted, vecs = np.concatenate([wanted, missing]), np.concatenate([vecs, more])
    return wanted, vecs


class StoreSnapshot:
    """Reads against one committed state of a store (see :meth:`VectorStore.snapshot`).

    ``extra`` is the ``extra`` fields of that state; ``top_classes`` and
    ``search`` answer from it. Valid only inside the ``with`` block.
    """

    def __init__(self, store: "VectorStore", extra: dict[str, Any]) -> None:
        self._store = store
        self.extra = extra

    def top_classes(self, queries: np.ndarray, k: int = 5, *, temperature: float | None = None) -> ClassMatches:
        """The k best class prototypes per query (see :meth:`VectorStore.top_classes`)."""
        return self._store.top_classes(queries, k, temperature=temperature)

    def search(self, queries: np.ndarray, k: int, labels: Sequence[str] | None = None,
               **params: Any) -> list[list[Hit]]:
        """k nearest records per query (see :meth:`VectorStore.search`)."""
        return self._store.search(queries, k, labels, **params)


class VectorStore(abc.ABC):
    """Abstract labelled vector store with exact search and class prototypes."""

    path: Path

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector dimension."""

    @property
    @abc.abstractmethod
    def metric(self) -> str:
        """``"cosine"`` or ``"l2"``."""

    @property
    @abc.abstractmethod
    def extra(self) -> dict[str, Any]:
        """Copy of the caller's free-form fields (encoder name, fingerprint, ...)."""

    @property
    @abc.abstractmethod
    def generation(self) -> int:
        """Counter bumped by every committed write; lets readers detect changes."""

    @abc.abstractmethod
    def add(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
        *,
        expect: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Store labelled vectors; returns their new int64 ids.

        ``expect`` maps ``extra`` fields to the values the caller prepared the
        vectors for (e.g. ``{"fingerprint": fp}`` of the encoder that embedded
        them). They are compared with the stored fields under the writer lock,
        in the same write, and a mismatch raises :class:`ConflictError` with
        nothing written: vectors of the encoder an index had before a
        concurrent reindex never land in the re-encoded index. A ``"blob"``
        key in a metadata dict names a stored example copy, which must still
        exist at commit (else :class:`MissingBlobError`).
        """

    @abc.abstractmethod
    def remove(self, ids: Sequence[int]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were removed."""

    @abc.abstractmethod
    def remove_label(self, label: str) -> int:
        """Delete every record of ``label``. Returns how many were removed."""

    @abc.abstractmethod
    def search(
        self,
        queries: np.ndarray,
        k: int,
        labels: Sequence[str] | None = None,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """k nearest records per query, best first, optionally restricted to ``labels``.

        ``ef_search`` (HNSW) / ``nprobe`` (IVF) override the index's search
        effort for this call; exact indexes ignore them.
        """

    @abc.abstractmethod
    def search_prototypes(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """k nearest class prototypes per query, best first (``Hit.id == -1``)."""

    def top_classes(self, queries: np.ndarray, k: int = 5, *,
                    temperature: float | None = None) -> ClassMatches:
        """The k best class prototypes per query, as arrays (see :class:`ClassMatches`).

        Backends override this with a faster path; this default ranks the
        output of :meth:`prototypes` (exact, any backend).
        """
        from .prototypes import rank_classes
        from .validation import prepare_vectors, validate_k, validate_temperature

        k = validate_k(k)
        temperature = validate_temperature(temperature)
        q = prepare_vectors(queries, self.dim, self.metric, what="queries")
        labels, protos = self.prototypes()
        from .vector_index import exact_scores

        scores = exact_scores(q, protos, self.metric) if len(labels) else np.zeros((len(q), 0), np.float32)
        return rank_classes(scores, np.asarray(labels, dtype=object), k, temperature)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["StoreSnapshot"]:
        """One committed state to read from: its ``extra`` fields and searches against it.

        What a reader needs to answer from one state when the encoder may
        change under it: compare ``snapshot.extra["fingerprint"]`` with the
        encoder that embedded the queries, re-embed if they differ, and search
        the same snapshot. This default (backends without snapshots) reads
        the store's current state for each call.
        """
        yield StoreSnapshot(self, self.extra)

    @abc.abstractmethod
    def prototypes(self) -> tuple[list[str], np.ndarray]:
        """(labels sorted, float32 array [n_labels, dim]) of class prototypes."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of stored records."""

    @abc.abstractmethod
    def labels(self) -> dict[str, int]:
        """label -> record count, sorted by label."""

    @abc.abstractmethod
    def get(self, ids: Sequence[int]) -> list[Record]:
        """Records for ``ids`` in the given order; unknown id -> StoreError."""

    @abc.abstractmethod
    def records(self, label: str | None = None) -> Iterator[Record]:
        """All records (optionally of one label) in id order, streamed."""

    @abc.abstractmethod
    def rewrite_vectors(
        self,
        ids: Sequence[int],
        vectors: np.ndarray,
        *,
        dim: int | None = None,
        extra: dict[str, Any] | None = None,
        fill: Any = None,
    ) -> int:
        """Replace the vectors of all records at once (re-encoding after an encoder change).

        ``fill(records) -> vectors`` embeds, under the writer lock, records
        added since the caller listed them (see :func:`cover_records`), so a
        reindex completes while other processes keep adding. Returns how
        many records were rewritten.
        """

    @abc.abstractmethod
    def set_extra(self, **fields: Any) -> None:
        """Merge ``fields`` into ``extra`` and commit."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Write derived files (only needed with ``autosave=False``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush if needed and release resources."""

    @abc.abstractmethod
    def verify(self) -> list[str]:
        """Problems found in the index; ``[]`` when healthy."""

    @abc.abstractmethod
    def repair(self) -> list[str]:
        """Rebuild derived parts from the records; returns what was fixed."""

    @property
    def backend(self) -> str:
        """Backend name as recorded in the manifest (``"faiss"``, ``"milvus"``)."""
        return type(self).__name__.lower()

    def index_info(self) -> dict[str, Any]:
        """What indexes the vectors (type, kind, sizes, parameters); backend-specific keys."""
        return {}

    def set_index_type(self, index_type: str | None = None, *, wait: bool = True, **params: Any) -> None:
        """Switch the index type / parameters (``auto|flat|hnsw|ivf|ivfpq``; ``ef_search``, ``nprobe``, ...)."""
        from .errors import StoreError

        raise StoreError(f"{type(self).__name__} cannot change its index type")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
