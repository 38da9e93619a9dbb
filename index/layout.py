"""On-disk layout of an index directory: file names and the format version.

Kept in one place so that the store, the manifest writer and the clean-up code
agree on which files are derived caches and which are the source of truth.
"""

from __future__ import annotations

import re
from pathlib import Path

#: Version of the on-disk format; bump when a change breaks older readers.
FORMAT_VERSION = 1

META_NAME = "meta.sqlite"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
TMP_SUFFIX = ".tmp"

_GEN_FILE_RE = re.compile(r"^(vectors|prototypes)-(\d+)\.faiss$")


def vectors_file_name(generation: int) -> str:
    """Name of the FAISS cache of all stored vectors for ``generation``."""
    return f"vectors-{generation}.faiss"


def prototypes_file_name(generation: int) -> str:
    """Name of the FAISS cache of the class prototypes for ``generation``."""
    return f"prototypes-{generation}.faiss"


def generation_of(file_name: str) -> int | None:
    """Generation encoded in a derived FAISS file name, or None if not one."""
    match = _GEN_FILE_RE.fullmatch(file_name)
    return int(match.group(2)) if match else None


def stale_files(directory: Path, current_generation: int) -> list[Path]:
    """Derived files that a writer may delete: other generations and temp orphans.

    Only top-level files are considered; the blob store cleans its own tree.
    """
    stale: list[Path] = []
    for entry in directory.iterdir():
        if not entry.is_file():
            continue
        gen = generation_of(entry.name)
        if gen is not None and gen != current_generation:
            stale.append(entry)
        elif entry.name.endswith(TMP_SUFFIX):
            stale.append(entry)
    return stale
