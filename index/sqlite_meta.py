"""meta.sqlite: the source of truth of an index (records, class sums, settings).

Everything else in an index directory can be rebuilt from this database. It is
opened in WAL mode so readers never block the (single, lock-serialised) writer,
and every store write is one SQLite transaction, so a crash leaves the state
from just before or just after that write.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptIndexError, StoreError

SCHEMA = """
CREATE TABLE records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    created REAL
);
CREATE INDEX records_label ON records(label);
CREATE TABLE classes (
    label TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    vsum BLOB NOT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
"""

# SQLite caps the number of bound parameters; stay well below it.
_CHUNK = 500


@dataclass(frozen=True)
class MetaInfo:
    """Index-wide settings as stored in the ``meta`` table."""

    format_version: int
    dim: int
    metric: str
    generation: int
    extra: dict[str, Any]
    backend: str
    created: float


@dataclass(frozen=True)
class ClassRow:
    """One row of ``classes``: a stable id (rowid), record count and float64 vector sum."""

    cid: int
    label: str
    count: int
    vsum: np.ndarray


@dataclass(frozen=True)
class RecordRow:
    """One row of ``records`` with the vector decoded."""

    id: int
    label: str
    vector: np.ndarray
    metadata: str
    created: float


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _corrupt(path: Path, exc: Exception) -> CorruptIndexError:
    return CorruptIndexError(
        f"{path} is damaged ({exc}); restore the index directory from a backup "
        "(FAISS files cannot rebuild the records)"
    )


class MetaDB:
    """Thin typed wrapper over the meta.sqlite connection.

    Transactions are explicit (``read()`` / ``write()``) because the store must
    group several statements (rows + class sums + generation) atomically.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(
                str(self.path),
                isolation_level=None,
                check_same_thread=False,
                timeout=max(busy_timeout, 1.0),
            )
        except sqlite3.Error as exc:
            raise _corrupt(self.path, exc) from None
        self._depth = 0

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def initialise(self, *, dim: int, metric: str, extra: dict[str, Any], backend: str,
                   format_version: int, created: float) -> None:
        """Create the schema and settings of a new index in one transaction."""
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        with self.write():
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            values = {
                "format_version": str(format_version),
                "dim": str(dim),
                "metric": metric,
                "generation": "0",
                "extra": json.dumps(extra, ensure_ascii=False),
                "backend": backend,
                "created": repr(float(created)),
            }
            self.conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", values.items())

    def check(self, *, full: bool = True) -> None:
        """Raise CorruptIndexError if the file is not a healthy fewshot database.

        ``full`` runs ``PRAGMA quick_check`` (reads every page, O(size)), done
        once per open rather than on every reload.
        """
        try:
            self.conn.execute("PRAGMA synchronous=FULL")
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if full:
                result = self.conn.execute("PRAGMA quick_check").fetchall()
                if result != [("ok",)]:
                    first = result[0][0] if result else "no result"
                    raise CorruptIndexError(
                        f"{self.path} failed its integrity check ({first}); restore the index from a backup"
                    )
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.path, exc) from None
        missing = {"records", "classes", "meta"} - tables
        if missing:
            raise CorruptIndexError(
                f"{self.path} is missing table(s) {', '.join(sorted(missing))} (an interrupted "
                "`fewshot init`?); delete the directory and create the index again"
            )

    # -- transactions --------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """A read transaction: every SELECT inside sees one consistent snapshot."""
        with self._txn("BEGIN"):
            yield

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A write transaction (BEGIN IMMEDIATE): all-or-nothing."""
        with self._txn("BEGIN IMMEDIATE"):
            yield

    @contextlib.contextmanager
    def _txn(self, begin: str) -> Iterator[None]:
        if self._depth:
            # Nested use joins the outer transaction (e.g. a reload inside a write).
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self.conn.execute(begin)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"{self.path} is busy ({exc}); try again") from None
            raise _corrupt(self.path, exc) from None
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.path, exc) from None
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    # -- meta ----------------------------------------------------------------------

    def generation(self) -> int:
        """Current generation (cheap: one indexed row)."""
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.path, exc) from None
        if row is None:
            raise CorruptIndexError(f"{self.path} has no generation entry; run `fewshot index repair`")
        return int(row[0])

    def read_meta(self) -> MetaInfo:
        """All index settings; CorruptIndexError when entries are missing or malformed."""
        try:
            values = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
            return MetaInfo(
                format_version=int(values["format_version"]),
                dim=int(values["dim"]),
                metric=str(values["metric"]),
                generation=int(values["generation"]),
                extra=json.loads(values.get("extra") or "{}"),
                backend=str(values.get("backend") or "faiss"),
                created=float(values.get("created") or 0.0),
            )
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.path, exc) from None
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptIndexError(f"{self.path} has a malformed meta table ({exc!r})") from None

    def meta_value(self, key: str) -> str | None:
        """One raw setting from the ``meta`` table (None when absent)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Upsert one setting (call inside ``write()``)."""
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def set_extra(self, extra: dict[str, Any]) -> None:
        """Store the whole ``extra`` object (call inside ``write()``)."""
        self.set_meta("extra", json.dumps(extra, ensure_ascii=False))

    def bump_generation(self) -> int:
        """generation += 1 (call inside ``write()``); returns the new value."""
        new = self.generation() + 1
        self.set_meta("generation", str(new))
        return new

    # -- records -------------------------------------------------------------------

    def count(self) -> int:
        """Number of records."""
        return int(self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def insert_records(self, labels: Sequence[str], vectors: np.ndarray,
                       metadata: Sequence[str], created: float) -> np.ndarray:
        """Insert rows (call inside ``write()``); returns the new ids in input order."""
        cur = self.conn.cursor()
        ids = np.empty(len(labels), dtype=np.int64)
        for i, (label, vec, meta) in enumerate(zip(labels, vectors, metadata)):
            cur.execute(
                "INSERT INTO records(label, vector, metadata, created) VALUES (?, ?, ?, ?)",
                (label, vec.astype(np.float32).tobytes(), meta, created),
            )
            ids[i] = cur.lastrowid
        return ids

    def fetch_records(self, ids: Sequence[int], dim: int) -> dict[int, RecordRow]:
        """Rows for the existing ``ids`` (missing ids are simply absent)."""
        out: dict[int, RecordRow] = {}
        unique = sorted({int(i) for i in ids})
        for chunk in _chunks(unique):
            marks = ",".join("?" * len(chunk))
            for rid, label, blob, meta, created in self.conn.execute(
                f"SELECT id, label, vector, metadata, created FROM records WHERE id IN ({marks})", chunk
            ):
                out[rid] = RecordRow(rid, label, _decode(blob, dim, self.path, rid), meta, created)
        return out

    def fetch_hit_info(self, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """id -> (label, metadata JSON) for search results (no vectors)."""
        out: dict[int, tuple[str, str]] = {}
        unique = sorted({int(i) for i in ids})
        for chunk in _chunks(unique):
            marks = ",".join("?" * len(chunk))
            for rid, label, meta in self.conn.execute(
                f"SELECT id, label, metadata FROM records WHERE id IN ({marks})", chunk
            ):
                out[rid] = (label, meta)
        return out

    def delete_records(self, ids: Sequence[int]) -> None:
        """Delete rows by id (call inside ``write()``)."""
        for chunk in _chunks([int(i) for i in ids]):
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"DELETE FROM records WHERE id IN ({marks})", chunk)

    def ids_for_labels(self, labels: Sequence[str]) -> np.ndarray:
        """Ids of all records whose label is in ``labels`` (uses the label index)."""
        found: list[int] = []
        for chunk in _chunks(list(labels)):
            marks = ",".join("?" * len(chunk))
            found.extend(r[0] for r in self.conn.execute(
                f"SELECT id FROM records WHERE label IN ({marks})", chunk))
        return np.array(sorted(found), dtype=np.int64)

    def record_page(self, after_id: int, limit: int, label: str | None, dim: int) -> list[RecordRow]:
        """Up to ``limit`` rows with id > ``after_id`` (keyset paging for streaming)."""
        if label is None:
            rows = self.conn.execute(
                "SELECT id, label, vector, metadata, created FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        else:
            rows = self.conn.execute(
                "SELECT id, label, vector, metadata, created FROM records "
                "WHERE label = ? AND id > ? ORDER BY id LIMIT ?",
                (label, after_id, limit),
            )
        return [RecordRow(rid, lab, _decode(blob, dim, self.path, rid), meta, created)
                for rid, lab, blob, meta, created in rows]

    def _pages_after(self, columns: str, last_id: int, chunk: int) -> Iterator[list[tuple[Any, ...]]]:
        """Rows (``id`` first, then ``columns``) of records with id > ``last_id``, in id order, in pages."""
        last = last_id
        while True:
            rows = self.conn.execute(
                f"SELECT id, {columns} FROM records WHERE id > ? ORDER BY id LIMIT ?", (last, chunk)
            ).fetchall()
            if not rows:
                return
            yield rows
            last = int(rows[-1][0])

    def iter_vectors(self, dim: int, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """(ids, float32 vectors, labels) for all records in id order, in chunks; each vector checked.

        The checked path, for ``verify``: a vector of the wrong size raises
        CorruptIndexError naming the record (see :meth:`vectors_after` for
        the fast path).
        """
        for rows in self._pages_after("label, vector", -(2**63), chunk):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.empty((len(rows), dim), dtype=np.float32)
            for i, r in enumerate(rows):
                vecs[i] = _decode(r[2], dim, self.path, r[0])
            yield ids, vecs, [r[1] for r in rows]

    def vectors_after(self, last_id: int, dim: int, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of records with id > ``last_id``, in id order, in chunks.

        What makes large indexes cheap to refresh: ids only ever grow
        (``AUTOINCREMENT``), so what changed since a cache file was written is
        the ids above its largest id, plus whichever older ids disappeared
        (detected by :meth:`count_upto`). Vectors are decoded in one call per
        chunk, unchecked (:meth:`iter_vectors` is the checked path).
        """
        for rows in self._pages_after("vector", last_id, chunk):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()
            yield ids, vecs

    def all_vectors(self, dim: int, chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of every record in id order, in chunks (what an index build reads)."""
        return self.vectors_after(-(2**63), dim, chunk)

    def vectors_for(self, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, float32 vectors) for ``ids`` (missing ids are left out), sorted by id."""
        found_ids: list[int] = []
        blobs: list[bytes] = []
        for part in _chunks(sorted({int(i) for i in ids})):
            marks = ",".join("?" * len(part))
            for rid, blob in self.conn.execute(f"SELECT id, vector FROM records WHERE id IN ({marks})", part):
                found_ids.append(rid)
                blobs.append(blob)
        if not found_ids:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        order = np.argsort(found_ids)
        vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
        return np.asarray(found_ids, dtype=np.int64)[order], np.ascontiguousarray(vecs[order])

    def all_ids(self) -> np.ndarray:
        """Sorted ids of every record (one fetch, converted in C)."""
        rows = self.conn.execute("SELECT id FROM records ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def max_id(self) -> int:
        """Largest record id ever handed out (0 for a new index); ids are never reused."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def count_upto(self, last_id: int) -> int:
        """Records with id <= ``last_id`` (one count detects removals among known ids)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM records WHERE id <= ?", (last_id,)).fetchone()[0])

    def referenced_blobs(self, keys: list[str]) -> set[str]:
        """The blob keys among ``keys`` that some record's metadata still names (one scan per chunk of keys)."""
        found: set[str] = set()
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT DISTINCT json_extract(metadata, '$.blob') FROM records "
                f"WHERE json_extract(metadata, '$.blob') IN ({marks})", chunk
            )
            found.update(r[0] for r in rows)
        return found

    def update_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Overwrite vectors by id (call inside ``write()``)."""
        self.conn.executemany(
            "UPDATE records SET vector = ? WHERE id = ?",
            ((vec.astype(np.float32).tobytes(), int(i)) for i, vec in zip(ids, vectors)),
        )

    # -- classes -------------------------------------------------------------------

    def classes(self, dim: int) -> list[ClassRow]:
        """All class rows ordered by label.

        A malformed sum (tampering, a bug) is recomputed from the records
        instead of failing, so the index stays usable and ``repair`` can run;
        ``verify`` reports such rows.
        """
        return [self._class_row(cid, label, count, blob, dim) for cid, label, count, blob in
                self.conn.execute("SELECT rowid, label, count, vsum FROM classes ORDER BY label").fetchall()]

    def raw_classes(self) -> list[tuple[str, int, bytes]]:
        """(label, count, vsum bytes) exactly as stored (for ``verify``)."""
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT label, count, vsum FROM classes ORDER BY label")]

    def _class_row(self, cid: int, label: str, count: int, blob: bytes, dim: int) -> ClassRow:
        if isinstance(blob, bytes) and len(blob) == 8 * dim and isinstance(count, int):
            return ClassRow(cid, label, count, np.frombuffer(blob, dtype=np.float64).copy())
        vecs = [_decode(b, dim, self.path, rid) for rid, b in self.conn.execute(
            "SELECT id, vector FROM records WHERE label = ?", (label,))]
        vsum = np.sum(np.asarray(vecs, dtype=np.float64).reshape(-1, dim), axis=0)
        return ClassRow(cid, label, len(vecs), vsum)

    def apply_class_deltas(self, deltas: dict[str, tuple[int, np.ndarray]], dim: int) -> dict[str, ClassRow]:
        """Add (count, float64 sum) deltas per label; drop classes that reach 0.

        Call inside ``write()``. Returns the new row per touched label; a row
        with ``count == 0`` means the class was deleted (its cid is the old id,
        so the caller can drop it from the prototype index).
        """
        out: dict[str, ClassRow] = {}
        for label, (dcount, dsum) in deltas.items():
            row = self.conn.execute(
                "SELECT rowid, count, vsum FROM classes WHERE label = ?", (label,)
            ).fetchone()
            if row is None:
                cid, count, vsum = None, 0, np.zeros(dim, dtype=np.float64)
            else:
                # Deltas are applied before the records change, so a malformed
                # row can be recomputed from the records as they are now.
                current = self._class_row(row[0], label, row[1], row[2], dim)
                cid, count, vsum = current.cid, current.count, current.vsum
            count += int(dcount)
            vsum = vsum + dsum
            if count <= 0:
                if cid is not None:
                    self.conn.execute("DELETE FROM classes WHERE rowid = ?", (cid,))
                out[label] = ClassRow(cid if cid is not None else -1, label, 0, np.zeros(dim))
                continue
            if cid is None:
                cur = self.conn.execute(
                    "INSERT INTO classes(label, count, vsum) VALUES (?, ?, ?)",
                    (label, count, vsum.astype(np.float64).tobytes()),
                )
                cid = cur.lastrowid
            else:
                self.conn.execute(
                    "UPDATE classes SET count = ?, vsum = ? WHERE rowid = ?",
                    (count, vsum.astype(np.float64).tobytes(), cid),
                )
            out[label] = ClassRow(int(cid), label, count, vsum)
        return out

    def recompute_classes(self, dim: int) -> dict[str, tuple[int, np.ndarray]]:
        """label -> (count, float64 sum) recomputed from the records themselves."""
        counts: dict[str, int] = {}
        sums: dict[str, np.ndarray] = {}
        for _ids, vecs, labels in self.iter_vectors(dim):
            uniq, inverse = np.unique(np.array(labels, dtype=object), return_inverse=True)
            part = np.zeros((len(uniq), dim), dtype=np.float64)
            np.add.at(part, inverse, vecs.astype(np.float64))
            n = np.bincount(inverse, minlength=len(uniq))
            for j, label in enumerate(uniq):
                counts[label] = counts.get(label, 0) + int(n[j])
                sums[label] = sums.get(label, 0.0) + part[j]
        return {label: (counts[label], sums[label]) for label in sorted(counts)}

    def replace_classes(self, classes: dict[str, tuple[int, np.ndarray]]) -> None:
        """Make ``classes`` equal to ``classes``, keeping existing rowids (call inside ``write()``)."""
        existing = {r[0] for r in self.conn.execute("SELECT label FROM classes")}
        for label in existing - set(classes):
            self.conn.execute("DELETE FROM classes WHERE label = ?", (label,))
        for label, (count, vsum) in classes.items():
            self.conn.execute(
                "INSERT INTO classes(label, count, vsum) VALUES (?, ?, ?) "
                "ON CONFLICT(label) DO UPDATE SET count=excluded.count, vsum=excluded.vsum",
                (label, int(count), np.asarray(vsum, dtype=np.float64).tobytes()),
            )

    def integrity_problems(self) -> list[str]:
        """``PRAGMA quick_check`` findings (empty when fine)."""
        try:
            result = [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            return [f"meta.sqlite cannot be checked: {exc}"]
        return [] if result == ["ok"] else [f"meta.sqlite integrity: {r}" for r in result]


def _decode(blob: bytes, dim: int, path: Path, rid: int) -> np.ndarray:
    if blob is None or len(blob) != 4 * dim:
        raise CorruptIndexError(
            f"{path}: record {rid} has a vector of {0 if blob is None else len(blob)} bytes, "
            f"expected {4 * dim}; restore from a backup or remove that record"
        )
    return np.frombuffer(blob, dtype=np.float32).copy()
