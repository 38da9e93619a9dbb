"""Cleaning up the generation-named FAISS cache files.

The caches only save the time of rebuilding FAISS indexes from SQLite; which
files are trusted is decided by the checkpoint (``index/checkpoint.py``). What a
writer leaves behind (other generations' caches, temp orphans) is deleted here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .atomic import fsync_dir
from .blobs import BlobStore
from .layout import stale_files


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
