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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from . import records_sql
from .base import METRICS, ClassMatches, Hit, Record, StoreSnapshot, VectorStore, cover_records
from .blobs import BlobStore, blob_keys
from .cache_files import remove_stale
from .checkpoint import load_checkpoint, needs_checkpoint, write_checkpoint
from .index_config import COMPACT_FRACTION, IndexConfig
from .vector_index import VectorIndex, exact_scores
from .checks import class_problems, manifest_problems, vector_problems
from .common import (
    REBUILD_PARAMS,
    check_rewrite,
    check_same_shape,
    class_deltas,
    create_args,
    is_index_dir,
    label_filter,
    make_config,
    merged_config,
    refuse_existing,
    refuse_foreign_dir,
)
from .errors import (
    CorruptIndexError,
    LockTimeoutError,
    NotAnIndexError,
    StoreError,
    ValidationError,
)
from .layout import FORMAT_VERSION, MANIFEST_NAME, META_NAME
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
    prepare_queries,
    prepare_vectors,
    validate_dim,
    validate_k,
    validate_label,
    validate_temperature,
    validate_timeout,
)

BACKEND = "faiss"
_PAGE = 512  # rows per SQLite page when streaming records
#: A label filter matching at most this share of the live vectors is answered by an
#: exact scan of the matching ids: approximate indexes lose most of their recall
#: under selective filters (HNSW with a 1% filter finds ~2% of the true neighbours).
FILTER_EXACT_FRACTION = 0.5
#: meta.sqlite files up to this size get a full integrity check on every open.
QUICK_CHECK_MAX_BYTES = 64 << 20
#: Below this many vectors an approximate index is built synchronously on open.
SYNC_BUILD_MAX = 20_000
#: Changes replayed into an HNSW graph on open; more go to a flat side index.
HNSW_REPLAY_MAX = 2_000


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
    vectors: VectorIndex
    protos: PrototypeTable
    from_files: bool  # both FAISS indexes came from valid cache files
    epoch: int = 0  # meta ``vectors_epoch``: bumped when every vector is rewritten
    config: IndexConfig = field(default_factory=IndexConfig)
    base_generation: int = -1  # generation of the checkpoint files on disk (-1: none)
    max_id: int = 0  # largest record id reflected in ``vectors``
    pending: int = 0  # committed changes not yet in a checkpoint


