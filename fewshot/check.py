"""Deep check (and repair) of an index directory: what ``fewshot check`` runs.

Opening an index already verifies the cheap things (format version, SQLite
quick_check, FAISS cache checksums). This module checks *everything* a user's
taught examples depend on, and says which parts can be rebuilt:

* the store's own ``verify()``: SQLite integrity, manifest and FAISS caches vs
  the records, stored vectors finite (and unit length for cosine), class sums
  vs a recomputation;
* prototypes served by the index vs the mean of the stored vectors;
* the stored copy of every example (``examples/``): present, and its content
  still hashing to its SHA-256 name;
* a sample of examples re-embedded from those copies with the index's encoder
  and compared with the stored vectors (catches silently damaged vectors);
* the search index returning each sampled vector as its own best match;
* leftovers: example files no record refers to (an add killed after copying
  its files) and temporary files of interrupted writes.

``repair=True`` rebuilds what is derived: vectors re-embedded from the stored
copies (when vectors are damaged), class sums, prototypes and FAISS files from
the records (``store.repair()``), and removes leftovers. The records themselves
(SQLite) and lost or damaged example copies cannot be rebuilt; they stay in
``remaining`` with what to do about them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.errors import EncoderError, FewShotError
from fewshot.inputs import InputItem
from fewshot.prototypes import l2_normalize

#: Leftover files younger than this may belong to a write in progress: reported, never deleted.
DEFAULT_MIN_AGE_S = 300.0
#: Largest allowed gap between a stored (normalised) vector and its re-embedding, per coordinate.
DEFAULT_ATOL = 1e-4
_TMP = ".tmp"
_SHOW = 3  # ids named in one problem line


def check(index: Any, sample: int | None = 32, repair: bool = False, *, min_age_s: float = DEFAULT_MIN_AGE_S,
          atol: float = DEFAULT_ATOL, seed: int = 0) -> dict[str, Any]:
    """Check an index (a :class:`~fewshot.fewshot_index.FewShotIndex` or a path); optionally repair it.

    ``sample``: how many stored examples to re-embed (``None`` or a negative
    number: all; 0: none). ``min_age_s``: leftover files younger than this are
    only noted, because a concurrent ``add`` may be about to commit them.
    A path is opened read-only for the check and for writing only to repair;
    a given index object must be writable to repair.

    Returns a JSON-able report: ``healthy`` (no problems remain), ``problems``
    (found), ``repaired`` (actions taken), ``remaining`` (problems after
    repair), ``notes`` and ``stats``.
    """
    from index import BlobStore

    if repair:  # the index owns only its own examples/ folder: never sweep through a link
        BlobStore(getattr(index, "path", index)).refuse_linked_root()
    if isinstance(index, (str, os.PathLike)):
        return _check_path(Path(index), sample, repair, min_age_s, atol, seed)
    encoder = getattr(index, "encoder", None)
    store = getattr(index, "store", index)
    return _check_open(store, encoder, None, sample, repair, min_age_s, atol, seed)


# --------------------------------------------------------------------------- opening


def _open(path: Path, readonly: bool) -> tuple[Any, Any, str | None]:
    """(store, encoder or None, why the encoder is unusable); store errors propagate."""
    from fewshot.fewshot_index import FewShotIndex
    from index import open_store

    try:
        idx = FewShotIndex.open(path, readonly=readonly)
        return idx.store, idx.encoder, None
    except EncoderError as exc:
        # The records can still be checked without the encoder.
        return open_store(path, readonly=readonly), None, str(exc)


def _check_path(path: Path, sample: int | None, repair: bool, min_age_s: float, atol: float,
                seed: int) -> dict[str, Any]:
    store, encoder, why = _open(path, readonly=True)
    try:
        report = _check_open(store, encoder, why, sample, False, min_age_s, atol, seed)
    finally:
        store.close()
    if not repair or report["healthy"]:
        return report
    store, encoder, why = _open(path, readonly=False)
    try:
        repaired = _check_open(store, encoder, why, sample, True, min_age_s, atol, seed)
    finally:
        store.close()
    # Opening for writing already rebuilds stale or damaged FAISS files and removes dead temp files.
    on_open = [p for p in report["problems"] if p not in repaired["problems"]]
    if on_open:
        repaired["repaired"].insert(0, f"rebuilt derived files when opening for writing ({len(on_open)} problem(s))")
    repaired["problems"] = list(dict.fromkeys(report["problems"] + repaired["problems"]))
    return repaired


def _check_open(store: Any, encoder: Any, encoder_problem: str | None, sample: int | None, repair: bool,
                min_age_s: float, atol: float, seed: int) -> dict[str, Any]:
    found = _inspect(store, encoder, encoder_problem, sample, min_age_s, atol, seed)
    report: dict[str, Any] = {"path": str(store.path), "problems": found["problems"], "repaired": [],
                              "notes": found["notes"], "stats": found["stats"]}
    if repair and found["problems"]:
        report["repaired"] = _repair(store, encoder, found, min_age_s)
        after = _inspect(store, encoder, encoder_problem, sample, min_age_s, atol, seed)
        report["remaining"] = after["problems"]
        report["notes"] = after["notes"]
        report["stats"] = after["stats"]
    else:
        report["remaining"] = list(found["problems"])
    report["healthy"] = not report["remaining"]
    return report


# --------------------------------------------------------------------------- inspection


def _inspect(store: Any, encoder: Any, encoder_problem: str | None, sample: int | None, min_age_s: float,
             atol: float, seed: int) -> dict[str, Any]:
    from index import StoreError

    problems: list[str] = []
    notes: list[str] = []
    if encoder_problem:
        problems.append(f"encoder: {encoder_problem}")
    try:
        problems += store.verify()
    except StoreError as exc:
        problems.append(str(exc))
    stats: dict[str, Any] = {"records": 0, "labels": 0, "blobs_checked": 0, "reembedded": 0,
                             "max_vector_error": None, "orphan_blobs": 0, "temp_files": 0}
    try:
        rows = _scan_records(store)
    except StoreError as exc:
        problems.append(f"records cannot be read: {exc}")
        return {"problems": problems, "notes": notes, "stats": stats, "rows": None, "bad_vectors": False}
    stats["records"] = len(rows["ids"])
    stats["labels"] = len(rows["counts"])
    problems += _prototype_problems(store, rows)
    blob_problems, good_keys = _blob_problems(store.path, rows)
    problems += blob_problems
    stats["blobs_checked"] = len(good_keys)  # distinct stored copies found intact
    leftovers, leftover_notes, n_orphans, n_temps = _leftover_problems(store.path, rows, min_age_s)
    problems += leftovers
    notes += leftover_notes
    stats["orphan_blobs"], stats["temp_files"] = n_orphans, n_temps
    bad_vectors = any("NaN/inf vector" in p or "not unit length" in p for p in problems)
    if encoder is not None and sample != 0 and rows["ids"]:
        emb_problems, n_done, max_err = _reembed_problems(store, encoder, rows, good_keys, sample, atol, seed)
        problems += emb_problems
        bad_vectors = bad_vectors or bool(emb_problems)
        stats["reembedded"], stats["max_vector_error"] = n_done, max_err
    elif encoder is None and not encoder_problem:
        notes.append("no encoder given: stored examples were not re-embedded")
    return {"problems": problems, "notes": notes, "stats": stats, "rows": rows, "bad_vectors": bad_vectors}


def _scan_records(store: Any) -> dict[str, Any]:
    """One streamed pass: ids, labels, blob keys, sources, and float64 class sums of stored vectors."""
    ids: list[int] = []
    labels: list[str] = []
    keys: list[Any] = []
    sources: list[str] = []
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for rec in store.records():
        ids.append(int(rec.id))
        labels.append(rec.label)
        keys.append(rec.metadata.get("blob"))
        sources.append(str(rec.metadata.get("source", "")))
        v = np.asarray(rec.vector, dtype=np.float64)
        sums[rec.label] = sums.get(rec.label, 0.0) + v
        counts[rec.label] = counts.get(rec.label, 0) + 1
    return {"ids": ids, "labels": labels, "keys": keys, "sources": sources, "sums": sums, "counts": counts}


def _prototype_problems(store: Any, rows: dict[str, Any]) -> list[str]:
    """The prototypes the index serves vs the mean of the stored vectors, class by class."""
    problems: list[str] = []
    served = store.labels()
    if served != dict(sorted(rows["counts"].items())):
        extra = sorted(set(served) - set(rows["counts"]))
        missing = sorted(set(rows["counts"]) - set(served))
        wrong = sorted(k for k in set(served) & set(rows["counts"]) if served[k] != rows["counts"][k])
        problems.append(f"class list/counts differ from the records (classes without records: {extra[:_SHOW]}, "
                        f"records without a class: {missing[:_SHOW]}, wrong counts: {wrong[:_SHOW]}); run repair")
    labels, protos = store.prototypes()
    metric = store.metric
    for label, proto in zip(labels, protos):
        if label not in rows["sums"]:
            continue
        mean = (rows["sums"][label] / rows["counts"][label]).astype(np.float32)[None, :]
        if metric == "cosine":
            mean = l2_normalize(mean)
        err = float(np.max(np.abs(mean[0].astype(np.float64) - proto.astype(np.float64))))
        scale = 1.0 if metric == "cosine" else max(1.0, float(np.max(np.abs(mean))))
        if not np.isfinite(err) or err > 1e-4 * scale:
            problems.append(f"prototype of class {label!r} differs from the mean of its examples "
                            f"(max error {err:.3g}); run repair")
    return problems


def _blob_problems(index_dir: Path, rows: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Every record's stored example: a well-formed key, present, content matching its hash name."""
    from index import BlobStore, ValidationError

    blobs = BlobStore(index_dir)
    no_key: list[int] = []
    missing: list[int] = []
    damaged: list[int] = []
    good: set[str] = set()
    verdict: dict[str, str] = {}
    for rid, key in zip(rows["ids"], rows["keys"]):
        if not isinstance(key, str) or not key:
            no_key.append(rid)
            continue
        if key not in verdict:
            try:
                verdict[key] = "missing" if not os.path.lexists(blobs.path(key)) else "ok"
                if verdict[key] == "ok":
                    blobs.verified_path(key)  # a regular file (not a link) hashing to its name
            except ValidationError:
                verdict[key] = "damaged"
            except OSError:
                verdict[key] = "missing"
            if verdict[key] == "ok":
                good.add(key)
        if verdict[key] == "missing":
            missing.append(rid)
        elif verdict[key] == "damaged":
            damaged.append(rid)
    problems = []
    if no_key:
        problems.append(f"{len(no_key)} record(s) have no stored copy of their example (e.g. id {no_key[:_SHOW]}); "
                        "they cannot be re-embedded: re-add those examples")
    if missing:
        problems.append(f"the stored copy of {len(missing)} example(s) is missing (e.g. id {missing[:_SHOW]}); "
                        "re-add those examples (or remove them) so the index can be re-embedded")
    if damaged:
        problems.append(f"the stored copy of {len(damaged)} example(s) is damaged: its content no longer matches "
                        f"its checksum, or it is a link, not a file (e.g. id {damaged[:_SHOW]}); re-add those examples")
    return problems, good


