"""Helpers both backends share: creation guards, index settings, class deltas.

Written once here so that the FAISS and Milvus stores cannot drift apart on
what they accept or refuse, and so that neither imports private code of the
other.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError, ValidationError
from .index_config import IndexConfig
from .layout import LOCK_NAME, MANIFEST_NAME, META_NAME, TMP_SUFFIX
from .validation import prepare_vectors, validate_dim, validate_extra, validate_label, validate_metric

#: Index parameters whose change needs the vectors indexed again (the others apply at search time).
REBUILD_PARAMS = frozenset({"hnsw_m", "ef_construction", "nlist", "pq_m"})


def is_index_dir(path: str | Path) -> bool:
    """True if ``path`` is a directory holding a fewshot index (manifest or database)."""
    p = Path(path)
    return p.is_dir() and ((p / MANIFEST_NAME).is_file() or (p / META_NAME).is_file())


def make_config(index_type: str = "auto", index_params: dict[str, Any] | None = None) -> IndexConfig:
    """Validated :class:`IndexConfig` from an index type and a dict of its fields."""
    params = dict(index_params or {})
    try:
        return IndexConfig(index_type=index_type, **params)
    except TypeError:
        known = sorted(f for f in IndexConfig.__dataclass_fields__ if f != "index_type")
        bad = sorted(set(params) - set(known))
        raise ValidationError(f"unknown index parameter(s) {', '.join(bad)}; known: {', '.join(known)}") from None


def merged_config(current: IndexConfig, index_type: str | None, params: dict[str, Any]) -> IndexConfig:
    """``current`` with ``params`` applied and, when given, a new index type (``set_index_type``)."""
    fields = json.loads(current.to_json())
    fields.pop("index_type", None)
    return make_config(index_type or current.index_type, {**fields, **params})


def create_args(path: str | Path, dim: int, metric: str, extra: dict[str, Any] | None, index_type: str,
                index_params: dict[str, Any] | None) -> tuple[Path, int, str, dict[str, Any], IndexConfig]:
    """The validated arguments of a ``create``; a path naming a file is refused.

    Everything is checked before anything is made on disk, so a bad argument
    leaves no directory behind.
    """
    dim = validate_dim(dim)
    metric = validate_metric(metric)
    extra = validate_extra(extra)
    config = make_config(index_type, index_params)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValidationError(f"{path} is a file; choose a directory path for the index")
    return path, dim, metric, extra, config


@contextlib.contextmanager
def closing_on_error(resource: Any) -> Iterator[Any]:
    """Yield ``resource``; close it if the block fails (a half-opened store must not leak it)."""
    try:
        yield resource
    except BaseException:
        resource.close()
        raise


def refuse_foreign_dir(path: Path) -> None:
    """Refuse to create an index in a non-empty directory that is not one.

    So that a mistyped path never mixes index files into unrelated data; a
    lock file or temporary files of a crashed ``create`` do not count.
    """
    leftovers = [p.name for p in path.iterdir() if p.name != LOCK_NAME and not p.name.endswith(TMP_SUFFIX)]
    if leftovers:
        raise StoreError(
            f"refusing to create an index in {path}: the directory is not empty "
            f"(e.g. {leftovers[0]!r}) and is not a fewshot index; choose a new or empty directory"
        )


def refuse_existing(path: Path) -> None:
    """The error of ``create`` on an existing index without ``exist_ok``."""
    raise StoreError(f"{path} already holds a fewshot index; open it instead (or pass exist_ok=True)")


def check_same_shape(store: Any, path: Path, dim: int, metric: str) -> Any:
    """``store`` (an existing index opened by ``create(exist_ok=True)``) if its dim and metric match.

    Otherwise the store is closed and ValidationError says what it holds.
    """
    if store.dim != dim or store.metric != metric:
        found = f"dim {store.dim}, metric {store.metric}"
        store.close()
        raise ValidationError(
            f"the existing index at {path} has {found}, not dim {dim}, metric {metric}; "
            "use another directory or reindex"
        )
    return store


def class_deltas(labels: Sequence[str], vecs: np.ndarray, dim: int,
                 sign: int = 1) -> dict[str, tuple[int, np.ndarray]]:
    """label -> (count, float64 sum of vectors) for a batch; ``sign=-1`` for a removal.

    Sums are kept in float64 so that many adds and removes do not drift the
    stored class means away from a recomputation from the records.
    """
    out: dict[str, tuple[int, np.ndarray]] = {}
    wide = vecs.astype(np.float64)
    for i, label in enumerate(labels):
        count, vsum = out.get(label, (0, np.zeros(dim, dtype=np.float64)))
        out[label] = (count + 1, vsum + wide[i])
    if sign < 0:
        return {label: (-c, -s) for label, (c, s) in out.items()}
    return out


def label_filter(labels: Sequence[str]) -> list[str]:
    """The validated label list of a filtered search; a bare string is refused (a common slip)."""
    if isinstance(labels, str):
        raise ValidationError("labels must be a list of label strings, e.g. labels=['cat']; got a single str")
    try:
        items = list(labels)
    except TypeError:
        raise ValidationError(f"labels must be a list of label strings; got {type(labels).__name__}") from None
    return [validate_label(label) for label in items]


def check_rewrite(wanted: np.ndarray, vectors: np.ndarray, dim: int, metric: str) -> np.ndarray:
    """The prepared vectors of a ``rewrite_vectors``: one per id, each id once."""
    vecs = prepare_vectors(vectors, dim, metric)
    if len(vecs) != len(wanted):
        raise ValidationError(f"got {len(wanted)} ids but {len(vecs)} vectors; pass one vector per id")
    if len(np.unique(wanted)) != len(wanted):
        raise ValidationError("ids passed to rewrite_vectors contain duplicates; pass each record once")
    return vecs


__all__ = ["REBUILD_PARAMS", "check_rewrite", "check_same_shape", "class_deltas", "closing_on_error", "create_args",
           "is_index_dir", "label_filter", "make_config", "merged_config", "refuse_existing", "refuse_foreign_dir"]
