"""Extra read queries on meta.sqlite used for scale: deltas, subsets and settings.

Kept apart from ``sqlite_meta.MetaDB`` (which owns the schema and the write
path) because these only read, and they exist to make large indexes cheap to
reopen and refresh: ids only ever grow (``AUTOINCREMENT``), so "what changed
since a cache file was written" is "ids above its largest id, plus whichever
older ids disappeared", and the latter is detected by one count.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .sqlite_meta import MetaDB

_CHUNK = 500


def meta_value(db: MetaDB, key: str) -> str | None:
    """One raw setting from the ``meta`` table (None when absent)."""
    row = db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def max_id(db: MetaDB) -> int:
    """Largest record id ever handed out (0 for a new index); ids are never reused."""
    row = db.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def count_upto(db: MetaDB, last_id: int) -> int:
    """Records with id <= ``last_id`` (used to detect removals among known ids)."""
    return int(db.conn.execute("SELECT COUNT(*) FROM records WHERE id <= ?", (last_id,)).fetchone()[0])


def vectors_after(db: MetaDB, last_id: int, dim: int, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) of records with id > ``last_id``, in id order, in chunks."""
    last = last_id
    while True:
        rows = db.conn.execute(
            "SELECT id, vector FROM records WHERE id > ? ORDER BY id LIMIT ?", (last, chunk)
        ).fetchall()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()
        yield ids, vecs
        last = int(ids[-1])


def all_vectors(db: MetaDB, dim: int, chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) of every record in id order, in chunks."""
    return vectors_after(db, -(2**63), dim, chunk)


def vectors_for(db: MetaDB, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids found, float32 vectors) for ``ids`` (missing ids are left out), sorted by id."""
    found_ids: list[int] = []
    blobs: list[bytes] = []
    unique = sorted({int(i) for i in ids})
    for start in range(0, len(unique), _CHUNK):
        part = unique[start : start + _CHUNK]
        marks = ",".join("?" * len(part))
        for rid, blob in db.conn.execute(f"SELECT id, vector FROM records WHERE id IN ({marks})", part):
            found_ids.append(rid)
            blobs.append(blob)
    if not found_ids:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    order = np.argsort(found_ids)
    vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
    return np.asarray(found_ids, dtype=np.int64)[order], np.ascontiguousarray(vecs[order])


def all_ids(db: MetaDB) -> np.ndarray:
    """Sorted ids of every record (fast path: one fetch, converted in C)."""
    rows = db.conn.execute("SELECT id FROM records ORDER BY id").fetchall()
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))




def referenced_blobs(db: MetaDB, keys: list[str]) -> set[str]:
    """The blob keys among ``keys`` that some record's metadata still names (one scan per 500 keys)."""
    found: set[str] = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = db.conn.execute(
            f"SELECT DISTINCT json_extract(metadata, '$.blob') FROM records "
            f"WHERE json_extract(metadata, '$.blob') IN ({marks})", chunk
        )
        found.update(r[0] for r in rows)
    return found


__all__ = ["all_ids", "all_vectors", "count_upto", "max_id", "meta_value", "referenced_blobs", "vectors_after",
           "vectors_for"]
