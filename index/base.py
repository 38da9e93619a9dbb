"""The backend-neutral vector-store API the rest of fewshot codes against.

``VectorStore`` fixes the contract (names, shapes, score convention) so that a
second backend (e.g. Milvus) can be plugged in behind ``create_store`` /
``open_store`` without touching the callers.

Score convention: higher is better. For ``metric="cosine"`` the score is the
cosine similarity (vectors and queries are L2-normalised). For ``metric="l2"``
the score is the *negative squared* L2 distance.

The public write methods are template methods: argument checks common to
every backend run here, once, and then a backend hook (``_insert``,
``_remove_ids``, ``_rewrite``, ...) does the storage work. That is what keeps
the backends accepting and refusing exactly the same inputs.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ContextManager, Protocol, Self

import numpy as np

from .blobs import require_blobs
from .errors import ConflictError, RecordNotFoundError, RecordsChangedError, StoreError, ValidationError
from .prototypes import rank_classes
from .types import METRICS, ClassMatches, Hit, Record
from .validation import (
    prepare_vectors,
    validate_extra,
    validate_ids,
    validate_k,
    validate_label,
    validate_labels,
    validate_metadata,
    validate_temperature,
)
from .vector_index import exact_scores


def check_expect(extra: dict[str, Any], expect: dict[str, Any] | None, where: object) -> None:
    """Raise :class:`ConflictError` when a stored ``extra`` field differs from the caller's expectation."""
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


