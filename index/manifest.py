"""manifest.json: the human-readable summary and checksum list of an index.

The manifest is derived (SQLite is the source of truth) but it is what a person
or another tool reads first: format version, dimension, metric, counts, the
caller's ``extra`` fields and a checksum per derived FAISS file, which tells an
opener whether a cached file can be trusted for the current generation.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import FormatVersionError
from .layout import FORMAT_VERSION, MANIFEST_NAME


class ManifestUnreadable(Exception):
    """manifest.json exists but is not a JSON object with an int format_version.

    Internal: the store falls back to SQLite (the source of truth) and
    ``verify`` reports it; ``repair`` rewrites the manifest.
    """


def checksum(data: bytes | bytearray | memoryview) -> str:
    """Checksum used for derived files (CRC32 is enough to catch torn/stale files)."""
    return f"crc32:{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def manifest_path(directory: Path) -> Path:
    """Location of manifest.json inside an index directory."""
    return Path(directory) / MANIFEST_NAME


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """Parsed manifest, None when absent; ManifestUnreadable when malformed."""
    path = manifest_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestUnreadable(f"{path} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestUnreadable(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestUnreadable(f"{path} is not a JSON object")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ManifestUnreadable(f"{path} has no integer format_version")
    files = data.get("files", {})
    if not isinstance(files, dict):
        raise ManifestUnreadable(f"{path} has a malformed 'files' entry")
    return data


def check_format_version(version: int, where: Path) -> None:
    """Refuse formats newer than this code understands (it could corrupt them)."""
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"index format {version} is newer than this fewshot supports ({FORMAT_VERSION}); "
            f"upgrade fewshot (index: {where})"
        )


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace manifest.json (pretty-printed so people can read it)."""
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_text(manifest_path(directory), text)


def build_manifest(
    *,
    dim: int,
    metric: str,
    backend: str,
    generation: int,
    count: int,
    n_labels: int,
    extra: dict[str, Any],
    files: dict[str, str],
    created: float,
    updated: float,
    **more: Any,
) -> dict[str, Any]:
    """Assemble the manifest dict (one place defines its fields).

    ``more``: backend-specific fields (FAISS: ``vectors_epoch``, ``sizes``,
    ``index``; Milvus: ``uri``, ``collection``), stored at the top level.
    """
    return {
        **more,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "dim": dim,
        "metric": metric,
        "generation": generation,
        "count": count,
        "n_labels": n_labels,
        "extra": extra,
        "files": dict(files),
        "created": created,
        "updated": updated,
    }
