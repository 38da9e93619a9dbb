"""Torch-free vector-store layer of fewshot.

An index is a directory: ``meta.sqlite`` (records, class sums, settings; the
source of truth), generation-named FAISS cache files, ``manifest.json`` and an
optional content-addressed ``examples/`` blob store. See ``FaissStore`` for the
concurrency and crash-safety rules, ``IndexConfig`` for the index types (flat,
HNSW, IVF, IVF-PQ; ``auto`` by size) and ``index.milvus_store.MilvusStore`` for
the Milvus backend (imported on demand: pymilvus is optional).
"""

from .base import ClassMatches, Hit, Record, VectorStore
from .blobs import BlobStore
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
from .factory import available_backends, create_store, open_store
from .faiss_store import FaissStore, is_index_dir
from .index_config import INDEX_TYPES, IndexConfig
from .layout import FORMAT_VERSION

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