def _leftover_problems(index_dir: Path, rows: dict[str, Any], min_age_s: float
                       ) -> tuple[list[str], list[str], int, int]:
    """Unreferenced example files and temp files; young ones are only noted (a write may be in flight).

    Only the blob store's own file names count (see ``BlobStore.leftovers``):
    other files under ``examples/`` are not the index's, so neither a problem
    nor something repair would delete.
    """
    import time

    from index import BlobStore, ValidationError

    referenced = {k for k in rows["keys"] if isinstance(k, str)}
    cutoff = time.time() - min_age_s
    old_orphans = young_orphans = old_temps = young_temps = 0
    try:
        candidates = BlobStore(index_dir).leftovers(referenced)
    except ValidationError as exc:  # a linked examples/: nothing under it is checked or deleted
        return [str(exc)], [], 0, 0
    candidates += [(p, True) for p in index_dir.iterdir() if p.name.endswith(_TMP)]
    for p, is_temp in candidates:
        try:
            old = p.lstat().st_mtime <= cutoff
        except FileNotFoundError:
            continue
        if is_temp:
            old_temps += old
            young_temps += not old
        else:
            old_orphans += old
            young_orphans += not old
    problems, notes = [], []
    if old_orphans:
        problems.append(f"{old_orphans} stored example file(s) belong to no record (left by an interrupted add or "
                        "remove); run `fewshot check --repair` to delete them")
    if old_temps:
        problems.append(f"{old_temps} temporary file(s) left by interrupted writes; "
                        "run `fewshot check --repair` to delete them")
    if young_orphans or young_temps:
        notes.append(f"{young_orphans} unreferenced example file(s) and {young_temps} temporary file(s) younger "
                     f"than {min_age_s:g}s were kept: a write may still be in progress")
    return problems, notes, old_orphans + young_orphans, old_temps + young_temps


