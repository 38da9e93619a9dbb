"""The index builder of a :class:`~index.faiss_store.FaissStore`.

Deciding when the vectors need another index (the type asked for changed,
``auto`` crossed its threshold, HNSW holds too many tombstones), and building
it: small indexes in the write that asked (well under a second), large ones
in a background thread from a snapshot of the records, while queries keep
using the old index. The new index is brought up to date with writes made
meanwhile and swapped in under the store's mutex, then checkpointed.

The mixin shares the store's mutex, database connection and directory lock;
it owns ``_builder`` and ``_build_error``.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import faiss_state
from .errors import LockTimeoutError, StoreError
from .index_config import COMPACT_FRACTION, IndexConfig
from .layout import META_NAME
from .sqlite_meta import MetaDB
from .vector_index import VectorIndex

from .faiss_state import State


class BuilderMixin:
    """Rebuilding a FaissStore's vector index, in the write or in a background thread."""

    path: Path
    _db: MetaDB
    _mutex: Any
    _state: State | None
    _readonly: bool
    _closed: bool
    _dirty: bool
    _lock_timeout: float
    _builder: threading.Thread | None
    _build_error: BaseException | None

    # Also used, from the store: ``_lock()`` (its directory lock) and ``_persist()`` (StateMixin).

    @property
    def building(self) -> bool:
        """True while a background index build is running."""
        return self._builder is not None and self._builder.is_alive()

    def wait_for_build(self, timeout: float | None = None) -> None:
        """Block until a background build has finished (re-raising its error, if any)."""
        builder = self._builder
        if builder is not None and builder is not threading.current_thread():
            builder.join(timeout)
        error, self._build_error = self._build_error, None
        if error is not None:
            raise StoreError(f"background index build for {self.path} failed: {error}") from error

    def _desired_kind(self, st: State) -> str:
        config, live = st.config, st.vectors.live
        if config.index_type == "auto" and st.vectors.kind == "hnsw" and live > config.auto_threshold // 2:
            return "hnsw"  # hysteresis: do not flap around the threshold
        return config.kind_for(live)

    def _maybe_rebuild(self, st: State, *, force: bool = False) -> bool:
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
        if vi.live <= faiss_state.SYNC_BUILD_MAX:  # read at call time: tests lower it
            # Small: build now, in this write (the caller holds the lock).
            st.vectors = VectorIndex.build(want, st.dim, st.metric, st.config,
                                           lambda: self._db.all_vectors(st.dim), st.count)
            st.pending += 1
            return True
        self._builder = threading.Thread(target=self._build_job, args=(want, st.config, st.epoch),
                                         name=f"fewshot-index-build-{want}", daemon=True)
        self._builder.start()
        return False

    def _build_job(self, kind: str, config: IndexConfig, epoch: int) -> None:
        """Background thread: build ``kind`` from a snapshot, checkpoint it, swap it in."""
        try:
            built = self._build_snapshot(kind, config, epoch)
            if built is not None:
                self._swap_in(kind, epoch, *built)
        except BaseException as exc:  # reported by wait_for_build / the next write
            self._build_error = exc

    def _build_snapshot(self, kind: str, config: IndexConfig, epoch: int) -> tuple[VectorIndex, int] | None:
        """(the new index, the generation it reflects), read on a connection of its own; None if re-encoded.

        Its own connection keeps the long read off the store's connection,
        so the store keeps answering and writing meanwhile.
        """
        db = MetaDB(self.path / META_NAME, busy_timeout=self._lock_timeout)
        try:
            with db.read():
                meta = db.read_meta()
                n = db.count()
                if int(db.meta_value("vectors_epoch") or 0) != epoch:
                    return None
                return VectorIndex.build(kind, meta.dim, meta.metric, config,
                                         lambda: db.all_vectors(meta.dim), n), meta.generation
        finally:
            db.close()

    def _swap_in(self, kind: str, epoch: int, new: VectorIndex, snap_gen: int) -> None:
        """Bring ``new`` up to the in-memory state, use it, and checkpoint it if no one wrote since."""
        with self._mutex:
            st = self._state
            if self._closed or st is None or st.epoch != epoch or st.dim != new.dim:
                return
            with self._db.read():
                current, have = st.vectors.ids(), new.ids()
                new.remove(np.setdiff1d(have, current, assume_unique=True))
                missing = np.setdiff1d(current, have, assume_unique=True)
                if len(missing):
                    found, vecs = self._db.vectors_for(missing, st.dim)
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


__all__ = ["BuilderMixin"]
