"""FaissStore: the local, single-directory implementation of VectorStore.

SQLite (``meta.sqlite``) holds the truth; FAISS files are caches named by
generation and listed with checksums in ``manifest.json``. Writers serialise on
a directory lock and commit each write as one SQLite transaction, then update
the in-memory FAISS indexes and (with ``autosave``) the cache files. Readers
take no lock: before each read they compare the SQLite generation with the one
they loaded and reload if another process wrote in between.

This module is the store's API (lifecycle, writes, reads, maintenance) and
the locking around it; the jobs that share its mutex live beside it, each in
a module of its own: state replay and persistence (:mod:`index.faiss_state`),
the background index builder (:mod:`index.faiss_builder`) and search routing
(:mod:`index.faiss_routing`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import ClassMatches, Hit, Record, StoreSnapshot, VectorStore, cover_records
from .blobs import BlobStore, blob_keys
from .cache_files import remove_stale
from .checkpoint import needs_checkpoint
from .checks import class_problems, manifest_problems, vector_problems
from .common import (REBUILD_PARAMS, check_rewrite, check_same_shape, class_deltas, closing_on_error, create_args,
                     is_index_dir, label_filter, make_config, merged_config, refuse_existing, refuse_foreign_dir)
from .errors import CorruptIndexError, LockTimeoutError, NotAnIndexError, StoreError, ValidationError
from .faiss_builder import BuilderMixin
from .faiss_routing import FILTER_EXACT_FRACTION, nprobe_for, to_hits, vector_search
from .faiss_state import HNSW_REPLAY_MAX, SYNC_BUILD_MAX, State, StateMixin
from .layout import FORMAT_VERSION, MANIFEST_NAME, META_NAME
from .locking import DirLock
from .manifest import ManifestUnreadable, check_format_version, read_manifest
from .sqlite_meta import MetaDB
from .validation import (prepare_queries, prepare_vectors, validate_dim, validate_k, validate_label,
                         validate_temperature, validate_timeout)
from .vector_index import VectorIndex

BACKEND = "faiss"
_PAGE = 512  # rows per SQLite page when streaming records
#: meta.sqlite files up to this size get a full integrity check on every open.
QUICK_CHECK_MAX_BYTES = 64 << 20
#: The name the in-memory state had before it moved to :mod:`index.faiss_state`.
_State = State


class FaissStore(StateMixin, BuilderMixin, VectorStore):
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
        self._state: State | None = None
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
                with closing_on_error(MetaDB(path / META_NAME, busy_timeout=lock_timeout)) as db:
                    db.initialise(dim=dim, metric=metric, extra=extra, backend=BACKEND,
                                  format_version=FORMAT_VERSION, created=time.time())
                    with db.write():
                        db.set_meta("index", config.to_json())
                    store = cls(path, db, readonly=False, lock_timeout=lock_timeout, autosave=autosave)
                    store._state = store._load_state()
                    store._persist()
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
        _check_index_files(path)
        with closing_on_error(_open_db(path, lock_timeout, durability)) as db:
            store = cls(path, db, readonly=readonly, lock_timeout=lock_timeout, autosave=autosave,
                        mmap=readonly if mmap is None else bool(mmap) and readonly)
            if readonly:
                store._state = store._load_state()
            else:
                store._settle()
        return store

    def _settle(self) -> None:
        """On a writer's open, under the lock: load, write back rebuilt caches, drop stale files, rebuild."""
        with self._lock():
            self._state = self._load_state()
            if self._needs_persist(self._state):
                self._persist()
            else:
                remove_stale(self.path, self._state.base_generation)
            if self._maybe_rebuild(self._state):
                self._persist()

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

    def _writer(self) -> contextlib.AbstractContextManager[State]:
        return self._write()

    def _insert(self, st: State, vecs: np.ndarray, labs: list[str], metas: list[str]) -> np.ndarray:
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

    def _remove_rows(self, st: State, ids: np.ndarray) -> int:
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
            keep = self._db.referenced_blobs(keys)
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

    def _search_in(self, st: State, queries: np.ndarray, k: int, labels: Sequence[str] | None,
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
        scores, ids = vector_search(st, self._db, q, k, subset, ef_search, nprobe)
        return to_hits(self._db, scores, ids)

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
                                          epoch=int(self._db.meta_value("vectors_epoch") or 0))
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
    def _read(self) -> Iterator[State]:
        """Hold the object mutex and a SQLite read snapshot; reload if another writer committed."""
        self._check_open()
        with self._mutex, self._db.read():
            if self._state is None or self._db.generation() != self._state.generation:
                self._state = self._load_state(previous=self._state)
            yield self._state

    @contextlib.contextmanager
    def _fresh(self) -> Iterator[State]:
        """Like :meth:`_read` for calls that only use the in-memory state (searches, labels)."""
        self._check_open()
        with self._mutex:
            yield self._current()

    def _current(self) -> State:
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
    def _write(self) -> Iterator[State]:
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

    # ------------------------------------------------------------------ index types

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
                info["nprobe"] = nprobe_for(st)
            if vi.kind == "hnsw":
                info["ef_search"] = st.config.ef_search
        return info

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

class _FaissSnapshot(StoreSnapshot):
    """Reads against one loaded ``State`` (see :meth:`FaissStore.snapshot`)."""

    def __init__(self, store: FaissStore, st: State) -> None:
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


def _check_index_files(path: Path) -> None:
    """Refuse a path that holds no index (NotAnIndexError) or a manifest without its records."""
    if not path.is_dir():
        raise NotAnIndexError(
            f"{path} is not a fewshot index (no such directory); create one with `fewshot init`"
        )
    try:
        manifest = read_manifest(path)
    except ManifestUnreadable:
        manifest = None  # derived file; SQLite decides, verify() reports it
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


def _open_db(path: Path, lock_timeout: float, durability: str) -> MetaDB:
    """The checked meta.sqlite connection of an index (closed again if a check fails)."""
    with closing_on_error(MetaDB(path / META_NAME, busy_timeout=lock_timeout)) as db:
        # PRAGMA quick_check reads every page, so its cost grows with the file. Large indexes skip
        # it on open (verify() still runs it); a damaged header or schema is caught either way.
        db.check(full=_file_size(path / META_NAME) <= QUICK_CHECK_MAX_BYTES)
        if durability == "normal":
            db.conn.execute("PRAGMA synchronous=NORMAL")
        check_format_version(db.read_meta().format_version, path)
    return db


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _to_record(row: Any) -> Record:
    return Record(row.id, row.label, json.loads(row.metadata), row.vector, row.created)


# Names that lived here before the state, builder and routing modules were split off.
__all__ = ["FILTER_EXACT_FRACTION", "HNSW_REPLAY_MAX", "SYNC_BUILD_MAX", "FaissStore", "VectorIndex", "is_index_dir",
           "make_config"]