class WriteView(Protocol):
    """What :meth:`VectorStore.add` reads under the writer lock before inserting."""

    extra: dict[str, Any]
    dim: int
    metric: str


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
    _closed: bool
    _readonly: bool

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

        The vectors are checked against the dim and metric read under the
        lock, so a concurrent reindex to another dim cannot slip in between.
        """
        expect = validate_extra(expect)
        with self._writer() as st:
            check_expect(st.extra, expect, self.path)
            vecs = prepare_vectors(vectors, st.dim, st.metric)
            labs = validate_labels(labels, len(vecs))
            metas = validate_metadata(metadata, len(vecs))
            self._check_batch(labs, metas)
            if len(vecs) == 0:
                return np.zeros(0, dtype=np.int64)
            require_blobs(self.path, metadata or ())
            return self._insert(st, vecs, labs, metas)

    def remove(self, ids: Sequence[int]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were removed."""
        wanted = validate_ids(ids)
        if len(wanted) == 0:
            return 0
        return self._remove_ids(wanted)

    def remove_label(self, label: str) -> int:
        """Delete every record of ``label`` (its prototype goes too). Returns how many were removed."""
        return self._remove_label(validate_label(label))

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
        effort for this call; exact indexes ignore them. How a label filter
        is answered is up to the backend's ``_search`` (see its docstring).
        """
        return self._search(queries, k, labels, ef_search, nprobe)

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

        ``ids`` must list every record exactly once, so a reindex can never
        leave a mix of old- and new-encoder vectors. ``fill(records) ->
        vectors`` embeds, under the writer lock, records added since the
        caller listed them (see :func:`cover_records`), so a reindex
        completes while other processes keep adding; without it such a
        difference raises RecordsChangedError. ``dim`` changes the
        dimension; ``extra`` is merged into the stored extra fields (like
        :meth:`set_extra`). Returns how many records were rewritten.
        """
        wanted = validate_ids(ids)
        extra_update = validate_extra(extra)
        return self._rewrite(wanted, vectors, dim, extra_update, fill)

    def set_extra(self, **fields: Any) -> None:
        """Merge ``fields`` into ``extra`` (encoder name, fingerprint, ...) and commit."""
        self._set_extra(validate_extra(fields))

    def get(self, ids: Sequence[int]) -> list[Record]:
        """Records for ``ids`` in the given order; RecordNotFoundError for an unknown id."""
        wanted = validate_ids(ids)
        rows = self._rows_by_id(wanted)
        missing = [int(i) for i in wanted if int(i) not in rows]
        if missing:
            raise RecordNotFoundError(
                f"no record with id {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + f" in {self.path}; it may have been removed"
            )
        return [self._record_of(rows[int(i)]) for i in wanted]

    @property
    def readonly(self) -> bool:
        """True when opened with ``readonly=True`` (writes raise StoreError)."""
        return self._readonly

    # ---------------------------------------------------------------- backend hooks

    @abc.abstractmethod
    def _writer(self) -> ContextManager[WriteView]:
        """Hold the writer lock; yield the current settings (``extra``, ``dim``, ``metric``)."""

    def _check_batch(self, labels: list[str], metadata: list[str]) -> None:
        """Backend limits on one batch of validated labels and metadata JSON (none by default)."""

    @abc.abstractmethod
    def _insert(self, st: Any, vecs: np.ndarray, labels: list[str], metadata: list[str]) -> np.ndarray:
        """Store a validated, non-empty batch under the lock held by :meth:`_writer`; returns the ids."""

    @abc.abstractmethod
    def _remove_ids(self, ids: np.ndarray) -> int:
        """Delete the records of these validated ids (unknown ones ignored); returns how many went."""

    @abc.abstractmethod
    def _remove_label(self, label: str) -> int:
        """Delete every record of this validated label; returns how many went."""

    @abc.abstractmethod
    def _search(self, queries: np.ndarray, k: int, labels: Sequence[str] | None,
                ef_search: int | None, nprobe: int | None) -> list[list[Hit]]:
        """:meth:`search`; the backend validates ``k`` and ``labels`` (see ``common.label_filter``)."""

    @abc.abstractmethod
    def _rewrite(self, ids: np.ndarray, vectors: np.ndarray, dim: int | None, extra: dict[str, Any],
                 fill: Any) -> int:
        """:meth:`rewrite_vectors` with validated ids and extra fields (see ``common.check_rewrite``)."""

    @abc.abstractmethod
    def _rows_by_id(self, ids: np.ndarray) -> dict[int, Any]:
        """id -> stored row for the ids found among these validated ones (missing ids left out)."""

    @abc.abstractmethod
    def _record_of(self, row: Any) -> Record:
        """A backend row as a :class:`Record`."""

    @abc.abstractmethod
    def _set_extra(self, update: dict[str, Any]) -> None:
        """Merge validated fields into ``extra`` and commit."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store for {self.path} is closed; open it again")

    def _check_writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise StoreError(f"{self.path} was opened read-only; open it with readonly=False to write")

    @abc.abstractmethod
    def search_prototypes(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """k nearest class prototypes per query, best first (``Hit.id == -1``)."""

    def top_classes(self, queries: np.ndarray, k: int = 5, *,
                    temperature: float | None = None) -> ClassMatches:
        """The k best class prototypes per query, as arrays (see :class:`ClassMatches`).

        Backends override this with a faster path; this default ranks the
        output of :meth:`prototypes` (exact, any backend).
        """
        k = validate_k(k)
        temperature = validate_temperature(temperature)
        q = prepare_vectors(queries, self.dim, self.metric, what="queries")
        labels, protos = self.prototypes()
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
    def records(self, label: str | None = None) -> Iterator[Record]:
        """All records (optionally of one label) in id order, streamed."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Write derived files (only needed with ``autosave=False``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush if needed and release resources."""

    @abc.abstractmethod
    def verify(self) -> list[str]:
        """Problems found in the index; ``[]`` when healthy."""

    def repair(self) -> list[str]:
        """Rebuild derived parts from the records; returns the problems fixed.

        That is, what ``verify`` reported before and no longer does: problems
        in the records themselves cannot be repaired and stay in ``verify()``.
        """
        self._check_writable()
        before = self.verify()
        self._rebuild_derived()
        after = self.verify()
        return [p for p in before if p not in after]

    @abc.abstractmethod
    def _rebuild_derived(self) -> None:
        """Recompute what :meth:`repair` may rewrite (class sums, caches) from the records."""

    @property
    def backend(self) -> str:
        """Backend name as recorded in the manifest (``"faiss"``, ``"milvus"``)."""
        return type(self).__name__.lower()

    def index_info(self) -> dict[str, Any]:
        """What indexes the vectors (type, kind, sizes, parameters); backend-specific keys."""
        return {}

    def set_index_type(self, index_type: str | None = None, *, wait: bool = True, **params: Any) -> None:
        """Switch the index type / parameters (``auto|flat|hnsw|ivf|ivfpq``; ``ef_search``, ``nprobe``, ...)."""
        raise StoreError(f"{type(self).__name__} cannot change its index type")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["METRICS", "ClassMatches", "Hit", "Record", "StoreSnapshot", "VectorStore", "WriteView",
           "check_expect", "cover_records"]
