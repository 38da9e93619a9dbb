"""Checkpoints: the FAISS cache files of one generation, and when to write them.

A checkpoint is ``vectors-<g>.faiss`` + ``prototypes-<g>.faiss`` listed in
``manifest.json`` with their checksums and sizes. Small indexes are
checkpointed after every write (as before: the files always match SQLite).
Large ones are not: rewriting a 500 MB index to add one vector would make
every add take seconds. Instead the checkpoint may lag behind SQLite, and an
opener replays what changed since (records with higher ids are added, vanished
ids are removed), which is cheap because ids only grow. A checkpoint is written
again once the lag exceeds ``max(CHECKPOINT_MIN_CHANGES, CHECKPOINT_FRACTION x
count)`` records, and on ``flush()``.

``vectors_epoch`` (meta table + manifest) changes when every vector is
rewritten (reindexing), so a checkpoint of the old vectors is never replayed.

Large files (over ``CRC_MAX_BYTES``) are checked by size at open instead of by
CRC (reading 1 GB to checksum it would defeat memory-mapped opening); files
are only ever replaced by atomic rename, and ``verify()`` still checks the CRC.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path

import faiss

from .atomic import fsync_dir, temp_path_for
from .layout import prototypes_file_name, vectors_file_name
from .manifest import ManifestUnreadable, read_manifest
from .vector_index import VectorIndex

#: Indexes with at most this many vectors are checkpointed after every write.
EAGER_MAX_VECTORS = 20_000
CHECKPOINT_MIN_CHANGES = 5_000
CHECKPOINT_FRACTION = 0.02
CRC_MAX_BYTES = 64 << 20
#: Read-only opens memory-map vector files at least this large.
MMAP_MIN_BYTES = 16 << 20


def needs_checkpoint(vectors: int, pending: int) -> bool:
    """Whether ``pending`` uncheckpointed record changes warrant rewriting the caches now."""
    if pending <= 0:
        return False
    return vectors <= EAGER_MAX_VECTORS or pending >= max(CHECKPOINT_MIN_CHANGES, CHECKPOINT_FRACTION * vectors)


def file_checksum(path: Path) -> str:
    """CRC32 of a file, streamed (same format as ``manifest.checksum``)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return f"crc32:{crc & 0xFFFFFFFF:08x}"


def load_checkpoint(
    directory: Path, current_generation: int, dim: int, metric: str, epoch: int, *, mmap: bool
) -> tuple[VectorIndex | None, faiss.Index | None, int]:
    """(vectors, prototype index or None, checkpoint generation) from valid files.

    The prototype file is only returned when the checkpoint is of the current
    generation (class sums are cheap to rebuild from SQLite otherwise).
    Returns ``(None, None, -1)`` when there is no usable checkpoint.
    """
    try:
        manifest = read_manifest(directory)
    except ManifestUnreadable:
        return None, None, -1
    if manifest is None:
        return None, None, -1
    gen = manifest.get("generation")
    if not isinstance(gen, int) or gen > current_generation or manifest.get("vectors_epoch", 0) != epoch:
        return None, None, -1
    files = manifest.get("files", {})
    sizes = manifest.get("sizes", {})
    vpath = directory / vectors_file_name(gen)
    if not _trusted(vpath, files, sizes):
        return None, None, -1
    use_mmap = mmap and _size(vpath) >= MMAP_MIN_BYTES
    vectors = VectorIndex.read(vpath, dim, metric, mmap=use_mmap)
    if vectors is None:
        return None, None, -1
    protos = None
    ppath = directory / prototypes_file_name(gen)
    if gen == current_generation and _trusted(ppath, files, sizes):
        try:
            protos = faiss.read_index(str(ppath))
        except Exception:  # malformed file: rebuild from SQLite
            protos = None
        if protos is not None and (protos.d != dim or not isinstance(protos, faiss.IndexIDMap)):
            protos = None
    return vectors, protos, gen


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _trusted(path: Path, files: dict, sizes: dict) -> bool:
    expected = files.get(path.name)
    if not isinstance(expected, str):
        return False
    size = _size(path)
    if size < 0:
        return False
    want_size = sizes.get(path.name)
    if isinstance(want_size, int) and want_size != size:
        return False
    if size > CRC_MAX_BYTES and isinstance(want_size, int):
        return True
    try:
        return file_checksum(path) == expected
    except OSError:
        return False


def write_checkpoint(
    directory: Path, generation: int, vectors: VectorIndex, protos: faiss.Index
) -> tuple[dict[str, str], dict[str, int]]:
    """Atomically write both cache files for ``generation``; returns ({name: checksum}, {name: size}).

    Each file is written straight from FAISS to a temp file (no in-memory
    copy of a large index), fsynced, then renamed. The directory is fsynced
    by the manifest write that must follow.
    """
    files: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for name, writer in ((vectors_file_name(generation), vectors.write),
                         (prototypes_file_name(generation), lambda p: faiss.write_index(protos, str(p)))):
        target = directory / name
        tmp = temp_path_for(target)
        try:
            writer(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            files[name] = file_checksum(tmp)
            sizes[name] = _size(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    return files, sizes


def sync(directory: Path) -> None:
    """fsync the index directory (after renames)."""
    fsync_dir(directory)


__all__ = ["EAGER_MAX_VECTORS", "MMAP_MIN_BYTES", "file_checksum", "load_checkpoint", "needs_checkpoint",
           "write_checkpoint"]