def _sample_positions(n: int, sample: int | None, seed: int) -> np.ndarray:
    if sample is None or sample < 0 or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def _stored_form(vecs: np.ndarray, metric: str) -> np.ndarray:
    """What the store keeps for these embeddings (unit length for cosine)."""
    v = np.asarray(vecs, dtype=np.float64)
    if metric == "cosine":
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    return v


def _reembed_problems(store: Any, encoder: Any, rows: dict[str, Any], good_keys: set[str], sample: int | None,
                      atol: float, seed: int) -> tuple[list[str], int, float | None]:
    """Re-embed a sample of stored examples; compare with the stored vectors and with a self-search."""
    from index import BlobStore

    blobs = BlobStore(store.path)
    usable = [j for j, k in enumerate(rows["keys"]) if k in good_keys]
    if not usable:
        return [], 0, None
    picked = [usable[j] for j in _sample_positions(len(usable), sample, seed)]
    ids = [rows["ids"][j] for j in picked]
    items = [InputItem(blobs.path(rows["keys"][j]), rows["sources"][j] or rows["keys"][j]) for j in picked]
    try:
        fresh = _stored_form(encoder.embed(items), store.metric)
    except (FewShotError, ValueError, OSError) as exc:
        return [f"stored examples cannot be re-embedded with {encoder.name}: {exc}"], 0, None
    stored = np.stack([np.asarray(r.vector, dtype=np.float64) for r in store.get(ids)])
    scale = np.maximum(1.0, np.abs(fresh).max(axis=1)) if store.metric == "l2" else np.ones(len(ids))
    errors = np.abs(fresh - stored).max(axis=1) / scale
    errors = np.where(np.isfinite(errors), errors, np.inf)
    problems: list[str] = []
    bad = [rid for rid, e in zip(ids, errors) if e > atol]
    if bad:
        problems.append(f"{len(bad)} of {len(ids)} sampled stored vector(s) differ from their example re-embedded "
                        f"with {encoder.name} (e.g. id {bad[:_SHOW]}, max error {float(errors.max()):.3g}); "
                        "run `fewshot check --repair` to re-embed them")
    # The search index must return each (healthy) stored vector as a best match scoring like itself.
    ok = np.isfinite(stored).all(axis=1)
    if ok.any():
        q = stored[ok].astype(np.float32)
        hits = store.search(q, 1)
        self_score = 1.0 if store.metric == "cosine" else 0.0
        off = [rid for rid, hs in zip(np.asarray(ids)[ok].tolist(), hits)
               if not hs or abs(hs[0].score - self_score) > 1e-3]
        if off:
            problems.append(f"the search index does not find {len(off)} stored vector(s) as their own best match "
                            f"(e.g. id {off[:_SHOW]}); run repair")
    return problems, len(ids), float(errors.max())