class FaissStore(VectorStore):
    """FAISS vector store persisted in one directory (flat, HNSW, IVF or IVF-PQ).

    Use :meth:`create` or :meth:`open`; the constructor is internal. The index
    type is a stored setting (``index_type``, see :class:`IndexConfig`):
    ``auto`` is exact flat search until ``auto_threshold`` vectors, then HNSW
    built in a background thread while queries keep using the flat index.
    """

    def __init__(self, path: Path, db: MetaDB, *, readonly: bool, lock_timeout: float,
                 autosave: bool, mmap: bool = False) -> None:
        self.path = path
        self._db = db
        self._readonly = readonly
        self._lock_timeout = float(lock_timeout)
        self._autosave = autosave
        self._mmap = mmap
        self._mutex = threading.RLock()
        self._state: _State | None = None
        self._dirty = False  # committed writes whose cache files are not written yet
        self._closed = False
        self._builder: threading.Thread | None = None
        self._build_error: BaseException | None = None
        self._data_version: int | None = None

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
        index_type: str = "auto",
        index_params: dict[str, Any] | None = None,
    ) -> "FaissStore":
        """Create a new index directory (parents too) and return it opened for writing.

        A non-empty directory that is not an index is refused so that a typo'd
        path never mixes index files into unrelated data. With ``exist_ok`` an
        existing index with the same dim and metric is opened instead.
        ``index_type`` is ``auto`` (default), ``flat``, ``hnsw``, ``ivf`` or
        ``ivfpq``; ``index_params`` sets :class:`IndexConfig` fields
        (``ef_search``, ``nprobe``, ``hnsw_m``, ``auto_threshold``, ...).
        """
        path, dim, metric, extra, config = create_args(path, dim, metric, extra, index_type, index_params)
        lock_timeout = validate_timeout(lock_timeout)
        path.mkdir(parents=True, exist_ok=True)
        if not is_index_dir(path):
            refuse_foreign_dir(path)
        with DirLock(path, lock_timeout):
            if not is_index_dir(path):
                db = MetaDB(path / META_NAME, busy_timeout=lock_timeout)
                try:
                    db.initialise(dim=dim, metric=metric, extra=extra, backend=BACKEND,
                                  format_version=FORMAT_VERSION, created=time.time())
                    with db.write():
                        db.set_meta("index", config.to_json())
                    store = cls(path, db, readonly=False, lock_timeout=lock_timeout, autosave=autosave)
                    store._state = store._load_state()
                    store._persist()
                except BaseException:
                    db.close()
                    raise
                return store
        if not exist_ok:
            refuse_existing(path)
        return check_same_shape(cls.open(path, lock_timeout=lock_timeout, autosave=autosave), path, dim, metric)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool = False,
        lock_timeout: float = 10.0,
        autosave: bool = True,
        mmap: bool | None = None,
        durability: str = "full",
    ) -> "FaissStore":
        """Open an existing index.

        A writer (``readonly=False``) briefly takes the lock to remove leftovers
        of crashed writers and to write back caches it had to rebuild. With
        ``autosave=False`` the FAISS cache files are only written by
        :meth:`flush` / :meth:`close` (SQLite is still committed per write).
        ``mmap`` (default: on for read-only opens) memory-maps large vector
        files instead of reading them, so opening costs O(1) in their size.
        ``durability="normal"`` skips the fsync per committed write (SQLite
        ``synchronous=NORMAL`` in WAL mode): a killed process still loses
        nothing, a power cut may lose the last writes but never corrupts.
        """
        if durability not in ("full", "normal"):
            raise ValidationError(f"durability must be 'full' or 'normal'; got {durability!r}")
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
            # PRAGMA quick_check reads every page: ~1 s per 100 MB. Large indexes skip it on open
            # (verify() still runs it); a damaged header or schema is caught either way.
            db.check(full=_file_size(path / META_NAME) <= QUICK_CHECK_MAX_BYTES)
            if durability == "normal":
                db.conn.execute("PRAGMA synchronous=NORMAL")
            check_format_version(db.read_meta().format_version, path)
            store = cls(path, db, readonly=readonly, lock_timeout=lock_timeout, autosave=autosave,
                        mmap=readonly if mmap is None else bool(mmap) and readonly)
            if readonly:
                store._state = store._load_state()
            else:
                with store._lock():
                    store._state = store._load_state()
                    if store._needs_persist(store._state):
                        store._persist()
                    else:
                        remove_stale(path, store._state.base_generation)
                    if store._maybe_rebuild(store._state):
                        store._persist()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        """Write pending cache files (writers) and close the database (idempotent)."""
        try:
            self.wait_for_build()
        except StoreError as exc:  # the old index is still in use and saved; do not fail close()
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
        with self._mutex:
            if self._closed:
                return
            try:
                st = self._state
                if self._dirty and not self._readonly and (
                        st is None or not self._autosave or needs_checkpoint(st.vectors.ntotal, st.pending)):
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
                self._state = self._load_state(previous=self._state)
            self._persist()

    def __repr__(self) -> str:
        state = self._state
        where = f"{self.path}"
        if state is None:
            return f"FaissStore({where!r})"
        return (f"FaissStore({where!r}, dim={state.dim}, metric={state.metric!r}, "
                f"count={state.count}, generation={state.generation})")

    # ------------------------------------------------------------------ properties

    def _setting(self, name: str) -> Any:
        """One field of the latest committed state (reloaded first if another writer committed)."""
        with self._read() as st:
            return getattr(st, name)

    @property
    def dim(self) -> int:
        """Vector dimension (may change after ``rewrite_vectors``)."""
        return self._setting("dim")

    @property
    def metric(self) -> str:
        """``"cosine"`` or ``"l2"``."""
        return self._setting("metric")

    @property
    def extra(self) -> dict[str, Any]:
        """Copy of the free-form fields set by the caller."""
        return json.loads(json.dumps(self._setting("extra")))

    @property
    def generation(self) -> int:
        """Number of committed writes so far (as seen on disk now)."""
        return self._setting("generation")

    @property
    def backend(self) -> str:
        """``"faiss"``."""
        return BACKEND

    # ------------------------------------------------------------------ writes

    def _writer(self) -> contextlib.AbstractContextManager[_State]:
        return self._write()

    def _insert(self, st: _State, vecs: np.ndarray, labs: list[str], metas: list[str]) -> np.ndarray:
        """One SQLite transaction (rows, class sums, generation), then the same change in memory."""
        deltas = class_deltas(labs, vecs, st.dim)
        with self._db.write():
            changed = self._db.apply_class_deltas(deltas, st.dim)
            ids = self._db.insert_records(labs, vecs, metas, time.time())
            generation = self._db.bump_generation()
        with self._apply_in_memory():
            st.vectors.add(vecs, ids)
            st.protos.apply(changed)
            st.count += len(ids)
            st.generation = generation
            st.max_id = max(st.max_id, int(ids.max()))
            st.pending += len(ids)
        self._after_commit(force=self._maybe_rebuild(st))
        return ids

    def _remove_ids(self, ids: np.ndarray) -> int:
        with self._write() as st:
            return self._remove_rows(st, ids)

    def _remove_label(self, label: str) -> int:
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
            deltas = class_deltas(labs, vecs, st.dim, sign=-1)
            changed = self._db.apply_class_deltas(deltas, st.dim)
            self._db.delete_records(found)
            generation = self._db.bump_generation()
        with self._apply_in_memory():
            st.vectors.remove(found)
            st.protos.apply(changed)
            st.count -= len(found)
            st.generation = generation
            st.pending += len(found)
        self._after_commit(force=self._maybe_rebuild(st))
        self._delete_unreferenced(blob_keys(json.loads(rows[i].metadata) for i in found))
        return len(found)

    def _delete_unreferenced(self, keys: list[str]) -> None:
        """After a committed remove, under the lock: delete the removed records' copies nobody names now.

        A kill before this leaves unreferenced copies, which ``check --repair``
        deletes; an add cannot commit a reference meanwhile (it needs the lock
        and checks its copies exist).
        """
        if not keys:
            return
        with self._db.read():
            keep = records_sql.referenced_blobs(self._db, keys)
        BlobStore(self.path).delete(k for k in keys if k not in keep)

    def _rewrite(self, wanted: np.ndarray, vectors: np.ndarray, dim: int | None,
                 extra_update: dict[str, Any], fill: Any) -> int:
        """All vectors in one transaction; class sums recomputed, in-memory state rebuilt from SQLite."""
        with self._write() as st:
            new_dim = validate_dim(dim) if dim is not None else st.dim
            vecs = check_rewrite(wanted, vectors, new_dim, st.metric)
            with self._db.write():
                def records_of(missing: np.ndarray) -> list[Record]:
                    rows = self._db.fetch_records(missing.tolist(), st.dim)
                    return [_to_record(rows[int(i)]) for i in missing]

                wanted, vecs = cover_records(self._db.all_ids(), wanted, vecs, records_of, fill, new_dim, st.metric)
                self._db.update_vectors(wanted, vecs)
                if new_dim != st.dim:
                    self._db.set_meta("dim", str(new_dim))
                self._db.replace_classes(self._db.recompute_classes(new_dim))
                if extra_update:
                    self._db.set_extra({**st.extra, **extra_update})
                # Checkpoints of the old vectors must never be replayed onto the new ones.
                self._db.set_meta("vectors_epoch", str(st.epoch + 1))
                self._db.bump_generation()
            # Everything changed: rebuild the in-memory state from what was committed.
            with self._apply_in_memory():
                self._state = self._load_state(use_files=False, sync_build=True)
                self._state.pending = max(1, self._state.count)
            self._after_commit()
            return len(wanted)

    def _set_extra(self, update: dict[str, Any]) -> None:
        with self._write() as st:
            merged = {**st.extra, **update}
            with self._db.write():
                self._db.set_extra(merged)
                generation = self._db.bump_generation()
            st.extra = merged
            st.generation = generation
            st.pending += 1
            self._after_commit()

    # ------------------------------------------------------------------ reads

    def _search(self, queries: np.ndarray, k: int, labels: Sequence[str] | None,
                ef_search: int | None, nprobe: int | None) -> list[list[Hit]]:
        """k nearest records per query, best first (fewer if the store holds fewer).

        ``labels`` restricts the search to records of those labels: a filter
        matching at most ``FILTER_EXACT_FRACTION`` of the vectors is answered
        by an exact scan of the matching ids (whatever the index type), a
        broader one by the index with its search effort scaled up.
        ``ef_search`` (HNSW) / ``nprobe`` (IVF) override the stored defaults
        for this call. Scores: cosine similarity for ``cosine``; negative
        squared L2 distance for ``l2`` (so higher is always better).
        """
        with self._fresh() as st:
            return self._search_in(st, queries, k, labels, ef_search, nprobe)

    def _search_in(self, st: _State, queries: np.ndarray, k: int, labels: Sequence[str] | None,
                   ef_search: int | None, nprobe: int | None) -> list[list[Hit]]:
        """:meth:`search` against the state ``st`` (caller holds the mutex)."""
        k = validate_k(k)
        wanted = None if labels is None else label_filter(labels)
        ef_search = None if ef_search is None else validate_k(ef_search)
        nprobe = None if nprobe is None else validate_k(nprobe)
        q = prepare_vectors(queries, st.dim, st.metric, what="queries")
        if len(q) == 0:
            return []
        subset = None
        if wanted is not None:
            subset = self._db.ids_for_labels(wanted)
            if len(subset) == 0:
                return [[] for _ in range(len(q))]
        scores, ids = self._vector_search(st, q, k, subset, ef_search, nprobe)
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
        """k nearest class prototypes per query, best first (always exact).

        ``Hit.id`` is -1 (a class, not a record), ``Hit.metadata`` is
        ``{"count": n}`` (examples in that class). :meth:`top_classes` is the
        same ranking as arrays, without an object per hit.
        """
        m, counts = self._top(queries, validate_k(k), None)
        return [[Hit(-1, label, score, {"count": counts[label][1]}) for label, score in zip(labels, row.tolist())]
                for labels, row in zip(m.labels, m.scores)]

    def top_classes(self, queries: np.ndarray, k: int = 5, *,
                    temperature: float | None = None) -> ClassMatches:
        """The k best class prototypes per query as arrays (exact; see :class:`ClassMatches`).

        The classification path: one snapshot, one matrix product per block of
        queries, no Python object per hit. With ``temperature`` the
        probabilities are a softmax over all classes.
        """
        return self._top(queries, validate_k(k), validate_temperature(temperature))[0]

    def _top(self, queries: np.ndarray, k: int, temperature: float | None) -> tuple[ClassMatches, dict]:
        """(the ranking, label -> (class id, count)) from one snapshot."""
        self._check_open()
        with self._mutex:
            st = self._current()
            return st.protos.top(prepare_queries(queries, st.dim, st.metric), k, temperature), st.protos.by_label

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[StoreSnapshot]:
        """One committed state: its extra fields, and searches answered from it alone.

        The in-memory state of the latest generation (reloaded first if another
        process committed), held under this object's mutex for the ``with``
        block: no reload can replace it meanwhile. Costs what a search costs.
        """
        with self._fresh() as st:
            yield _FaissSnapshot(self, st)

    def prototype_scores(self, queries: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(labels, float32 scores [n_queries, n_labels]) against every class prototype.

        One matrix product: what a softmax over all classes needs, without
        building a Hit per class (labels are in internal order, not sorted).
        """
        with self._fresh() as st:
            q = prepare_vectors(queries, st.dim, st.metric, what="queries")
            return st.protos.scores(q)

    def prototypes(self) -> tuple[list[str], np.ndarray]:
        """(labels sorted, float32 [n_labels, dim]) prototypes (unit length for cosine)."""
        with self._fresh() as st:
            return st.protos.vectors()

    def count(self) -> int:
        """Number of stored records."""
        with self._fresh() as st:
            return st.count

    def labels(self) -> dict[str, int]:
        """label -> record count, sorted by label."""
        with self._fresh() as st:
            return st.protos.counts()

    def _rows_by_id(self, wanted: np.ndarray) -> dict[int, Any]:
        with self._read() as st:
            return self._db.fetch_records(wanted.tolist(), st.dim)

    @staticmethod
    def _record_of(row: Any) -> Record:
        return _to_record(row)

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
                                          count, record_ids,
                                          epoch=int(records_sql.meta_value(self._db, "vectors_epoch") or 0))
            state = self._state
            if state is not None and state.generation == meta.generation and state.vectors.live != count:
                problems.append(f"in-memory FAISS index holds {state.vectors.live} vectors but "
                                f"meta.sqlite has {count} records; reopen the store")
            problems += vector_problems(self._db, meta.dim, meta.metric)
            problems += class_problems(self._db, meta.dim)
        return problems

    def _rebuild_derived(self) -> None:
        """Class sums (when they differ), then FAISS files and manifest, from the records."""
        with self._mutex, self._lock():
            meta = self._db.read_meta()
            with self._db.write():
                recomputed = self._db.recompute_classes(meta.dim)
                if class_problems(self._db, meta.dim, recomputed):
                    self._db.replace_classes(recomputed)
                    self._db.bump_generation()
            self._state = self._load_state(use_files=False, sync_build=True)
            self._persist()

    # ------------------------------------------------------------------ internals

    def _lock(self) -> DirLock:
        return DirLock(self.path, self._lock_timeout)

    @contextlib.contextmanager
    def _read(self) -> Iterator[_State]:
        """Hold the object mutex and a SQLite read snapshot; reload if another writer committed."""
        self._check_open()
        with self._mutex, self._db.read():
            if self._state is None or self._db.generation() != self._state.generation:
                self._state = self._load_state(previous=self._state)
            yield self._state

    @contextlib.contextmanager
    def _fresh(self) -> Iterator[_State]:
        """Like :meth:`_read` for calls that only use the in-memory state (searches, labels)."""
        self._check_open()
        with self._mutex:
            yield self._current()

    def _current(self) -> _State:
        """The in-memory state, reloaded first if another connection committed (hold ``_mutex``).

        ``PRAGMA data_version`` changes only when *another* connection commits,
        so one statement replaces a read transaction plus a generation query on
        every call (what keeps a single small query close to raw FAISS speed).
        """
        version = self._db.conn.execute("PRAGMA data_version").fetchone()[0]
        if self._state is None or version != self._data_version:
            with self._db.read():
                if self._state is None or self._db.generation() != self._state.generation:
                    self._state = self._load_state(previous=self._state)
            self._data_version = version
        return self._state

    @contextlib.contextmanager
    def _write(self) -> Iterator[_State]:
        """Hold the mutex and the directory lock, with state reloaded to the latest generation."""
        self._check_writable()
        with self._mutex, self._lock():
            if self._state is None or self._db.generation() != self._state.generation:
                self._state = self._load_state(previous=self._state)
            yield self._state

    @contextlib.contextmanager
    def _apply_in_memory(self) -> Iterator[None]:
        """After a commit: if mirroring it in memory fails, force a reload instead of serving stale data."""
        try:
            yield
        except BaseException:
            self._state = None
            raise

    def _after_commit(self, *, force: bool = False) -> None:
        self._dirty = True
        st = self._state
        if not self._autosave or (not force and st is not None
                                  and not needs_checkpoint(st.vectors.ntotal, st.pending)):
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

    def _load_state(self, *, use_files: bool = True, previous: _State | None = None,
                    sync_build: bool = False) -> _State:
        """Load one consistent generation.

        In order of preference: bring ``previous`` (this object's in-memory
        state) up to date by replaying what other writers committed; load the
        checkpoint files and replay what changed since; rebuild from SQLite.
        A rebuild of an approximate index over more than ``SYNC_BUILD_MAX``
        vectors is not done here (it takes minutes): the store serves an
        exact flat index meanwhile and a writer builds the right one in the
        background.
        """
        with self._db.read():
            meta = self._db.read_meta()
            check_format_version(meta.format_version, self.path)
            if meta.metric not in METRICS or meta.dim < 1:
                raise CorruptIndexError(
                    f"{self.path}/{META_NAME} has invalid settings (dim={meta.dim}, metric={meta.metric!r}); "
                    "restore the index from a backup"
                )
            epoch = int(records_sql.meta_value(self._db, "vectors_epoch") or 0)
            config = IndexConfig.from_json(records_sql.meta_value(self._db, "index"))
            count = self._db.count()
            classes = self._db.classes(meta.dim)
            top = records_sql.max_id(self._db)
            vectors: VectorIndex | None = None
            protos = None
            base, pending, from_files = -1, 0, False
            if (previous is not None and previous.epoch == epoch and previous.dim == meta.dim
                    and previous.metric == meta.metric):
                vectors, base, pending, from_files = (previous.vectors, previous.base_generation,
                                                      previous.pending, previous.from_files)
                pending += self._replay(vectors, previous.max_id, count, meta.dim)
            elif use_files:
                vectors, protos, base = load_checkpoint(self.path, meta.generation, meta.dim, meta.metric,
                                                        epoch, mmap=self._mmap)
                if vectors is not None:
                    from_files = protos is not None
                    if _checkpoint_is_current(self.path, base, count, top):
                        pending = 0  # ids only grow: same max id and count means nothing changed
                    else:
                        pending = self._replay(vectors, None, count, meta.dim)
                    if base != meta.generation:
                        pending = max(pending, 1)
            if vectors is None:
                kind = config.kind_for(count)
                if kind != "flat" and count > SYNC_BUILD_MAX and not sync_build:
                    kind = "flat"  # serve exact results now; _maybe_rebuild builds the right kind
                vectors = VectorIndex.build(kind, meta.dim, meta.metric, config,
                                            lambda: records_sql.all_vectors(self._db, meta.dim), count)
                pending = max(1, count)
            table = PrototypeTable.build(classes, meta.dim, meta.metric, protos)
        return _State(meta.generation, meta.dim, meta.metric, meta.extra, meta.backend, meta.created,
                      count, vectors, table, from_files, epoch=epoch, config=config, base_generation=base,
                      max_id=top, pending=pending)

    def _replay(self, vectors: VectorIndex, known_max: int | None, count: int, dim: int) -> int:
        """Apply record changes that ``vectors`` has not seen; returns how many.

        Ids only grow, so new records are those above the largest id seen;
        removals among older ids show up as a count mismatch, and only then
        are the full id lists compared. Call inside a read transaction.
        """
        if known_max is None:
            ids = vectors.ids()
            known_max = int(ids[-1]) if len(ids) else 0
            live_known = len(ids)
        else:
            live_known = vectors.live
        changed = 0
        if live_known and records_sql.count_upto(self._db, known_max) != live_known:
            current = records_sql.all_ids(self._db)
            have = vectors.ids()
            gone = np.setdiff1d(have, current, assume_unique=True)
            vectors.remove(gone)
            changed += len(gone)
        to_side = vectors.kind == "hnsw" and count - live_known > HNSW_REPLAY_MAX
        for ids, vecs in records_sql.vectors_after(self._db, known_max, dim):
            vectors.add(vecs, ids, side=to_side)
            changed += len(ids)
        return changed

    def _needs_persist(self, st: _State) -> bool:
        if not st.from_files or st.base_generation < 0:
            return True
        if st.vectors.side is not None and st.vectors.side.ntotal:
            return needs_checkpoint(st.vectors.ntotal, st.pending)
        if st.base_generation != st.generation:
            return needs_checkpoint(st.vectors.ntotal, st.pending)
        try:
            manifest = read_manifest(self.path)
        except ManifestUnreadable:
            return True
        if manifest is None:
            return True
        expected = self._manifest_for(st, files=manifest.get("files", {}), sizes=manifest.get("sizes", {}))
        volatile = ("created", "updated")
        return any(manifest.get(key) != value for key, value in expected.items() if key not in volatile)

    def _manifest_for(self, st: _State, files: dict[str, str], sizes: dict[str, int] | None = None,
                      generation: int | None = None) -> dict[str, Any]:
        return build_manifest(
            dim=st.dim, metric=st.metric, backend=st.backend,
            generation=st.generation if generation is None else generation,
            count=st.count, n_labels=len(st.protos.by_label), extra=st.extra, files=files,
            created=st.created, updated=time.time(),
            vectors_epoch=st.epoch, sizes=dict(sizes or {}), max_id=st.max_id,
            index={"type": st.config.index_type, "kind": st.vectors.kind, "live": st.vectors.live,
                   "tombstones": len(st.vectors.dead)},
        )

    def _persist(self) -> None:
        """Write a checkpoint of the current generation, then the manifest, then drop stale files.

        Caller holds the directory lock. The order means a crash at any point
        leaves a manifest that either names valid files or is outdated (and is
        then replayed onto or ignored in favour of SQLite).
        """
        st = self._state
        assert st is not None
        if st.vectors.side is not None and st.vectors.side.ntotal and st.vectors.mutable:
            st.vectors.merge_side()
        if not st.vectors.mutable:
            # A memory-mapped index cannot be written back; write a flat copy instead.
            st.vectors = VectorIndex.build("flat", st.dim, st.metric, st.config,
                                           lambda: records_sql.all_vectors(self._db, st.dim), st.count)
        files, sizes = write_checkpoint(self.path, st.generation, st.vectors, st.protos.to_faiss())
        write_manifest(self.path, self._manifest_for(st, files, sizes))
        remove_stale(self.path, st.generation)
        st.base_generation = st.generation
        st.pending = 0
        st.from_files = True
        self._dirty = False

    # ------------------------------------------------------------------ index types

    def _vector_search(self, st: _State, q: np.ndarray, k: int, subset: np.ndarray | None,
                       ef_search: int | None, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Route one search: unfiltered, exact over a selective subset, or filtered ANN."""
        vi = st.vectors
        ef = ef_search or st.config.ef_search
        rerank = vi.kind == "ivfpq" and st.config.rerank > 1
        kc = k * st.config.rerank if rerank else k
        live = max(vi.live, 1)
        if subset is not None and len(subset) >= live:
            subset = None  # the filter covers every record
        if subset is None:
            scores, ids = vi.search(q, kc, ef_search=ef, nprobe=nprobe or self._nprobe(st))
        elif vi.kind == "flat" or len(subset) <= FILTER_EXACT_FRACTION * live:
            scores, ids = vi.search_exact(q, kc, subset)
        else:
            boost = live / len(subset)
            base_probe = nprobe or self._nprobe(st)
            nlist = int(getattr(vi.main, "nlist", 1))
            scores, ids = vi.search(q, kc, ef_search=int(ef * boost) + 1,
                                    nprobe=None if base_probe is None else min(nlist, int(base_probe * boost) + 1),
                                    subset=subset)
        if rerank and ids.size:
            scores, ids = self._rerank(st, q, ids, k)
        return scores, ids

    @staticmethod
    def _nprobe(st: _State) -> int | None:
        vi = st.vectors
        if vi.kind not in ("ivf", "ivfpq"):
            return None
        return st.config.nprobe_for(int(vi.main.nlist))

    def _rerank(self, st: _State, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-score IVF-PQ candidates exactly with the stored float32 vectors."""
        uniq = np.unique(cand[cand >= 0])
        found, vecs = records_sql.vectors_for(self._db, uniq, st.dim)
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

    def index_info(self) -> dict[str, Any]:
        """What serves the vectors now: requested type, actual kind, sizes and parameters."""
        with self._read() as st:
            vi = st.vectors
            info: dict[str, Any] = {
                "index_type": st.config.index_type, "kind": vi.kind, "live": vi.live,
                "tombstones": len(vi.dead), "side": int(vi.side.ntotal) if vi.side is not None else 0,
                "memory_mapped": not vi.mutable, "building": self.building,
                "checkpoint_generation": st.base_generation, "pending": st.pending,
                "config": json.loads(st.config.to_json()),
            }
            if vi.kind in ("ivf", "ivfpq"):
                info["nlist"] = int(vi.main.nlist)
                info["nprobe"] = self._nprobe(st)
            if vi.kind == "hnsw":
                info["ef_search"] = st.config.ef_search
        return info

    @property
    def building(self) -> bool:
        """True while a background index build is running."""
        return self._builder is not None and self._builder.is_alive()

    def set_index_type(self, index_type: str | None = None, *, wait: bool = True, **params: Any) -> None:
        """Change the index type and/or parameters, and rebuild when the kind changes.

        The build runs in a background thread from a snapshot of the records;
        queries keep using the old index until the new one is swapped in
        (writes made meanwhile are replayed onto it first). ``wait`` blocks
        until then. Search-time parameters (``ef_search``, ``nprobe``,
        ``rerank``) apply at once without a rebuild.
        """
        with self._write() as st:
            config = merged_config(st.config, index_type, params)
            with self._db.write():
                self._db.set_meta("index", config.to_json())
                generation = self._db.bump_generation()
            st.config = config
            st.generation = generation
            st.pending += 1
            force = bool(REBUILD_PARAMS & set(params)) and st.vectors.kind != "flat"
            self._after_commit(force=self._maybe_rebuild(st, force=force))
        if wait:
            self.wait_for_build()

    def wait_for_build(self, timeout: float | None = None) -> None:
        """Block until a background build has finished (re-raising its error, if any)."""
        builder = self._builder
        if builder is not None and builder is not threading.current_thread():
            builder.join(timeout)
        error, self._build_error = self._build_error, None
        if error is not None:
            raise StoreError(f"background index build for {self.path} failed: {error}") from error

    def _desired_kind(self, st: _State) -> str:
        config, live = st.config, st.vectors.live
        if config.index_type == "auto" and st.vectors.kind == "hnsw" and live > config.auto_threshold // 2:
            return "hnsw"  # hysteresis: do not flap around the threshold
        return config.kind_for(live)

    def _maybe_rebuild(self, st: _State, *, force: bool = False) -> bool:
        """Rebuild when the index kind is wrong or HNSW has too many tombstones.

        Small indexes are rebuilt here and now (returns True: the caller must
        checkpoint, the files hold the old kind); large ones in a background
        thread that checkpoints when done (returns False).
        """
        if self._readonly or self.building:
            return False
        want = self._desired_kind(st)
        vi = st.vectors
        stale = vi.kind != want
        bloated = vi.kind == "hnsw" and len(vi.dead) > COMPACT_FRACTION * max(vi.ntotal, 1)
        if not (stale or bloated or force):
            return False
        if vi.live <= SYNC_BUILD_MAX:
            # Small: build now, in this write (the caller holds the lock); well under a second.
            st.vectors = VectorIndex.build(want, st.dim, st.metric, st.config,
                                           lambda: records_sql.all_vectors(self._db, st.dim), st.count)
            st.pending += 1
            return True
        self._builder = threading.Thread(target=self._build_job, args=(want, st.config, st.epoch),
                                         name=f"fewshot-index-build-{want}", daemon=True)
        self._builder.start()
        return False

    def _build_job(self, kind: str, config: IndexConfig, epoch: int) -> None:
        """Background thread: build ``kind`` from a snapshot, checkpoint it, swap it in."""
        try:
            db = MetaDB(self.path / META_NAME, busy_timeout=self._lock_timeout)
            try:
                with db.read():
                    meta = db.read_meta()
                    n = db.count()
                    snap_gen = meta.generation
                    if int(records_sql.meta_value(db, "vectors_epoch") or 0) != epoch:
                        return
                    new = VectorIndex.build(kind, meta.dim, meta.metric, config,
                                            lambda: records_sql.all_vectors(db, meta.dim), n)
            finally:
                db.close()
            with self._mutex:
                st = self._state
                if self._closed or st is None or st.epoch != epoch or st.dim != new.dim:
                    return
                with self._db.read():
                    current, have = st.vectors.ids(), new.ids()
                    new.remove(np.setdiff1d(have, current, assume_unique=True))
                    missing = np.setdiff1d(current, have, assume_unique=True)
                    if len(missing):
                        found, vecs = records_sql.vectors_for(self._db, missing, st.dim)
                        new.add(vecs, found)
                st.vectors = new
                st.pending += 1
                if snap_gen != st.generation:
                    st.pending += len(missing)
                self._dirty = True
                try:
                    with self._lock():
                        if self._db.generation() == st.generation:
                            self._persist()
                except (LockTimeoutError, OSError) as exc:
                    warnings.warn(f"{self.path}: new {kind} index is in use but could not be saved yet "
                                  f"({exc}); it will be written by the next flush", RuntimeWarning, stacklevel=1)
        except BaseException as exc:  # reported by wait_for_build / the next write
            self._build_error = exc


class _FaissSnapshot(StoreSnapshot):
    """Reads against one loaded ``_State`` (see :meth:`FaissStore.snapshot`)."""

    def __init__(self, store: FaissStore, st: _State) -> None:
        super().__init__(store, json.loads(json.dumps(st.extra)))
        self._faiss, self._st = store, st

    def top_classes(self, queries: np.ndarray, k: int = 5, *, temperature: float | None = None) -> ClassMatches:
        """The k best class prototypes per query, from this snapshot."""
        st = self._st
        return st.protos.top(prepare_queries(queries, st.dim, st.metric), validate_k(k),
                             validate_temperature(temperature))

    def search(self, queries: np.ndarray, k: int, labels: Sequence[str] | None = None, *,
               ef_search: int | None = None, nprobe: int | None = None) -> list[list[Hit]]:
        """k nearest records per query, from this snapshot."""
        return self._faiss._search_in(self._st, queries, k, labels, ef_search, nprobe)


# ---------------------------------------------------------------------- helpers


def _checkpoint_is_current(directory: Path, generation: int, count: int, top: int) -> bool:
    """True when the checkpoint's record count and largest id equal SQLite's (no replay needed)."""
    try:
        manifest = read_manifest(directory)
    except ManifestUnreadable:
        return False
    return (manifest is not None and manifest.get("generation") == generation
            and manifest.get("count") == count and manifest.get("max_id") == top)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _to_record(row: Any) -> Record:
    return Record(row.id, row.label, json.loads(row.metadata), row.vector, row.created)


__all__ = ["FILTER_EXACT_FRACTION", "FaissStore", "is_index_dir", "make_config"]
