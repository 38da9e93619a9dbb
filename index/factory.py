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

BACKENDS: dict[str, type[VectorStore]] = {FAISS_BACKEND: FaissStore}
MILVUS_BACKEND = "milvus"


def _backend(name: str) -> type[VectorStore] | None:
    """The store class for ``name``; Milvus is imported only when asked for (pymilvus is optional)."""
    if name == MILVUS_BACKEND and name not in BACKENDS:
        from .milvus_store import MilvusStore

        BACKENDS[name] = MilvusStore
    return BACKENDS.get(name)


def available_backends() -> list[str]:
    """Backend names ``create_store`` accepts."""
    return sorted({*BACKENDS, MILVUS_BACKEND})


def create_store(
    path: str | Path,
    dim: int,
    metric: str = "cosine",
    extra: dict[str, Any] | None = None,
    backend: str = "faiss",
    **kw: Any,
) -> VectorStore:
    """Create an index at ``path`` with the given backend (``kw`` goes to its ``create``).

    FAISS: ``index_type``, ``index_params``, ``autosave``, ``lock_timeout``.
    Milvus: ``uri``, ``token``, ``collection``, ``index_type``, ``index_params``, ``timeout``.
    """
    cls = _backend(backend) if isinstance(backend, str) else None
    if cls is None:
        raise ValidationError(f"unknown backend {backend!r}; available: {', '.join(available_backends())}")
    if backend == FAISS_BACKEND:
        for key in ("uri", "token", "collection", "timeout"):
            if kw.get(key) is not None:
                raise ValidationError(f"--{key} is only for the milvus backend (use --backend milvus)")
            kw.pop(key, None)
    return cls.create(path, dim, metric, extra, **kw)


def open_store(path: str | Path, **kw: Any) -> VectorStore:
    """Open the index at ``path`` with the backend it was created with (``kw``: readonly, ...).

    Backend-specific keywords the other backend does not take (``token``,
    ``timeout``) are dropped, so callers can pass them unconditionally.
    """
    backend = FAISS_BACKEND
    try:
        manifest = read_manifest(Path(path)) if Path(path).is_dir() else None
    except ManifestUnreadable:
        manifest = None
    if manifest is not None:
        backend = manifest.get("backend", FAISS_BACKEND)
    cls = _backend(backend) if isinstance(backend, str) else None
    if cls is None:
        raise StoreError(
            f"{path} uses the {backend!r} backend, which this fewshot does not support; upgrade fewshot"
        )
    if backend == FAISS_BACKEND:
        for key in ("token", "timeout"):
            kw.pop(key, None)
    return cls.open(path, **kw)
