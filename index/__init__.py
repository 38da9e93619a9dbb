"""Torch-free vector-store layer of fewshot.

An index is a directory: ``meta.sqlite`` (records, class sums, settings; the
source of truth), generation-named FAISS cache files, ``manifest.json`` and an
optional content-addressed ``examples/`` blob store. See ``FaissStore`` for the
concurrency and crash-safety rules, ``IndexConfig`` for the index types (flat,
HNSW, IVF, IVF-PQ; ``auto`` by size) and ``index.milvus_store.MilvusStore`` for
the Milvus backend (imported on demand: pymilvus is optional).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    ConflictError,
    CorruptIndexError,
    FormatVersionError,
    LockTimeoutError,
    MissingBlobError,
    NotAnIndexError,
    RecordNotFoundError,
    RecordsChangedError,
    StoreError,
    ValidationError,
)

# The rest loads FAISS and numpy: imported on first use, so a caller that only
# validates labels (the CLI's output, a client of ``fewshot serve``) stays light.
_LAZY = {
    "ClassMatches": "types", "Hit": "types", "Record": "types", "VectorStore": "base",
    "BlobStore": "blobs", "available_backends": "factory", "create_store": "factory",
    "open_store": "factory", "FaissStore": "faiss_store", "is_index_dir": "common",
    "INDEX_TYPES": "index_config", "IndexConfig": "index_config", "FORMAT_VERSION": "layout",
}

if TYPE_CHECKING:
    from .base import VectorStore
    from .blobs import BlobStore
    from .common import is_index_dir
    from .factory import available_backends, create_store, open_store
    from .faiss_store import FaissStore
    from .index_config import INDEX_TYPES, IndexConfig
    from .layout import FORMAT_VERSION
    from .types import ClassMatches, Hit, Record


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'index' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMAT_VERSION",
    "INDEX_TYPES",
    "BlobStore",
    "ClassMatches",
    "ConflictError",
    "CorruptIndexError",
    "FaissStore",
    "FormatVersionError",
    "Hit",
    "IndexConfig",
    "LockTimeoutError",
    "MissingBlobError",
    "NotAnIndexError",
    "Record",
    "RecordNotFoundError",
    "RecordsChangedError",
    "StoreError",
    "ValidationError",
    "VectorStore",
    "available_backends",
    "create_store",
    "is_index_dir",
    "open_store",
]
