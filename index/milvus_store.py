"""MilvusStore: the VectorStore API on Milvus (Milvus Lite file, server or cluster).

The index directory stays local and small: ``manifest.json`` (backend, URI,
collection names, dim, metric, index settings, the caller's ``extra``), the
example copies of ``FewShotIndex`` and ``milvus_session.json`` (the last write's
timestamp, see below). Records live in Milvus, in two collections:

* ``<name>``: ``id`` (INT64 primary key, assigned here so that re-encoding keeps
  ids), ``label``, ``metadata`` (JSON text), ``created`` and ``vector``;
* ``<name>_classes``: one row per label with its example ``count``, the exact
  float64 vector sum (base64 text, so prototypes do not drift) and the
  prototype ``vector`` (searched for classification, always FLAT = exact).

Design points (each from a measured behaviour of Milvus 2.3 and Milvus Lite 3):

* **Consistency.** A server's default (Bounded) consistency hides a just-added
  class for up to ~5 s, and Strong consistency makes *every* search wait for
  the newest timestamp (~200-400 ms each on the 2.3.5 standalone server). This
  store reads its own writes with a *guarantee timestamp*: after each insert
  or delete it records the mutation timestamp Milvus returned (in memory and
  in ``milvus_session.json``, so the next CLI process sees it too) and searches
  with ``consistency_level="Customized", guarantee_timestamp=ts``. The first
  query after a write waits until the server has applied it; later queries
  cost what Bounded costs. Writes from other machines are seen within the
  server's Bounded staleness. Deletes carry no timestamp on a 2.3 server, so
  reads within ``READ_AFTER_DELETE_STRONG_S`` (10 s) of a delete made through
  this index directory use Strong. Milvus Lite has a single in-process engine
  and returns no timestamps; it is always read-your-writes.
* **Counts.** A server counts deleted rows in ``get_collection_stats`` until
  compaction, so ``count()`` is a ``count(*)`` query.
* **Deletes.** ``delete()`` returns a dict on a server and a list on Lite, and
  a server reports ids that never existed as deleted; removals therefore first
  fetch the rows (their vectors are needed for the class sums anyway) and
  report how many were found.
* **Milvus Lite** (a ``*.db`` path) is one process at a time, and closing the
  client does not release its data-directory lock: :meth:`close` also stops
  the embedded server for that path (reference-counted within the process).
* **Timeouts.** Every call carries ``timeout`` seconds; an unreachable server
  raises :class:`StoreError` with the URI and what to check.

Index types map onto the portable Milvus ones: ``flat`` -> FLAT, ``hnsw`` ->
HNSW (M and efConstruction both given), ``ivf`` -> IVF_FLAT, ``ivfpq`` ->
IVF_SQ8 (8-bit scalar quantisation: IVF_PQ is not available everywhere), and
``auto`` -> AUTOINDEX on a server, FLAT on Milvus Lite.

Writers on one machine serialise on the index directory lock; writers on
several machines sharing one collection can race on a class sum (Milvus has no
transactions): ``repair()`` recomputes the sums from the records.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import temp_path_for
from .base import Hit, Record, StoreSnapshot, VectorStore, cover_records
from .blobs import BlobStore, blob_keys
from .common import (REBUILD_PARAMS, check_rewrite, check_same_shape, class_deltas, closing_on_error, create_args,
                     is_index_dir, label_filter, merged_config, refuse_existing, refuse_foreign_dir)
from .errors import LockTimeoutError, NotAnIndexError, StoreError, ValidationError
from .index_config import IndexConfig
from .locking import DirLock
from .manifest import ManifestUnreadable, build_manifest, check_format_version, read_manifest, write_manifest
from .prototypes import prototype_matrix
from .validation import prepare_vectors, validate_dim, validate_k, validate_label, validate_timeout

BACKEND = "milvus"
SESSION_NAME = "milvus_session.json"
#: Milvus caps top-k (and offset + limit) at 16384.
MAX_TOPK = 16384
MAX_VARCHAR = 65535
#: Default seconds per Milvus call (FEWSHOT_MILVUS_TIMEOUT overrides), and at most this to connect.
DEFAULT_TIMEOUT_S = float(os.environ.get("FEWSHOT_MILVUS_TIMEOUT", "30"))
CONNECT_TIMEOUT_S = 10.0
#: Reads this soon after a delete use Strong consistency: a 2.3 server returns no
#: timestamp for deletes, so a guarantee timestamp cannot cover them; after this
#: long the server's Bounded staleness (5 s by default) has passed anyway.
READ_AFTER_DELETE_STRONG_S = 10.0
_LABEL_BYTES = 1024
_BATCH = 2000
_ID_PAGE = 512
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")

_lite_lock = threading.Lock()
_lite_refs: dict[str, int] = {}


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The manifest's settings an add is checked against (see :meth:`MilvusStore._writer`)."""

    extra: dict[str, Any]
    dim: int
    metric: str


def is_server_uri(uri: str) -> bool:
    """True for a Milvus server/cluster URI, False for a Milvus Lite file path."""
    return uri.startswith(_SERVER_SCHEMES)


