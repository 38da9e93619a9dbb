"""Consistency checks behind ``verify()``: each returns human-readable problems.

Every check compares a derived part of the index (manifest, FAISS caches,
class sums) or the stored vectors against the records in SQLite, so a
non-empty result always means "repair can rebuild this" unless it concerns the
records themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import file_checksum
from .layout import MANIFEST_NAME, prototypes_file_name, vectors_file_name
from .manifest import ManifestUnreadable, read_manifest
from .vector_index import VectorIndex
from .sqlite_meta import MetaDB


def manifest_problems(directory: Path, generation: int, dim: int, metric: str, count: int,
                      record_ids: np.ndarray, *, epoch: int = 0) -> list[str]:
    """Manifest fields vs SQLite, listed files' presence/checksums, cache ids vs record ids.

    A checkpoint older than the current generation is normal for large
    indexes (see ``checkpoint``): its files must still be intact, of the
    current vectors epoch, and hold only ids that existed (later changes are
    replayed from SQLite on open). Only a checkpoint of the current
    generation must match the records exactly.
    """
    try:
        manifest = read_manifest(directory)
    except ManifestUnreadable as exc:
        return [f"{exc}; run repair"]
    if manifest is None:
        return [f"{MANIFEST_NAME} is missing; run repair"]
    problems: list[str] = []
    m_gen = manifest.get("generation")
    current = m_gen == generation
    lagging = isinstance(m_gen, int) and m_gen < generation and manifest.get("vectors_epoch", 0) == epoch
    keys = (("generation", generation), ("dim", dim), ("metric", metric), ("count", count))
    for key, want in keys:
        if lagging and key in ("generation", "count"):
            continue
        if manifest.get(key) != want:
            problems.append(f"{MANIFEST_NAME} says {key}={manifest.get(key)!r} but meta.sqlite has "
                            f"{want!r} (stale manifest: unflushed writes or a crash); run repair")
    files = manifest.get("files", {})
    for name, expected in sorted(files.items()):
        path = directory / name
        try:
            actual = file_checksum(path)
        except OSError:
            problems.append(f"{name} is listed in {MANIFEST_NAME} but missing; run repair")
            continue
        if actual != expected:
            problems.append(f"{name} checksum mismatch ({actual} != {expected}); run repair")
            continue
        if isinstance(m_gen, int) and name == vectors_file_name(m_gen):
            problems += _vectors_file_problems(path, dim, metric, record_ids, current, manifest.get("max_id"))
    if current:
        for name in (vectors_file_name(generation), prototypes_file_name(generation)):
            if name not in files:
                problems.append(f"{name} is not listed in {MANIFEST_NAME}; run repair")
    return problems


def _vectors_file_problems(path: Path, dim: int, metric: str, record_ids: np.ndarray, current: bool,
                           max_id: int | None) -> list[str]:
    """The vectors cache file against the records: all of them when it is current, none newer when it lags."""
    name = path.name
    index = VectorIndex.read(path, dim, metric, mmap=True)
    if index is None:
        return [f"{name} does not match the records (dim or metric); run repair"]
    ids = np.sort(index.main_ids())
    if current and index.kind != "hnsw" and not np.array_equal(ids, record_ids):
        return [f"{name} holds different ids than meta.sqlite; run repair"]
    if current and not np.isin(record_ids, ids).all():
        return [f"{name} is missing records of meta.sqlite; run repair"]
    if len(ids) and not current and int(ids[-1]) > int(ids[-1] if max_id is None else max_id):
        return [f"{name} holds ids newer than its checkpoint; run repair"]
    return []


def vector_problems(db: MetaDB, dim: int, metric: str) -> list[str]:
    """Stored vectors must be finite, and unit length in a cosine index."""
    problems: list[str] = []
    for ids, vecs, _labels in db.iter_vectors(dim):
        bad = ~np.isfinite(vecs).all(axis=1)
        if bad.any():
            problems.append(f"record {int(ids[bad][0])} has a NaN/inf vector; remove it")
        if metric == "cosine":
            off = np.abs(np.linalg.norm(vecs.astype(np.float64), axis=1) - 1.0) > 1e-3
            off &= ~bad
            if off.any():
                problems.append(f"record {int(ids[off][0])} is not unit length in a cosine index "
                                f"({int(off.sum())} such record(s) in this batch); rewrite its vector")
    return problems


def sum_tolerance(count: int, vsum: np.ndarray) -> float:
    """Allowed gap between a running class sum and its recomputation.

    Float64 running sums of float32 values drift by ~1e-16 (relative) per
    add/remove; anything beyond 1e-9 per record (scaled by the vectors'
    magnitude) is a real mismatch, not rounding.
    """
    scale = float(np.max(np.abs(vsum))) / max(1, count) if len(vsum) else 0.0
    return 1e-9 * max(1, count) * max(1.0, scale)


def class_problems(db: MetaDB, dim: int,
                   recomputed: dict[str, tuple[int, np.ndarray]] | None = None) -> list[str]:
    """The classes table (counts, float64 sums) vs a recomputation from the records."""
    if recomputed is None:
        recomputed = db.recompute_classes(dim)
    stored = {label: (count, blob) for label, count, blob in db.raw_classes()}
    problems: list[str] = []
    for label in sorted(set(stored) - set(recomputed)):
        problems.append(f"class {label!r} is listed in the classes table but has no records; run repair")
    for label, (count, vsum) in recomputed.items():
        if label not in stored:
            problems.append(f"class {label!r} has {count} records but no classes entry; run repair")
            continue
        s_count, blob = stored[label]
        if s_count != count:
            problems.append(f"class {label!r} count is {s_count} but it has {count} records; run repair")
        if not isinstance(blob, bytes) or len(blob) != 8 * dim:
            problems.append(f"class {label!r} has a malformed prototype sum; run repair")
            continue
        err = float(np.max(np.abs(np.frombuffer(blob, dtype=np.float64) - vsum)))
        if not np.isfinite(err) or err > sum_tolerance(count, vsum):
            problems.append(f"class {label!r} prototype sum differs from its records "
                            f"(max error {err:.3g}); run repair")
    return problems
