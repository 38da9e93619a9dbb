"""FaissStore: the local, single-directory implementation of VectorStore.

SQLite (``meta.sqlite``) holds the truth; FAISS files are caches named by
generation and listed with checksums in ``manifest.json``. Writers serialise on
a directory lock and commit each write as one SQLite transaction, then update
the in-memory FAISS indexes and (with ``autosave``) the cache files. Readers
take no lock: before each read they compare the SQLite generation with the one
they loaded and reload if another process wrote in between.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from . import faiss_util
from .base import METRICS, Hit, Record, VectorStore
from .cache_files import load_cached, remove_stale, write_caches
from .checks import class_problems, manifest_problems, vector_problems
from .errors import (
    CorruptIndexError,
    LockTimeoutError,
    NotAnIndexError,
    RecordNotFoundError,
    StoreError,
    ValidationError,
)
from .layout import FORMAT_VERSION, LOCK_NAME, MANIFEST_NAME, META_NAME, TMP_SUFFIX
from .locking import DirLock
from .manifest import (
    ManifestUnreadable,
    build_manifest,
    check_format_version,
    read_manifest,
    write_manifest,
)
from .prototypes import PrototypeTable
from .sqlite_meta import MetaDB
from .validation import (
    prepare_vectors,
    validate_dim,
    validate_extra,
    validate_ids,
    validate_k,
    validate_label,
    validate_labels,
    validate_metadata,
    validate_metric,
    validate_timeout,
)

BACKEND = "faiss"
_PAGE = 512  # rows per SQLite page when streaming records


def is_index_dir(path: str | Path) -> bool:
    """True if ``path`` is a directory holding a fewshot index (manifest or database)."""
    p = Path(path)
    return p.is_dir() and ((p / MANIFEST_NAME).is_file() or (p / META_NAME).is_file())


@dataclass
class _State:
    """Everything loaded for one generation; replaced wholesale on reload."""

    generation: int
    dim: int
    metric: str
    extra: dict[str, Any]
    backend: str
    created: float
    count: int
    vectors: faiss.IndexIDMap2
    protos: PrototypeTable
    from_files: bool  # both FAISS indexes came from valid cache files


class FaissStore(VectorStore):
    """Exact (flat) FAISS vector store persisted in one directory.

    Use :meth:`create` or :meth:`open`; the constructor is internal.
    """

    def __init__(self, path: Path, db: MetaDB, *, readonly: bool, lock_timeout: float,
                 autosave: bool) -> None:
        self.path = path
        self._db = db
        self._readonly = readonly
        self._lock_timeout = float(lock_timeout)
        self._autosave = autosave
        self._mutex = threading.RLock()
        self._state: _State | None = None
        self._dirty = False  # committed writes whose cache files are not written yet
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        metric: str = "cosine",
        extra: dict[str, Any] | None = None,
        *,
        exist_ok: bool = False,
        lock_timeout: float = 10.0,
        autosave: bool = True,
    ) -> "FaissStore":
        """Create a new index directory (parents too) and return it opened for writing.

        A non-empty directory that is not an index is refused so that a typo'd
        path never mixes index files into unrelated data. With ``exist_ok`` an
        existing index with the same dim and metric is opened instead.
        """
        dim = validate_dim(dim)
        metric = validate_metric(metric)
        extra = validate_extra(extra)
        lock_timeout = validate_timeout(lock_timeout)
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValidationError(f"{path} is a file; choose a directory path for the index")
        path.mkdir(parents=True, exist_ok=True)
        if not is_index_dir(path):
            leftovers = [p.name for p in path.iterdir()
                         if p.name != LOCK_NAME and not p.name.endswith(TMP_SUFFIX)]
            if leftovers:
                raise StoreError(
                    f"refusing to create an index in {path}: the directory is not empty "
                    f"(e.g. {leftovers[0]!r}) and is not a fewshot index; choose a new or empty directory"
                )
        with DirLock(path, lock_timeout):
            if not is_index_dir(path):
                db = MetaDB(path / META_NAME, busy_timeout=lock_timeout)
                try:
                    db.initialise(dim=dim, metric=metric, extra=extra, backend=BACKEND,
                                  format_version=FORMAT_VERSION, created=time.time())
                    store = cls(path, db, readonly=False, lock_timeout=lock_timeout, autosave=autosave)
                    store._state = store._load_state()
                    store._persist()
                except BaseException:
                    db.close()
                    raise
                return store
        if not exist_ok:
            raise StoreError(f"{path} already holds a fewshot index; open it instead (or pass exist_ok=True)")
        store = cls.open(path, lock_timeout=lock_timeout, autosave=autosave)
        if store.dim != dim or store.metric != metric:
            found = f"dim {store.dim}, metric {store.metric}"
            store.close()
            raise ValidationError(
                f"the existing index at {path} has {found}, not dim {dim}, metric {metric}; "
                "use another directory or reindex"
            )
        return store

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool = False,
        lock_timeout: float = 10.0,
        autosave: bool = True,
    ) -> "FaissStore":
        """Open an existing index.

        A writer (``readonly=False``) briefly takes the lock to remove leftovers
        of crashed writers and to write back caches it had to rebuild. With
        ``autosave=False`` the FAISS cache files are only written by
        :meth:`flush` / :meth:`close` (SQLite is still committed per write).
        """
        path = Path(path)
        lock_timeout = validate_timeout(lock_timeout)
        if not path.is_dir():
            raise NotAnIndexError(
                f"{path} is not a fewshot index (no such directory); create one with `fewshot init`"
            )
        try:
            manifest = read_manifest(path)
        except ManifestUnreadable:
            manifest = None  # derived file; SQLite decides below, verify() reports it
        if manifest is not None:
            check_format_version(manifest["format_version"], path)
        if not (path / META_NAME).is_file():
            if manifest is None and not (path / MANIFEST_NAME).exists():
                raise NotAnIndexError(
                    f"{path} is not a fewshot index (no manifest.json); create one with `fewshot init`"
                )
            raise CorruptIndexError(
                f"{path} has a manifest but no {META_NAME} (the records); restore the index from a backup"
            )
        db = MetaDB(path / META_NAME, busy_timeout=lock_timeout)
        try:
            db.check(full=True)
            check_format_version(db.read_meta().format_version, path)
            store = cls(path, db, readonly=readonly, lock_timeout=lock_timeout, autosave=autosave)
            if readonly:
                store._state = store._load_state()
            else:
                with store._lock():
                    store._state = store._load_state()
                    if store._needs_persist(store._state):
                        store._persist()
                    else:
                        remove_stale(path, store._state.generation)
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        """Write pending cache files (writers) and close the database (idempotent)."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self._dirty and not self._readonly:
                    self.flush()
            except LockTimeoutError:
                # Everything is committed in SQLite; only the caches are
                # behind, and the next open rebuilds them. Do not fail close()
                # (it often runs in __exit__ while another error propagates).
                warnings.warn(
                    f"{self.path}: another writer holds the lock; FAISS cache files were not "
                    "written and will be rebuilt on the next open",
                    RuntimeWarning,
                    stacklevel=2,
                )
            finally:
                self._closed = True
                self._db.close()

    def flush(self) -> None:
        """Write the FAISS cache files and manifest for the current generation.

        Only needed with ``autosave=False``; harmless otherwise.
        """
        self._check_open()
        if self._readonly:
            return
        with self._mutex, self._lock():
            if self._state is None or self._db.generation() != self._state.generation:
                self._state = self._load_state()
            self._persist()

    def __repr__(self) -> str:
        state = self._state
        where = f"{self.path}"
        if state is None:
            return f"FaissStore({where!r})"
        return (f"FaissStore({where!r}, dim={state.dim}, metric={state.metric!r}, "
                f"count={state.count}, generation={state.generation})")

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """Vector dimension (may change after ``rewrite_vectors``)."""
        with self._read() as st:
            return st.dim

    @property
    def metric(self) -> str:
        """``"cosine"`` or ``"l2"``."""
        with self._read() as st:
            return st.metric

    @property
    def extra(self) -> dict[str, Any]:
        """Copy of the free-form fields set by the caller."""
        with self._read() as st:
            return json.loads(json.dumps(st.extra))

    @property
    def generation(self) -> int:
        """Number of committed writes so far (as seen on disk now)."""
        with self._read() as st:
            return st.generation

    @property
    def readonly(self) -> bool:
        """True when opened with ``readonly=True`` (writes raise StoreError)."""
        return self._readonly

    # ------------------------------------------------------------------ writes

    def add(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> np.ndarray:
        """Store vectors with their labels (and optional metadata dicts); returns int64 ids."""
        with self._write() as st:
            vecs = prepare_vectors(vectors, st.dim, st.metric)
            labs = validate_labels(labels, len(vecs))
            metas = validate_metadata(metadata, len(vecs))
            if len(vecs) == 0:
                return np.zeros(0, dtype=np.int64)
            deltas = _class_deltas(labs, vecs, st.dim)
            with self._db.write():
                changed = self._db.apply_class_deltas(deltas, st.dim)
                ids = self._db.insert_records(labs, vecs, metas, time.time())
                generation = self._db.bump_generation()
            with self._apply_in_memory():
                st.vectors.add_with_ids(vecs, ids)
                st.protos.apply(changed)
                st.count += len(ids)
                st.generation = generation
            self._after_commit()
            return ids

    def remove(self, ids: Sequence[int]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were removed."""
        wanted = validate_ids(ids)
        if len(wanted) == 0:
            return 0
        with self._write() as st:
            return self._remove_rows(st, wanted)

    def remove_label(self, label: str) -> int:
        """Delete every record of ``label`` (its prototype goes too). Returns the count removed."""
        label = validate_label(label)
        with self._write() as st:
            with self._db.read():
                ids = self._db.ids_for_labels([label])
            if len(ids) == 0:
                return 0
            return self._remove_rows(st, ids)

    def _remove_rows(self, st: _State, ids: np.ndarray) -> int:
        with self._db.write():
            rows = self._db.fetch_records(ids, st.dim)
            if not rows:
                return 0
            found = np.array(sorted(rows), dtype=np.int64)
            labs = [rows[i].label for i in found]
            vecs = np.stack([rows[i].vector for i in found])
            deltas = {label: (-c, -s) for label, (c, s) in _class_deltas(labs, vecs, st.dim).items()}
            changed = self._db.apply_class_deltas(deltas, st.dim)
            self._db.delete_records(found)
            generation = self._db.bump_generation()
        with self._apply_in_memory():
            st.vectors.remove_ids(found)
            st.protos.apply(changed)
            st.count -= len(found)
            st.generation = generation
        self._after_commit()
        return len(found)

    def rewrite_vectors(
        self,
        ids: Sequence[int],
        vectors: np.ndarray,
        *,
        dim: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Replace the vectors of *all* records in one transaction (reindexing).

        ``ids`` must list every record exactly once, so a reindex can never
        leave a mix of old- and new-encoder vectors. ``dim`` changes the
        dimension; ``extra`` is merged into the stored extra fields (like
        :meth:`set_extra`). Class sums are recomputed.
        """
        wanted = validate_ids(ids)
        extra_update = validate_extra(extra)
        with self._write() as st:
            new_dim = validate_dim(dim) if dim is not None else st.dim
            vecs = prepare_vectors(vectors, new_dim, st.metric)
            if len(vecs) != len(wanted):
                raise ValidationError(f"got {len(wanted)} ids but {len(vecs)} vectors; pass one vector per id")
            if len(np.unique(wanted)) != len(wanted):
                raise ValidationError("ids passed to rewrite_vectors contain duplicates; pass each record once")
            with self._db.write():
                existing = self._db.all_ids()
                missing = np.setdiff1d(existing, wanted)
                unknown = np.setdiff1d(wanted, existing)
                if len(missing) or len(unknown):
                    raise ValidationError(
                        f"rewrite_vectors must cover every record exactly once: {len(missing)} record(s) "
                        f"missing (e.g. {missing[:3].tolist()}), {len(unknown)} unknown id(s) "
                        f"(e.g. {unknown[:3].tolist()}); re-read records() and retry"
                    )
                self._db.update_vectors(wanted, vecs)
                if new_dim != st.dim:
                    self._db.set_meta("dim", str(new_dim))
                self._db.replace_classes(self._db.recompute_classes(new_dim))
                if extra_update:
                    self._db.set_extra({**st.extra, **extra_update})
                self._db.bump_generation()
            # Everything changed: rebuild the in-memory state from what was committed.
            with self._apply_in_memory():
                self._state = self._load_state(use_files=False)
            self._after_commit()

    def set_extra(self, **fields: Any) -> None:
        """Merge ``fields`` into the extra fields (encoder name, fingerprint, ...) and commit."""
        update = validate_extra(fields)
        with self._write() as st:
            merged = {**st.extra, **update}
            with self._db.write():
                self._db.set_extra(merged)
                generation = self._db.bump_generation()
            st.extra = merged
            st.generation = generation
            self._after_commit()

    # ------------------------------------------------------------------ reads

    def search(
        self, queries: np.ndarray, k: int, labels: Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """k nearest records per query, best first (fewer if the store holds fewer).

        ``labels`` restricts the search to records of those labels (exact).
        Scores: cosine similarity for ``cosine``; negative squared L2 distance
        for ``l2`` (so higher is always better).
        """
        k = validate_k(k)
        wanted = None if labels is None else _label_filter(labels)
        with self._read() as st:
            q = prepare_vectors(queries, st.dim, st.metric, what="queries")
            if len(q) == 0:
                return []
            subset = None
            if wanted is not None:
                subset = self._db.ids_for_labels(wanted)
                if len(subset) == 0:
                    return [[] for _ in range(len(q))]
            scores, ids = faiss_util.search(st.vectors, q, k, st.metric, subset)
            info = self._db.fetch_hit_info(ids[ids >= 0].tolist())
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

    def search_prototypes(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """k nearest class prototypes per query, best first.

        ``Hit.id`` is -1 (a class, not a record), ``Hit.metadata`` is
        ``{"count": n}`` (examples in that class).
        """
        k = validate_k(k)
        with self._read() as st:
            q = prepare_vectors(queries, st.dim, st.metric, what="queries")
            if len(q) == 0:
                return []
            scores, cids = faiss_util.search(st.protos.index, q, k, st.metric)
            by_cid = dict(st.protos.by_cid)
            counts = {label: c for label, (_cid, c) in st.protos.by_label.items()}
        out: list[list[Hit]] = []
        for row_scores, row_cids in zip(scores, cids):
            hits = []
            for score, cid in zip(row_scores.tolist(), row_cids.tolist()):
                label = by_cid.get(cid)
                if cid < 0 or label is None:
                    continue
                hits.append(Hit(-1, label, float(score), {"count": counts[label]}))
            out.append(hits)
        return out

    def prototypes(self) -> tuple[list[str], np.ndarray]:
        """(labels sorted, float32 [n_labels, dim]) prototypes (unit length for cosine)."""
        with self._read() as st:
            return st.protos.vectors()

    def count(self) -> int:
        """Number of stored records."""
        with self._read() as st:
            return st.count

    def labels(self) -> dict[str, int]:
        """label -> record count, sorted by label."""
        with self._read() as st:
            return st.protos.counts()

    def get(self, ids: Sequence[int]) -> list[Record]:
        """Records for ``ids`` in the given order; RecordNotFoundError for an unknown id."""
        wanted = validate_ids(ids)
        with self._read() as st:
            rows = self._db.fetch_records(wanted.tolist(), st.dim)
        missing = [int(i) for i in wanted if int(i) not in rows]
        if missing:
            raise RecordNotFoundError(
                f"no record with id {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + f" in {self.path}; it may have been removed"
            )
        return [_to_record(rows[int(i)]) for i in wanted]

    def records(self, label: str | None = None) -> Iterator[Record]:
        """All records (or those of ``label``) in id order, streamed page by page.

        Each page is a consistent snapshot; writes committed while iterating
        may or may not be seen (rewrite_vectors checks coverage, so a reindex
        based on a stale listing fails loudly instead of losing records).
        """
        if label is not None:
            label = validate_label(label)
        last = -(2**63)
        while True:
            with self._read() as st:
                rows = self._db.record_page(last, _PAGE, label, st.dim)
            if not rows:
                return
            for row in rows:
                yield _to_record(row)
            last = rows[-1].id

    # ------------------------------------------------------------------ maintenance

    def verify(self) -> list[str]:
        """Check the index against its records; returns problems (``[]`` when healthy).

        Checks: SQLite integrity, manifest fields and checksums, cache files vs
        records (count, ids), the in-memory index, stored vectors, and every
        class sum/count against a recomputation from the records.
        """
        self._check_open()
        problems: list[str] = []
        with self._mutex, self._db.read():
            problems += self._db.integrity_problems()
            meta = self._db.read_meta()
            count = self._db.count()
            record_ids = self._db.all_ids()
            problems += manifest_problems(self.path, meta.generation, meta.dim, meta.metric,
                                          count, record_ids)
            state = self._state
            if state is not None and state.generation == meta.generation and state.vectors.ntotal != count:
                problems.append(f"in-memory FAISS index holds {state.vectors.ntotal} vectors but "
                                f"meta.sqlite has {count} records; reopen the store")
            problems += vector_problems(self._db, meta.dim, meta.metric)
            problems += class_problems(self._db, meta.dim)
        return problems

    def repair(self) -> list[str]:
        """Rebuild derived parts (class sums, FAISS files, manifest) from the records.

        Returns the problems that ``verify`` reported before and no longer does.
        Problems in the records themselves (SQLite damage) cannot be repaired
        here and remain in ``verify()``.
        """
        self._check_writable()
        before = self.verify()
        with self._mutex, self._lock():
            meta = self._db.read_meta()
            with self._db.write():
                recomputed = self._db.recompute_classes(meta.dim)
                if class_problems(self._db, meta.dim, recomputed):
                    self._db.replace_classes(recomputed)
                    self._db.bump_generation()
            self._state = self._load_state(use_files=False)
            self._persist()
        after = self.verify()
        return [p for p in before if p not in after]

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store for {self.path} is closed; open it again")

    def _check_writable(self) -> None:
        self._check_open()
        if self._readonly:
            raise StoreError(f"{self.path} was opened read-only; open it with readonly=False to write")

    def _lock(self) -> DirLock:
        return DirLock(self.path, self._lock_timeout)

    @contextlib.contextmanager
    def _read(self) -> Iterator[_State]:
        """Hold the object mutex and a SQLite read snapshot; reload if another writer committed."""
        self._check_open()
        with self._mutex, self._db.read():
            if self._state is None or self._db.generation() != self._state.generation:
                self._state = self._load_state()
            yield self._state

    @contextlib.contextmanager
    def _write(self) -> Iterator[_State]:
        """Hold the mutex and the directory lock, with state reloaded to the latest generation."""
        self._check_writable()
        with self._mutex, self._lock():
            if self._state is None or self._db.generation() != self._state.generation:
                self._state = self._load_state()
            yield self._state

    @contextlib.contextmanager
    def _apply_in_memory(self) -> Iterator[None]:
        """After a commit: if mirroring it in memory fails, force a reload instead of serving stale data."""
        try:
            yield
        except BaseException:
            self._state = None
            raise

    def _after_commit(self) -> None:
        self._dirty = True
        if not self._autosave:
            return
        try:
            self._persist()
        except OSError as exc:
            # The write is committed in SQLite; only the cache failed. Do not
            # raise (a retry would duplicate the write); the next open or
            # flush rebuilds the cache.
            warnings.warn(
                f"{self.path}: write committed but FAISS cache files could not be written ({exc}); "
                "they will be rebuilt on the next open or flush",
                RuntimeWarning,
                stacklevel=3,
            )

    def _load_state(self, *, use_files: bool = True) -> _State:
        """Load one consistent generation: cache files when valid, else rebuild from SQLite."""
        with self._db.read():
            meta = self._db.read_meta()
            check_format_version(meta.format_version, self.path)
            if meta.metric not in METRICS or meta.dim < 1:
                raise CorruptIndexError(
                    f"{self.path}/{META_NAME} has invalid settings (dim={meta.dim}, metric={meta.metric!r}); "
                    "restore the index from a backup"
                )
            count = self._db.count()
            classes = self._db.classes(meta.dim)
            vectors = protos = None
            if use_files:
                vectors, protos = load_cached(self.path, meta.generation, meta.dim, meta.metric, count,
                                              {c.cid for c in classes})
            from_files = vectors is not None and protos is not None
            if vectors is None:
                vectors = faiss_util.new_index(meta.dim, meta.metric)
                for ids, vecs, _labels in self._db.iter_vectors(meta.dim):
                    vectors.add_with_ids(vecs, ids)
            table = PrototypeTable.build(classes, meta.dim, meta.metric, protos)
        return _State(meta.generation, meta.dim, meta.metric, meta.extra, meta.backend, meta.created,
                      count, vectors, table, from_files)

    def _needs_persist(self, st: _State) -> bool:
        if not st.from_files:
            return True
        try:
            manifest = read_manifest(self.path)
        except ManifestUnreadable:
            return True
        if manifest is None:
            return True
        expected = self._manifest_for(st, files=manifest.get("files", {}))
        volatile = ("created", "updated")
        return any(manifest.get(key) != value for key, value in expected.items() if key not in volatile)

    def _manifest_for(self, st: _State, files: dict[str, str]) -> dict[str, Any]:
        return build_manifest(
            dim=st.dim, metric=st.metric, backend=st.backend, generation=st.generation,
            count=st.count, n_labels=len(st.protos.by_label), extra=st.extra, files=files,
            created=st.created, updated=time.time(),
        )

    def _persist(self) -> None:
        """Write cache files for the current generation, then the manifest, then drop stale files.

        Caller holds the directory lock. The order means a crash at any point
        leaves a manifest that either names valid files or is outdated (and is
        then ignored in favour of SQLite).
        """
        st = self._state
        assert st is not None
        files = write_caches(self.path, st.generation, st.vectors, st.protos.index)
        write_manifest(self.path, self._manifest_for(st, files))
        remove_stale(self.path, st.generation)
        self._dirty = False


# ---------------------------------------------------------------------- helpers


def _class_deltas(labels: Sequence[str], vecs: np.ndarray, dim: int) -> dict[str, tuple[int, np.ndarray]]:
    """label -> (count, float64 sum of vectors) for a batch."""
    out: dict[str, tuple[int, np.ndarray]] = {}
    wide = vecs.astype(np.float64)
    for i, label in enumerate(labels):
        count, vsum = out.get(label, (0, np.zeros(dim, dtype=np.float64)))
        out[label] = (count + 1, vsum + wide[i])
    return out


def _label_filter(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise ValidationError("labels must be a list of label strings, e.g. labels=['cat']; got a single str")
    try:
        items = list(labels)
    except TypeError:
        raise ValidationError(f"labels must be a list of label strings; got {type(labels).__name__}") from None
    return [validate_label(label) for label in items]


def _to_record(row: Any) -> Record:
    return Record(row.id, row.label, json.loads(row.metadata), row.vector, row.created)


__all__ = ["FaissStore", "is_index_dir"]
