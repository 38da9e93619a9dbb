"""State replay and persistence of a :class:`~index.faiss_store.FaissStore`.

One :class:`State` is everything a store has loaded for one generation. It
comes, in order of preference, from the previous in-memory state brought up
to date, from the checkpoint files plus a replay of what changed since, or
from the records in SQLite. Replay is cheap because record ids only grow:
what changed is the ids above the largest one seen, plus removals among
older ids, which one count detects. Persisting writes a checkpoint, then the
manifest, then drops stale files, so a crash at any point leaves either a
valid manifest or one that is replayed onto or ignored.

The mixin runs with the store's mutex (and, to persist, its directory lock)
held by the caller; it reads ``path``, ``_db``, ``_mmap``, ``_state`` and
sets ``_state`` / ``_dirty``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache_files import remove_stale
from .checkpoint import load_checkpoint, needs_checkpoint, write_checkpoint
from .errors import CorruptIndexError
from .index_config import IndexConfig
from .layout import META_NAME
from .manifest import ManifestUnreadable, build_manifest, check_format_version, read_manifest, write_manifest
from .prototypes import PrototypeTable
from .sqlite_meta import MetaDB, MetaInfo
from .types import METRICS
from .vector_index import VectorIndex

#: Below this many vectors an approximate index is built synchronously (on open, or in the write
#: that asked for it); above, the store serves a flat index while a background thread builds it.
SYNC_BUILD_MAX = 20_000
#: Changes replayed into an HNSW graph on open; more go to a flat side index.
HNSW_REPLAY_MAX = 2_000


@dataclass
class State:
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


@dataclass
class _Loaded:
    """Where the vectors of a new :class:`State` came from, and how far behind SQLite they were."""

    vectors: VectorIndex | None = None
    protos: Any = None  # prototype FAISS index from the checkpoint, if it had a valid one
    base: int = -1
    pending: int = 0
    from_files: bool = False


class StateMixin:
    """Loading, replaying and persisting a FaissStore's :class:`State` (see the module docstring)."""

    path: Path
    _db: MetaDB
    _mmap: bool
    _state: State | None
    _dirty: bool

    def _load_state(self, *, use_files: bool = True, previous: State | None = None,
                    sync_build: bool = False) -> State:
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
            meta = self._checked_meta()
            epoch = int(self._db.meta_value("vectors_epoch") or 0)
            config = IndexConfig.from_json(self._db.meta_value("index"))
            count = self._db.count()
            classes = self._db.classes(meta.dim)
            top = self._db.max_id()
            if (previous is not None and previous.epoch == epoch and previous.dim == meta.dim
                    and previous.metric == meta.metric):
                loaded = _Loaded(previous.vectors, None, previous.base_generation, previous.pending,
                                 previous.from_files)
                loaded.pending += self._replay(previous.vectors, previous.max_id, count, meta.dim)
            elif use_files:
                loaded = self._from_checkpoint(meta, epoch, count, top)
            else:
                loaded = _Loaded()
            if loaded.vectors is None:
                kind = config.kind_for(count)
                if kind != "flat" and count > SYNC_BUILD_MAX and not sync_build:
                    kind = "flat"  # serve exact results now; _maybe_rebuild builds the right kind
                loaded.vectors = VectorIndex.build(kind, meta.dim, meta.metric, config,
                                                   lambda: self._db.all_vectors(meta.dim), count)
                loaded.pending = max(1, count)
            table = PrototypeTable.build(classes, meta.dim, meta.metric, loaded.protos)
        return State(meta.generation, meta.dim, meta.metric, meta.extra, meta.backend, meta.created,
                     count, loaded.vectors, table, loaded.from_files, epoch=epoch, config=config,
                     base_generation=loaded.base, max_id=top, pending=loaded.pending)

    def _checked_meta(self) -> MetaInfo:
        """The settings in SQLite, refused when no store could have written them."""
        meta = self._db.read_meta()
        check_format_version(meta.format_version, self.path)
        if meta.metric not in METRICS or meta.dim < 1:
            raise CorruptIndexError(
                f"{self.path}/{META_NAME} has invalid settings (dim={meta.dim}, metric={meta.metric!r}); "
                "restore the index from a backup"
            )
        return meta

    def _from_checkpoint(self, meta: MetaInfo, epoch: int, count: int, top: int) -> _Loaded:
        """The checkpoint files of this epoch, with what changed since replayed onto them."""
        vectors, protos, base = load_checkpoint(self.path, meta.generation, meta.dim, meta.metric,
                                                epoch, mmap=self._mmap)
        loaded = _Loaded(vectors, protos, base)
        if vectors is not None:
            loaded.from_files = protos is not None
            if checkpoint_is_current(self.path, base, count, top):
                loaded.pending = 0  # ids only grow: same max id and count means nothing changed
            else:
                loaded.pending = self._replay(vectors, None, count, meta.dim)
            if base != meta.generation:
                loaded.pending = max(loaded.pending, 1)
        return loaded

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
        if live_known and self._db.count_upto(known_max) != live_known:
            current = self._db.all_ids()
            have = vectors.ids()
            gone = np.setdiff1d(have, current, assume_unique=True)
            vectors.remove(gone)
            changed += len(gone)
        to_side = vectors.kind == "hnsw" and count - live_known > HNSW_REPLAY_MAX
        for ids, vecs in self._db.vectors_after(known_max, dim):
            vectors.add(vecs, ids, side=to_side)
            changed += len(ids)
        return changed

    def _needs_persist(self, st: State) -> bool:
        """True when the files on disk do not describe ``st`` well enough to be left as they are."""
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

    def _manifest_for(self, st: State, files: dict[str, str], sizes: dict[str, int] | None = None,
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
                                           lambda: self._db.all_vectors(st.dim), st.count)
        files, sizes = write_checkpoint(self.path, st.generation, st.vectors, st.protos.to_faiss())
        write_manifest(self.path, self._manifest_for(st, files, sizes))
        remove_stale(self.path, st.generation)
        st.base_generation = st.generation
        st.pending = 0
        st.from_files = True
        self._dirty = False


def checkpoint_is_current(directory: Path, generation: int, count: int, top: int) -> bool:
    """True when the checkpoint's record count and largest id equal SQLite's (no replay needed)."""
    try:
        manifest = read_manifest(directory)
    except ManifestUnreadable:
        return False
    return (manifest is not None and manifest.get("generation") == generation
            and manifest.get("count") == count and manifest.get("max_id") == top)


__all__ = ["HNSW_REPLAY_MAX", "SYNC_BUILD_MAX", "State", "StateMixin", "checkpoint_is_current"]