class _QuietIterator(logging.Filter):
    """Milvus Lite has no MVCC timestamp for query iterators; pymilvus warns on every page. Not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


def _import_pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise StoreError(
            "the Milvus backend needs pymilvus (and milvus-lite for local files): pip install 'fewshot[milvus]'"
        ) from None
    logger = logging.getLogger("pymilvus.client.iterator.query_iterator")
    if not any(isinstance(f, _QuietIterator) for f in logger.filters):
        logger.addFilter(_QuietIterator())
    return pymilvus


class MilvusStore(VectorStore):
    """VectorStore on Milvus. Use :meth:`create` / :meth:`open`; the constructor is internal."""

    def __init__(self, path: Path, manifest: dict[str, Any], *, readonly: bool, timeout: float,
                 token: str | None, lock_timeout: float) -> None:
        self.path = path
        self._manifest = manifest
        self._readonly = readonly
        self._timeout = timeout
        self._lock_timeout = lock_timeout
        self._closed = False
        self._mutex = threading.RLock()
        self._uri = self._resolve_uri(manifest["uri"])
        self._lite_path = None if is_server_uri(self._uri) else os.path.abspath(self._uri)
        self._config = IndexConfig.from_json(json.dumps(manifest.get("index", {})))
        self._write_ts = 0  # newest insert/upsert timestamp known (this client or the session file)
        self._delete_time = 0.0  # wall-clock time of the newest delete known
        self._last_id = 0
        # Class rows this object wrote last (label -> (count, float64 sum)): an add
        # then needs no read-back of the row, which on a server would wait for the
        # previous write to become visible. Dropped when another process writes.
        self._class_cache: dict[str, tuple[int, np.ndarray]] = {}
        self._cache_generation: int | None = None
        self._client = self._connect(token)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(  # the FaissStore.create arguments, then where the Milvus collections live
        cls, path: str | Path, dim: int, metric: str = "cosine", extra: dict[str, Any] | None = None, *,
        uri: str | None = None,
        token: str | None = None,
        collection: str | None = None,
        index_type: str = "auto",
        index_params: dict[str, Any] | None = None,
        timeout: float | None = None,
        exist_ok: bool = False,
        lock_timeout: float = 10.0,
        **_ignored: Any,
    ) -> "MilvusStore":
        """Create the index directory and its two Milvus collections.

        ``uri``: ``http://host:19530`` (server/cluster; ``token`` optional, or
        ``FEWSHOT_MILVUS_TOKEN``) or a Milvus Lite file ending in ``.db``
        (default ``<path>/milvus.db``). The token is never written to disk.
        """
        timeout = _validate_call_timeout(timeout)
        path, dim, metric, extra, config = create_args(path, dim, metric, extra, index_type, index_params)
        if is_index_dir(path):
            if not exist_ok:
                refuse_existing(path)
            return check_same_shape(cls.open(path, token=token, timeout=timeout), path, dim, metric)
        stored_uri = _stored_uri(uri if uri is not None else str(path / "milvus.db"), path)
        name = collection or _collection_name(path)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", name):
            raise ValidationError(f"collection name {name!r} must be letters, digits and _ (not starting with a digit)")
        made_dir = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        refuse_foreign_dir(path)
        if dim * 8 * 4 // 3 + 8 > MAX_VARCHAR:
            raise ValidationError(f"dim {dim} is too large for the Milvus backend (at most 6000)")
        now = time.time()
        manifest = build_manifest(
            dim=dim, metric=metric, backend=BACKEND, generation=0, count=0, n_labels=0, extra=extra,
            files={}, created=now, updated=now, uri=stored_uri, collection=name, epoch=0,
            index=json.loads(config.to_json()),
        )
        return cls._initialise(path, manifest, config, made_dir=made_dir, timeout=timeout, token=token,
                               lock_timeout=lock_timeout)

    @classmethod
    def _initialise(cls, path: Path, manifest: dict[str, Any], config: IndexConfig, *, made_dir: bool,
                    timeout: float, token: str | None, lock_timeout: float) -> "MilvusStore":
        """Under the lock: connect, make both collections, then write the manifest.

        The manifest comes last so that a failure leaves no index that names
        missing collections; a directory this create made is removed again.
        """
        name = manifest["collection"]
        with DirLock(path, lock_timeout):
            try:
                store = cls(path, manifest, readonly=False, timeout=timeout, token=token, lock_timeout=lock_timeout)
            except BaseException:
                if made_dir:  # leave no empty index directory behind a failed init
                    shutil.rmtree(path, ignore_errors=True)
                raise
            try:
                with store._calls("create collections"):
                    for coll in (name, name + "_classes"):
                        if store._client.has_collection(coll, timeout=timeout):
                            raise StoreError(
                                f"Milvus at {store._uri} already has a collection {coll!r}; pass another "
                                "collection name or drop it"
                            )
                    store._create_collections(name, manifest["dim"], manifest["metric"], config)
                write_manifest(path, manifest)
            except BaseException:
                store.close()
                if made_dir:
                    shutil.rmtree(path, ignore_errors=True)
                raise
        return store

    @classmethod
    def open(
        cls, path: str | Path, *, readonly: bool = False,
        token: str | None = None,
        timeout: float | None = None,
        lock_timeout: float = 10.0,
        **_ignored: Any,
    ) -> "MilvusStore":
        """Open an index directory created with ``backend="milvus"``."""
        path = Path(path)
        timeout = _validate_call_timeout(timeout)
        if not path.is_dir():
            raise NotAnIndexError(f"{path} is not a fewshot index (no such directory); create one with `fewshot init`")
        try:
            manifest = read_manifest(path)
        except ManifestUnreadable as exc:
            raise StoreError(f"{exc}; the Milvus settings of this index cannot be read") from None
        if manifest is None:
            raise NotAnIndexError(f"{path} is not a fewshot index (no manifest.json); create one with `fewshot init`")
        check_format_version(manifest["format_version"], path)
        if manifest.get("backend") != BACKEND:
            raise StoreError(f"{path} is a {manifest.get('backend')!r} index, not a Milvus one")
        store = cls(path, manifest, readonly=readonly, timeout=timeout, token=token, lock_timeout=lock_timeout)
        with closing_on_error(store):
            with store._calls("open"):
                name = manifest["collection"]
                for coll in (name, name + "_classes"):
                    if not store._client.has_collection(coll, timeout=timeout):
                        raise StoreError(
                            f"collection {coll!r} is missing on Milvus at {store._uri}; the index data is gone "
                            "(restore it, or create a new index)"
                        )
                    store._client.load_collection(coll, timeout=timeout)
            store._read_session()
        return store

    def close(self) -> None:
        """Close the client; for Milvus Lite also stop its embedded server (releases the file lock)."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self._lite_path is not None:
            _release_lite(self._lite_path)

    def flush(self) -> None:
        """Ask the server to seal and persist recent inserts (no-op on Milvus Lite)."""
        self._check_open()
        if self._readonly or self._lite_path is not None:
            return
        with self._calls("flush"):
            for coll in self._collections():
                self._client.flush(coll, timeout=self._timeout)

    def __repr__(self) -> str:
        return f"MilvusStore({str(self.path)!r}, uri={self._uri!r}, collection={self._manifest.get('collection')!r})"

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._manifest["dim"])

    @property
    def metric(self) -> str:
        """``"cosine"`` or ``"l2"``."""
        return str(self._manifest["metric"])

    @property
    def extra(self) -> dict[str, Any]:
        """Copy of the caller's free-form fields."""
        return json.loads(json.dumps(self._manifest.get("extra", {})))

    @property
    def generation(self) -> int:
        """Writes made through this index directory (any process)."""
        return int(self._session().get("generation", self._manifest.get("generation", 0)))

    @property
    def backend(self) -> str:
        """``"milvus"``."""
        return BACKEND

    @property
    def uri(self) -> str:
        """The Milvus URI (a server URL or the Milvus Lite file)."""
        return self._uri

    @property
    def collection(self) -> str:
        """Name of the records collection."""
        return str(self._manifest["collection"])

    # ------------------------------------------------------------------ writes

    def _check_batch(self, labels: list[str], metadata: list[str]) -> None:
        """Milvus VARCHAR limits: labels up to ``_LABEL_BYTES``, metadata JSON up to ``MAX_VARCHAR`` bytes."""
        for label in labels:
            if len(label.encode("utf-8")) > _LABEL_BYTES:
                raise ValidationError(f"label {label[:40]!r}... is longer than {_LABEL_BYTES} bytes in UTF-8")
        for i, m in enumerate(metadata):
            if len(m.encode("utf-8")) > MAX_VARCHAR:
                raise ValidationError(f"metadata[{i}] is {len(m.encode('utf-8'))} bytes as JSON; Milvus allows "
                                      f"{MAX_VARCHAR}")

    def _insert(self, st: Any, vecs: np.ndarray, labs: list[str], metas: list[str]) -> np.ndarray:
        """Insert in batches, then apply the class deltas (under the lock :meth:`_writer` holds)."""
        ids = self._new_ids(len(vecs))
        now = time.time()
        rows = [{"id": int(i), "label": lab, "metadata": m, "created": now, "vector": v}
                for i, lab, m, v in zip(ids.tolist(), labs, metas, vecs.tolist())]
        with self._calls("insert"):
            for start in range(0, len(rows), _BATCH):
                self._client.insert(self.collection, rows[start : start + _BATCH], timeout=self._timeout)
                self._note_write()
            self._apply_class_deltas(class_deltas(labs, vecs, self.dim))
        return ids

    def _remove_ids(self, wanted: np.ndarray) -> int:
        self._check_writable()
        with self._writing():
            rows = self._fetch_rows(sorted({int(i) for i in wanted}), vectors=True)
            return self._delete_rows(rows)

    def _remove_label(self, label: str) -> int:
        self._check_writable()
        with self._writing():
            ids = self._ids(f"label == {_quote(label)}")
            rows = self._fetch_rows(ids.tolist(), vectors=True)
            return self._delete_rows(rows)

    def _delete_rows(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        vecs = np.asarray([r["vector"] for r in rows], dtype=np.float32)
        deltas = class_deltas([r["label"] for r in rows], vecs, self.dim, sign=-1)
        with self._calls("delete"):
            ids = [int(r["id"]) for r in rows]
            for start in range(0, len(ids), _BATCH):
                _deleted_count(self._client.delete(self.collection, ids=ids[start : start + _BATCH],
                                                   timeout=self._timeout))
                self._note_write(deleted=True)
            self._apply_class_deltas(deltas)
        keys = blob_keys(json.loads(r["metadata"]) for r in rows)
        if keys:  # under the lock, after the delete: copies no record names any more go too
            BlobStore(self.path).delete(k for k in keys if k not in self._referenced_blobs(keys))
        return len(rows)

    def _referenced_blobs(self, keys: list[str]) -> set[str]:
        """The blob keys among ``keys`` still named by some record (one scan of the metadata)."""
        wanted = set(keys)
        found: set[str] = set()
        for row in self._query_all(self.collection, "id >= 0", ["metadata"]):
            found.update(k for k in blob_keys([json.loads(row["metadata"])]) if k in wanted)
        return found

    def _rewrite(self, wanted: np.ndarray, vectors: np.ndarray, dim: int | None,
                 extra_update: dict[str, Any], fill: Any) -> int:
        """Keep ids, labels and metadata; records added or removed meanwhile: see ``fill``.

        New collections are filled first and the manifest is switched to them
        in one atomic rename, so a failure midway leaves the old index intact.
        """
        self._check_writable()
        new_dim = validate_dim(dim) if dim is not None else self.dim
        vecs = check_rewrite(wanted, vectors, new_dim, self.metric)
        with self._writing():
            existing = self._ids("id >= 0")
            wanted, vecs = cover_records(existing, wanted, vecs, lambda missing: self.get(missing.tolist()), fill,
                                         new_dim, self.metric)
            order = {int(i): j for j, i in enumerate(wanted.tolist())}
            self._migrate(self._config, new_dim, existing, lambda rid: vecs[order[rid]], extra_update)
            return len(wanted)

    def _migrate(self, config: IndexConfig, dim: int, ids: np.ndarray, vector_of: Any,
                 extra_update: dict[str, Any]) -> None:
        """Copy every record into new collections (new vectors / index), then switch the manifest.

        Queries keep using the old collections until the manifest rename; a
        failure midway leaves the index on them (the half-filled copy is
        dropped by the next attempt).
        """
        old_name = self.collection
        epoch = int(self._manifest.get("epoch", 0)) + 1
        new_name = f"{re.sub(r'_e[0-9]+$', '', old_name)}_e{epoch}"
        with self._calls("copy to new collections"):
            for coll in (new_name, new_name + "_classes"):
                if self._client.has_collection(coll, timeout=self._timeout):
                    self._client.drop_collection(coll, timeout=self._timeout)
            self._create_collections(new_name, dim, self.metric, config)
            sums: dict[str, tuple[int, np.ndarray]] = {}
            for page in _pages(ids.tolist(), _ID_PAGE):
                rows = self._fetch_rows(page, vectors=True)
                batch = []
                for r in rows:
                    v = vector_of(int(r["id"]))
                    v = np.asarray(r["vector"] if v is None else v, dtype=np.float32)
                    batch.append({"id": int(r["id"]), "label": r["label"], "metadata": r["metadata"],
                                  "created": float(r["created"]), "vector": v.tolist()})
                    c, s = sums.get(r["label"], (0, np.zeros(dim)))
                    sums[r["label"]] = (c + 1, s + v.astype(np.float64))
                if batch:
                    self._client.insert(new_name, batch, timeout=self._timeout)
                    self._note_write(new_name)
            self._write_classes(new_name + "_classes", sums, dim)
            self._note_write(new_name + "_classes")
        manifest = dict(self._manifest)
        manifest.update(collection=new_name, dim=dim, epoch=epoch, updated=time.time(),
                        index=json.loads(config.to_json()),
                        extra={**manifest.get("extra", {}), **extra_update})
        write_manifest(self.path, manifest)
        self._manifest = manifest
        self._config = config
        with self._calls("drop old collections"):
            for coll in (old_name, old_name + "_classes"):
                self._client.drop_collection(coll, timeout=self._timeout)

    def set_index_type(self, index_type: str | None = None, *, wait: bool = True, **params: Any) -> None:
        """Change the Milvus index type/parameters.

        Search-time parameters (``ef_search``, ``nprobe``) apply at once; a
        new index type or build parameter copies the records into new
        collections with that index and switches to them (queries keep using
        the old ones meanwhile; Milvus builds indexes in the background).
        """
        self._check_writable()
        config = merged_config(self._config, index_type, params)
        rebuild = config.index_type != self._config.index_type or REBUILD_PARAMS & set(params)
        with self._writing():
            if rebuild:
                self._migrate(config, self.dim, self._ids("id >= 0"), lambda rid: None, {})
            else:
                manifest = dict(self._manifest, index=json.loads(config.to_json()), updated=time.time())
                write_manifest(self.path, manifest)
                self._manifest = manifest
                self._config = config

    def index_info(self) -> dict[str, Any]:
        """Where the vectors live and how they are indexed."""
        kind, build = self._index_spec(self._config)
        return {"index_type": self._config.index_type, "kind": kind, "build_params": build,
                "uri": self._uri, "collection": self.collection, "lite": self._lite_path is not None,
                "consistency": "read-your-writes via guarantee timestamp; Strong for 10 s after a delete",
                "config": json.loads(self._config.to_json())}

    def drop(self) -> None:
        """Delete this index's collections from Milvus (the index directory is left to the caller)."""
        self._check_writable()
        with self._writing(), self._calls("drop"):
            for coll in self._collections():
                if self._client.has_collection(coll, timeout=self._timeout):
                    self._client.drop_collection(coll, timeout=self._timeout)

    def _set_extra(self, update: dict[str, Any]) -> None:
        """Merge ``update`` into ``extra`` (stored in manifest.json)."""
        self._check_writable()
        with self._writing():
            manifest = dict(self._manifest)
            manifest["extra"] = {**manifest.get("extra", {}), **update}
            manifest["updated"] = time.time()
            write_manifest(self.path, manifest)
            self._manifest = manifest

    # ------------------------------------------------------------------ reads

    def _search(self, queries: np.ndarray, k: int, labels: Sequence[str] | None,
                ef_search: int | None, nprobe: int | None) -> list[list[Hit]]:
        """k nearest records per query, best first (at most 16384, Milvus' top-k limit).

        A label filter is a scalar filter inside Milvus; with an approximate
        index Milvus scans the filtered rows exhaustively when few match.
        """
        k = validate_k(k)
        wanted = None if labels is None else label_filter(labels)
        q = prepare_vectors(queries, self.dim, self.metric, what="queries")
        if len(q) == 0:
            return []
        if wanted is not None and not wanted:
            return [[] for _ in range(len(q))]
        expr = "" if wanted is None else f"label in [{', '.join(_quote(x) for x in wanted)}]"
        params = self._search_params(ef_search, nprobe, k)
        with self._calls("search"):
            res = self._client.search(
                self.collection, data=q.tolist(), limit=min(k, MAX_TOPK), filter=expr,
                output_fields=["label", "metadata"], search_params=params, timeout=self._timeout,
                **self._consistency(),
            )
        out = []
        for row in res:
            hits = [Hit(int(h["id"]), h["entity"]["label"], self._score(h["distance"]),
                        json.loads(h["entity"]["metadata"])) for h in row]
            hits.sort(key=lambda h: (-h.score, h.id))
            out.append(hits)
        return out

    def search_prototypes(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """k nearest class prototypes per query (exact: the classes collection is FLAT)."""
        k = validate_k(k)
        q = prepare_vectors(queries, self.dim, self.metric, what="queries")
        if len(q) == 0:
            return []
        if k > MAX_TOPK:  # beyond Milvus' top-k limit: rank every prototype here (exact)
            m, counts = VectorStore.top_classes(self, q, k), self.labels()
            return [[Hit(-1, label, score, {"count": counts[label]}) for label, score in zip(labels, row.tolist())]
                    for labels, row in zip(m.labels, m.scores)]
        with self._calls("search classes"):
            res = self._client.search(
                self.collection + "_classes", data=q.tolist(), limit=k, output_fields=["label", "count"],
                search_params={"metric_type": self._milvus_metric(), "params": {}}, timeout=self._timeout,
                **self._consistency(),
            )
        out = []
        for row in res:
            hits = [Hit(-1, h["entity"]["label"], self._score(h["distance"]), {"count": int(h["entity"]["count"])})
                    for h in row]
            hits.sort(key=lambda h: (-h.score, h.label))
            out.append(hits)
        return out

    def prototypes(self) -> tuple[list[str], np.ndarray]:
        """(labels sorted, float32 [n_labels, dim]) prototypes."""
        rows = self._all_classes(["label", "vector"])
        rows.sort(key=lambda r: r["label"])
        mat = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), self.dim)
        return [r["label"] for r in rows], mat

    def count(self) -> int:
        """Number of stored records (a ``count(*)`` query: server statistics include deleted rows)."""
        self._check_open()
        with self._calls("count"):
            res = self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                     timeout=self._timeout, **self._consistency())
        return int(res[0]["count(*)"]) if res else 0

    def labels(self) -> dict[str, int]:
        """label -> record count, sorted by label."""
        rows = self._all_classes(["label", "count"])
        return {r["label"]: int(r["count"]) for r in sorted(rows, key=lambda r: r["label"])}

    def _rows_by_id(self, wanted: np.ndarray) -> dict[int, Any]:
        self._check_open()
        return {int(r["id"]): r for r in self._fetch_rows(sorted({int(i) for i in wanted}), vectors=True)}

    @staticmethod
    def _record_of(row: Any) -> Record:
        return _record(row)

    def records(self, label: str | None = None) -> Iterator[Record]:
        """All records (optionally of one label) in id order, fetched page by page."""
        expr = "id >= 0" if label is None else f"label == {_quote(validate_label(label))}"
        ids = self._ids(expr)
        for page in _pages(ids.tolist(), _ID_PAGE):
            rows = sorted(self._fetch_rows(page, vectors=True), key=lambda r: int(r["id"]))
            for r in rows:
                yield _record(r)

    # ------------------------------------------------------------------ maintenance

    def verify(self) -> list[str]:
        """Collections present with the right dim; class rows vs a recomputation from the records."""
        self._check_open()
        problems: list[str] = []
        with self._calls("verify"):
            for coll in self._collections():
                if not self._client.has_collection(coll, timeout=self._timeout):
                    return [f"collection {coll!r} is missing on {self._uri}; restore it or create a new index"]
                desc = self._client.describe_collection(coll, timeout=self._timeout)
                dims = [f.get("params", {}).get("dim") for f in desc["fields"] if f["name"] == "vector"]
                if not dims or int(dims[0]) != self.dim:
                    problems.append(f"collection {coll!r} has vector dim {dims[0] if dims else None}, "
                                    f"manifest says {self.dim}; restore the matching manifest")
        if problems:
            return problems
        recomputed = self._recompute_classes()
        stored = {r["label"]: r for r in self._all_classes(["label", "count", "vsum"])}
        for label in sorted(set(stored) - set(recomputed)):
            problems.append(f"class {label!r} has a classes row but no records; run repair")
        for label, (count, vsum) in recomputed.items():
            row = stored.get(label)
            if row is None:
                problems.append(f"class {label!r} has {count} records but no classes row; run repair")
                continue
            if int(row["count"]) != count:
                problems.append(f"class {label!r} count is {row['count']} but it has {count} records; run repair")
            err = float(np.max(np.abs(_decode_sum(row["vsum"], self.dim) - vsum))) if count else 0.0
            if not err <= 1e-6 * max(1, count):
                problems.append(f"class {label!r} prototype sum differs from its records (max error {err:.3g}); "
                                "run repair")
        total = self.count()
        if total != sum(c for c, _ in recomputed.values()):
            problems.append(f"count(*) says {total} records but the records sum to "
                            f"{sum(c for c, _ in recomputed.values())}; run repair")
        return problems

    def _rebuild_derived(self) -> None:
        """Recompute every class row from the records."""
        with self._writing():
            recomputed = self._recompute_classes()
            with self._calls("repair"):
                name = self.collection + "_classes"
                existing = [r["label"] for r in self._all_classes(["label"])]
                stale = [lab for lab in existing if lab not in recomputed]
                if stale:
                    self._client.delete(name, filter=_label_in(stale), timeout=self._timeout)
                self._write_classes(name, recomputed, self.dim)
                self._note_write(name, deleted=bool(stale))

    # ------------------------------------------------------------------ internals

    def _resolve_uri(self, stored: str) -> str:
        if is_server_uri(stored):
            return stored
        p = Path(stored)
        return str(p if p.is_absolute() else (self.path / p))

    def _connect(self, token: str | None) -> Any:
        pymilvus = _import_pymilvus()
        token = token if token is not None else os.environ.get("FEWSHOT_MILVUS_TOKEN", "")
        if self._lite_path is not None:
            if not self._uri.endswith(".db"):
                raise ValidationError(f"a Milvus Lite path must end in .db; got {self._uri!r}")
            _acquire_lite(self._lite_path)
        try:
            with self._calls("connect"):
                # A refused connection is retried until the timeout: cap the wait for a dead server.
                return pymilvus.MilvusClient(uri=self._uri, token=token or "",
                                             timeout=min(self._timeout, CONNECT_TIMEOUT_S))
        except BaseException:
            if self._lite_path is not None:
                _release_lite(self._lite_path)
            raise

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Map pymilvus/gRPC failures to StoreError with the URI and what to do."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:  # pymilvus raises MilvusException and bare grpc/Runtime errors
            text = " ".join(str(exc).split())
            lowered = text.lower()
            if self._lite_path is not None and ("lock" in lowered or "start" in lowered and "server" in lowered
                                                or "open local milvus" in lowered):
                raise LockTimeoutError(
                    f"the Milvus Lite file {self._lite_path} is in use by another process (Milvus Lite is "
                    f"single-process); close that process or use a Milvus server ({text})"
                ) from None
            if any(s in lowered for s in ("connect", "unavailable", "deadline", "timeout", "timed out",
                                          "illegal uri", "refused")):
                raise StoreError(
                    f"cannot reach Milvus at {self._uri} during {what} ({text}); check that the server is "
                    "running and the URI (--uri) and token are right"
                ) from None
            raise StoreError(f"Milvus {what} failed at {self._uri}: {text}") from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        self._check_writable()
        with self._mutex, DirLock(self.path, self._lock_timeout):
            self._refresh_manifest()
            yield

    @contextlib.contextmanager
    def _writer(self) -> Iterator[_Settings]:
        """:meth:`_writing`, yielding the manifest's settings for :meth:`VectorStore.add`."""
        with self._writing():
            yield _Settings(self._manifest.get("extra", {}), self.dim, self.metric)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[StoreSnapshot]:
        """The current manifest's state (extra fields, collection); Milvus has no read snapshots.

        Reads inside go to the collection this manifest names, so after another
        process reindexed they answer from the new collection with its extra.
        """
        self._check_open()
        with self._mutex:
            self._refresh_manifest()
            yield StoreSnapshot(self, self.extra)

    def _refresh_manifest(self) -> None:
        """Follow a manifest that another process switched (a reindex moves records to new collections)."""
        try:
            manifest = read_manifest(self.path)
        except ManifestUnreadable:
            return
        if not manifest or manifest.get("backend") != BACKEND or manifest == self._manifest:
            return
        if manifest.get("collection") != self._manifest.get("collection"):
            with self._calls("load collections"):
                for coll in (manifest["collection"], manifest["collection"] + "_classes"):
                    self._client.load_collection(coll, timeout=self._timeout)
            self._class_cache = {}
        self._manifest = manifest
        self._config = IndexConfig.from_json(json.dumps(manifest.get("index", {})))

    def _collections(self) -> tuple[str, str]:
        return self.collection, self.collection + "_classes"

    def _milvus_metric(self) -> str:
        return "IP" if self.metric == "cosine" else "L2"

    def _score(self, distance: float) -> float:
        # Milvus' L2 "distance" is the squared distance, like FAISS.
        return float(distance) if self.metric == "cosine" else -float(distance)

    def _index_spec(self, config: IndexConfig) -> tuple[str, dict[str, Any]]:
        kind = config.index_type
        if kind == "auto":
            return ("FLAT", {}) if self._lite_path is not None else ("AUTOINDEX", {})
        if kind == "flat":
            return "FLAT", {}
        if kind == "hnsw":
            return "HNSW", {"M": config.hnsw_m, "efConstruction": config.ef_construction}
        nlist = config.nlist or 1024
        return ("IVF_FLAT" if kind == "ivf" else "IVF_SQ8"), {"nlist": nlist}

    def _search_params(self, ef_search: int | None, nprobe: int | None, k: int) -> dict[str, Any]:
        kind = self._config.index_type
        params: dict[str, Any] = {}
        if kind == "hnsw":
            params["ef"] = max(int(ef_search or self._config.ef_search), k)
        elif kind in ("ivf", "ivfpq"):
            nlist = self._config.nlist or 1024
            params["nprobe"] = int(nprobe or self._config.nprobe_for(nlist))
        return {"metric_type": self._milvus_metric(), "params": params}

    def _create_collections(self, name: str, dim: int, metric: str, config: IndexConfig) -> None:
        from pymilvus import DataType, MilvusClient

        mt = "IP" if metric == "cosine" else "L2"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("label", DataType.VARCHAR, max_length=_LABEL_BYTES)
        schema.add_field("metadata", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index_type, params = self._index_spec(config)
        ip = self._client.prepare_index_params()
        ip.add_index(field_name="vector", index_type=index_type, metric_type=mt, params=params)
        self._client.create_collection(name, schema=schema, index_params=ip, timeout=self._timeout)
        cschema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        cschema.add_field("label", DataType.VARCHAR, max_length=_LABEL_BYTES, is_primary=True)
        cschema.add_field("count", DataType.INT64)
        cschema.add_field("vsum", DataType.VARCHAR, max_length=MAX_VARCHAR)
        cschema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        cip = self._client.prepare_index_params()
        cip.add_index(field_name="vector", index_type="FLAT", metric_type=mt, params={})
        self._client.create_collection(name + "_classes", schema=cschema, index_params=cip, timeout=self._timeout)

    # -- consistency -------------------------------------------------------------

    def _session(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / SESSION_NAME).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _read_session(self) -> None:
        session = self._session()
        ts, deleted = session.get("write_ts", 0), session.get("delete_time", 0.0)
        if isinstance(ts, int) and ts > self._write_ts:
            self._write_ts = ts
        if isinstance(deleted, (int, float)) and deleted > self._delete_time:
            self._delete_time = float(deleted)

    def _note_write(self, collection: str | None = None, *, deleted: bool = False) -> None:
        """Record the newest mutation timestamp (memory + session file) for read-your-writes."""
        ts = 0
        try:
            from pymilvus.client import ts_utils

            handler = self._client._get_connection()  # noqa: SLF001 - the only way to the mutation ts
            ts = int(ts_utils.get_collection_ts(collection or self.collection, handler.server_address, "") or 0)
        except Exception:  # another pymilvus: no timestamp, treat like a delete (Strong for a while)
            deleted = True
        now = time.time()
        self._write_ts = max(self._write_ts, ts)
        if deleted:
            self._delete_time = now
        session = self._session()
        previous = int(session.get("generation", 0) or 0)
        session.update(write_ts=max(int(session.get("write_ts", 0) or 0), ts), write_time=now,
                       generation=previous + 1)
        if self._cache_generation == previous:
            self._cache_generation = previous + 1  # our own write: the class cache stays valid
        if deleted:
            session["delete_time"] = now
        target = self.path / SESSION_NAME
        tmp = temp_path_for(target)
        try:
            tmp.write_text(json.dumps(session), encoding="utf-8")
            os.replace(tmp, target)  # a hint, not data: no fsync
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _consistency(self) -> dict[str, Any]:
        """Read kwargs: Strong just after a delete, else our last write's guarantee timestamp, else Bounded."""
        if self._lite_path is not None:
            return {}
        self._read_session()
        if time.time() - self._delete_time < READ_AFTER_DELETE_STRONG_S:
            return {"consistency_level": "Strong"}
        if self._write_ts > 0:
            return {"consistency_level": "Customized", "guarantee_timestamp": self._write_ts}
        return {"consistency_level": "Bounded"}

    # -- rows --------------------------------------------------------------------

    def _new_ids(self, n: int) -> np.ndarray:
        """n fresh increasing ids: milliseconds << 20 plus a random offset (unique across clients in practice)."""
        base = (int(time.time() * 1000) << 20) + random.getrandbits(12) * 256
        start = max(self._last_id + 1, base)
        self._last_id = start + n - 1
        return np.arange(start, start + n, dtype=np.int64)

    def _ids(self, expr: str) -> np.ndarray:
        """Sorted ids of the records matching ``expr``."""
        rows = self._query_all(self.collection, expr, ["id"])
        return np.array(sorted({int(r["id"]) for r in rows}), dtype=np.int64)

    def _query_all(self, collection: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every row matching ``expr``: one query (read-your-writes) when under Milvus' 16384-row
        limit, else a query iterator at Strong consistency (iterators ignore guarantee timestamps)."""
        self._check_open()
        with self._calls("query"):
            rows = self._client.query(collection, filter=expr, output_fields=fields, limit=MAX_TOPK,
                                      timeout=self._timeout, **self._consistency())
            if len(rows) < MAX_TOPK:
                return list(rows)
            strong = {} if self._lite_path is not None else {"consistency_level": "Strong"}
            out: list[dict[str, Any]] = []
            it = self._client.query_iterator(collection, batch_size=4096, filter=expr, output_fields=fields,
                                             timeout=self._timeout, **strong)
            try:
                while True:
                    page = it.next()
                    if not page:
                        break
                    out.extend(page)
            finally:
                it.close()
        return out

    def _fetch_rows(self, ids: list[int], *, vectors: bool) -> list[dict[str, Any]]:
        fields = ["id", "label", "metadata", "created"] + (["vector"] if vectors else [])
        out: list[dict[str, Any]] = []
        with self._calls("query records"):
            for page in _pages(ids, _ID_PAGE):
                out.extend(self._client.query(self.collection, ids=page, output_fields=fields,
                                              timeout=self._timeout, **self._consistency()))
        return out

    def _all_classes(self, fields: list[str]) -> list[dict[str, Any]]:
        return self._query_all(self.collection + "_classes", 'label != ""', fields)

    def _apply_class_deltas(self, deltas: dict[str, tuple[int, np.ndarray]]) -> None:
        """Add (count, float64 sum) deltas to the class rows (caller holds the directory lock)."""
        name = self.collection + "_classes"
        if self._session().get("generation") != self._cache_generation:
            self._class_cache.clear()  # another process wrote meanwhile
        current = {lab: self._class_cache[lab] for lab in deltas if lab in self._class_cache}
        labels = [lab for lab in deltas if lab not in current]
        for page in _pages(labels, _ID_PAGE):
            for r in self._client.query(name, filter=_label_in(page), output_fields=["label", "count", "vsum"],
                                        timeout=self._timeout, **self._consistency()):
                current[r["label"]] = (int(r["count"]), _decode_sum(r["vsum"], self.dim))
        updated: dict[str, tuple[int, np.ndarray]] = {}
        gone: list[str] = []
        for label, (dc, ds) in deltas.items():
            c, s = current.get(label, (0, np.zeros(self.dim)))
            c, s = c + int(dc), s + ds
            if c <= 0:
                if label in current:
                    gone.append(label)
            else:
                updated[label] = (c, s)
        for label in gone:
            self._class_cache.pop(label, None)
        try:
            if gone:
                self._client.delete(name, filter=_label_in(gone), timeout=self._timeout)
            self._write_classes(name, updated, self.dim)
        except BaseException:
            self._class_cache.clear()
            raise
        self._class_cache.update(updated)
        self._note_write(name, deleted=bool(gone))
        self._cache_generation = self._session().get("generation")

    def _write_classes(self, name: str, classes: dict[str, tuple[int, np.ndarray]], dim: int) -> None:
        if not classes:
            return
        labels = list(classes)
        counts = np.array([classes[lab][0] for lab in labels])
        sums = np.stack([np.asarray(classes[lab][1], dtype=np.float64) for lab in labels])
        protos = prototype_matrix(counts, sums, self.metric)
        rows = [{"label": lab, "count": int(c), "vsum": _encode_sum(s), "vector": p}
                for lab, c, s, p in zip(labels, counts.tolist(), sums, protos.tolist())]
        for start in range(0, len(rows), _BATCH):
            self._client.upsert(name, rows[start : start + _BATCH], timeout=self._timeout)

    def _recompute_classes(self) -> dict[str, tuple[int, np.ndarray]]:
        sums: dict[str, tuple[int, np.ndarray]] = {}
        for rec in self.records():
            c, s = sums.get(rec.label, (0, np.zeros(self.dim)))
            sums[rec.label] = (c + 1, s + rec.vector.astype(np.float64))
        return dict(sorted(sums.items()))


# ---------------------------------------------------------------------- helpers


def _validate_call_timeout(timeout: Any) -> float:
    t = validate_timeout(DEFAULT_TIMEOUT_S if timeout is None else timeout)
    if t <= 0:
        raise ValidationError("the Milvus call timeout must be > 0 seconds")
    return t


def _stored_uri(uri: str, index_dir: Path) -> str:
    """URI as written in the manifest: Lite files inside the index directory are stored relative."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValidationError("--uri must be http://host:19530 or a Milvus Lite file path ending in .db")
    if is_server_uri(uri):
        return uri
    if not uri.endswith(".db"):
        raise ValidationError(f"a Milvus Lite path must end in .db (e.g. {index_dir}/milvus.db); got {uri!r}; "
                              "for a server use http://host:19530")
    p = Path(uri).resolve()
    try:
        return str(p.relative_to(index_dir.resolve()))
    except ValueError:
        return str(p)


def _collection_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", path.resolve().name)[:40] or "index"
    if not re.match(r"[A-Za-z_]", stem):
        stem = "_" + stem
    return f"fewshot_{stem}_{secrets.token_hex(4)}"


def _quote(label: str) -> str:
    """A Milvus string literal for ``label`` (JSON escaping is what Milvus' parser accepts)."""
    return json.dumps(label, ensure_ascii=False)


def _label_in(labels: Sequence[str]) -> str:
    """Filter for these labels (pymilvus' ``ids=`` does not escape backslashes in string keys)."""
    return f"label in [{', '.join(_quote(x) for x in labels)}]"


def _deleted_count(result: Any) -> int:
    """delete() returns {'delete_count': n} on a server and a list of ids on Milvus Lite."""
    if isinstance(result, dict):
        return int(result.get("delete_count", 0))
    try:
        return len(result)
    except TypeError:
        return 0


def _pages(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _encode_sum(vsum: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vsum, dtype=np.float64).tobytes()).decode("ascii")


def _decode_sum(text: str, dim: int) -> np.ndarray:
    try:
        arr = np.frombuffer(base64.b64decode(text), dtype=np.float64)
    except (ValueError, TypeError):
        arr = np.zeros(0)
    if arr.shape != (dim,):
        return np.full(dim, np.nan)
    return arr.copy()


def _record(row: dict[str, Any]) -> Record:
    return Record(int(row["id"]), row["label"], json.loads(row["metadata"]),
                  np.asarray(row["vector"], dtype=np.float32), float(row["created"]))


def _acquire_lite(path: str) -> None:
    with _lite_lock:
        _lite_refs[path] = _lite_refs.get(path, 0) + 1


def _release_lite(path: str) -> None:
    """Drop one reference; the last one stops the embedded server and frees the file lock."""
    with _lite_lock:
        n = _lite_refs.get(path, 0) - 1
        if n > 0:
            _lite_refs[path] = n
            return
        _lite_refs.pop(path, None)
    try:
        from milvus_lite import server_manager_instance
    except ImportError:
        return
    with contextlib.suppress(Exception):
        server_manager_instance.release_server(path)


__all__ = ["MilvusStore", "is_server_uri"]
