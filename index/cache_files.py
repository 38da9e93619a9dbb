"""Reading and writing the generation-named FAISS cache files.

The caches only save the time of rebuilding FAISS indexes from SQLite. A
cached file is trusted only if the manifest names it for the *current*
generation with a matching checksum and it has the expected shape; anything
else means "rebuild", never "fail".
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import faiss

from . import faiss_util
from .atomic import atomic_write_bytes, fsync_dir
from .blobs import BlobStore
from .layout import prototypes_file_name, stale_files, vectors_file_name
from .manifest import ManifestUnreadable, checksum, read_manifest


def load_cached(
    directory: Path, generation: int, dim: int, metric: str, count: int, class_ids: set[int]
) -> tuple[faiss.IndexIDMap2 | None, faiss.IndexIDMap2 | None]:
    """(vectors index, prototype index) from valid cache files; None for each unusable one."""
    try:
        manifest = read_manifest(directory)
    except ManifestUnreadable:
        return None, None
    if manifest is None or manifest.get("generation") != generation:
        return None, None
    files = manifest.get("files", {})
    vectors = _read(directory, vectors_file_name(generation), files, dim, metric, count)
    protos = _read(directory, prototypes_file_name(generation), files, dim, metric, len(class_ids))
    if protos is not None and set(faiss_util.index_ids(protos).tolist()) != class_ids:
        protos = None
    return vectors, protos


def _read(directory: Path, name: str, files: dict, dim: int, metric: str,
          ntotal: int) -> faiss.IndexIDMap2 | None:
    expected = files.get(name)
    if not isinstance(expected, str):
        return None
    try:
        data = (directory / name).read_bytes()
    except OSError:
        return None  # e.g. removed by a writer that committed meanwhile
    if checksum(data) != expected:
        return None
    return faiss_util.deserialize(data, dim, metric, ntotal)


def write_caches(directory: Path, generation: int, vectors: faiss.IndexIDMap2,
                 protos: faiss.IndexIDMap2) -> dict[str, str]:
    """Atomically write both cache files for ``generation``; returns {name: checksum}.

    The directory is fsynced by the manifest write that must follow.
    """
    files: dict[str, str] = {}
    for name, index in ((vectors_file_name(generation), vectors), (prototypes_file_name(generation), protos)):
        data = faiss_util.serialize(index)
        atomic_write_bytes(directory / name, data, sync_dir=False)
        files[name] = checksum(data)
    return files


def remove_stale(directory: Path, generation: int) -> int:
    """Delete other generations' caches and temp orphans (writers only, under the lock).

    Includes the blob store's temp files left by writers that died mid-copy
    (see ``BlobStore.sweep_temps``), so every open by a writer cleans them.
    """
    removed = 0
    for path in stale_files(directory, generation):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        fsync_dir(directory)
    return removed + BlobStore(directory).sweep_temps()
