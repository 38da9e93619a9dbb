"""Backend selection: the only place that knows which VectorStore class to use.

Callers use ``create_store`` / ``open_store`` so that adding a backend (e.g.
Milvus) means registering it here, not changing every call site. The backend
name is recorded in the index (meta table and manifest) at creation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import VectorStore
from .errors import StoreError, ValidationError
from .faiss_store import BACKEND as FAISS_BACKEND
from .faiss_store import FaissStore
from .manifest import ManifestUnreadable, read_manifest

BACKENDS: dict[str, type[FaissStore]] = {FAISS_BACKEND: FaissStore}


def create_store(
    path: str | Path,
    dim: int,
    metric: str = "cosine",
    extra: dict[str, Any] | None = None,
    backend: str = "faiss",
    **kw: Any,
) -> VectorStore:
    """Create an index at ``path`` with the given backend (``kw`` goes to its ``create``)."""
    cls = BACKENDS.get(backend)
    if cls is None:
        raise ValidationError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    return cls.create(path, dim, metric, extra, **kw)


def open_store(path: str | Path, **kw: Any) -> VectorStore:
    """Open the index at ``path`` with the backend it was created with (``kw``: readonly, ...)."""
    backend = FAISS_BACKEND
    try:
        manifest = read_manifest(Path(path)) if Path(path).is_dir() else None
    except ManifestUnreadable:
        manifest = None
    if manifest is not None:
        backend = manifest.get("backend", FAISS_BACKEND)
    cls = BACKENDS.get(backend)
    if cls is None:
        raise StoreError(
            f"{path} uses the {backend!r} backend, which this fewshot does not support; upgrade fewshot"
        )
    return cls.open(path, **kw)