# --------------------------------------------------------------------------- repair


def _repair(store: Any, encoder: Any, found: dict[str, Any], min_age_s: float) -> list[str]:
    """Rebuild derived parts; returns what was done (in words)."""
    from index import BlobStore

    done: list[str] = []
    rows = found["rows"]
    if rows is None:
        return done  # the records cannot be read: nothing here can rebuild them
    if found["bad_vectors"] and encoder is not None:
        done += _reembed_all(store, encoder)
    fixed = store.repair()
    if fixed:
        done.append(f"rebuilt class sums, prototypes and FAISS files from the records ({len(fixed)} problem(s))")
    referenced = {k for k in rows["keys"] if isinstance(k, str)}
    removed = BlobStore(store.path).sweep(referenced, min_age_s=min_age_s)
    if removed:
        done.append(f"deleted {removed} unreferenced example or temporary file(s)")
    return done


def _reembed_all(store: Any, encoder: Any) -> list[str]:
    """Re-embed every record from its stored copy and replace all vectors in one atomic write."""
    from index import BlobStore, ValidationError

    blobs = BlobStore(store.path)
    ids, items = [], []
    for rec in store.records():
        key = rec.metadata.get("blob")
        try:
            path = blobs.verified_path(key) if isinstance(key, str) else None
        except (ValidationError, OSError):
            path = None
        if path is None:
            return [f"could not re-embed: record {rec.id} has no intact stored copy of its example"]
        ids.append(int(rec.id))
        items.append(InputItem(path, str(rec.metadata.get("source", key))))
    vecs = encoder.embed(items) if items else np.zeros((0, store.dim), np.float32)
    store.rewrite_vectors(ids, vecs)
    return [f"re-embedded all {len(ids)} example(s) from their stored copies with {encoder.name}"]


__all__ = ["check", "DEFAULT_MIN_AGE_S", "DEFAULT_ATOL"]
