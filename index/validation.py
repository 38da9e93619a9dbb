"""Input checks for the store API.

Everything a caller hands to the store passes through here first, so bad input
fails early with a ValidationError whose message says what to fix, instead of
surfacing later as a FAISS crash, a NaN score or an unreadable database row.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .types import METRICS
from .errors import ValidationError

MAX_LABEL_LENGTH = 200
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069]")  # embeddings, overrides and isolates
_INVISIBLE_RE = re.compile(r"[\s\u200b-\u200d\u2060\ufeff\u180e]+")  # whitespace and zero-width
_SURROGATE_RE = re.compile("[\ud800-\udfff]")  # undecodable bytes (surrogateescape) or broken UTF-16
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def validate_metric(metric: Any) -> str:
    """Return ``metric`` if it is one of the supported metrics."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValidationError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    return metric


def validate_dim(dim: Any) -> int:
    """Return ``dim`` as an int >= 1."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or int(dim) < 1:
        raise ValidationError(f"dim must be a positive integer; got {dim!r}")
    return int(dim)


def validate_temperature(temperature: Any) -> float | None:
    """None (no probabilities) or a finite float > 0."""
    if temperature is None:
        return None
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not 0 < float(temperature) < float("inf"):
        raise ValidationError(f"temperature must be a number > 0; got {temperature!r}")
    return float(temperature)


def validate_k(k: Any) -> int:
    """Return ``k`` as an int >= 1 (a k above the record count just yields fewer hits)."""
    if type(k) is int and k >= 1:  # the common case, without the (slow) ABC isinstance checks
        return k
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValidationError(f"k must be an integer >= 1; got {k!r}")
    if int(k) < 1:
        raise ValidationError(f"k must be >= 1; got {int(k)}")
    return int(k)


def validate_timeout(timeout: Any) -> float:
    """Return a lock timeout in seconds (>= 0; 0 means try once)."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout >= 0:
        raise ValidationError(f"lock timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def as_matrix(vectors: Any, dim: int, *, what: str = "vectors") -> np.ndarray:
    """Check shape and finiteness; return a float64 [n, dim] copy-or-view.

    A 1-D input of length ``dim`` is accepted as a single row, because passing
    one embedding is the common case for queries.
    """
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"{what} must be a numeric array of shape [n, {dim}]: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValidationError(f"{what} must be a numeric array of shape [n, {dim}]; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValidationError(f"{what} must be real-valued; got dtype {arr.dtype}")
    if arr.ndim == 1:
        if arr.shape[0] != dim:
            raise ValidationError(f"expected {what} of dimension {dim}, got {arr.shape[0]}")
        arr = arr.reshape(1, dim)
    elif arr.ndim != 2:
        raise ValidationError(f"{what} must be 2-D [n, {dim}] (or 1-D for one row); got shape {arr.shape}")
    elif arr.shape[1] != dim:
        raise ValidationError(f"expected {what} of dimension {dim}, got {arr.shape[1]}")
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValidationError(f"{what} contain NaN or inf (row {row}); clean or drop that row")
    return arr


def prepare_vectors(vectors: Any, dim: int, metric: str, *, what: str = "vectors") -> np.ndarray:
    """Validate and convert to the stored form: float32, L2-normalised for cosine.

    Normalising once here means stored vectors, prototypes and queries all live
    on the unit sphere and the inner product *is* the cosine similarity.
    """
    fast = _prepare_fast(vectors, dim, metric)
    if fast is not None:
        return fast
    arr = as_matrix(vectors, dim, what=what)
    if metric == "cosine":
        # Scale by the largest entry first so huge or tiny (subnormal) rows
        # neither overflow nor underflow when squared.
        scale = np.abs(arr).max(axis=1) if arr.shape[1] else np.zeros(len(arr))
        zero = scale == 0
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            raise ValidationError(
                f"{what} row {row} is all zeros; cosine similarity is undefined for a zero vector"
            )
        arr = arr / scale[:, None]
        arr = arr / np.linalg.norm(arr, axis=1)[:, None]
    with np.errstate(over="ignore"):  # overflow is reported below as an error
        out = arr.astype(np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValidationError(f"{what} row {row} has values too large for float32; rescale the vectors")
    return np.ascontiguousarray(out)


def prepare_queries(queries: Any, dim: int, metric: str) -> np.ndarray:
    """:func:`prepare_vectors` for queries, with a float32 shortcut for cosine.

    A query is never stored, so float32 queries may be normalised in float32
    (score error ~1e-7) with a few numpy calls instead of a float64 round trip:
    on this CPU that round trip cost as much as searching 10k prototypes for one
    query, and half the time of a 1,000-query batch against 100 classes.
    Anything unusual (NaN/inf, zero, tiny or huge rows, other dtypes or shapes)
    takes the careful path and its exact errors.
    """
    if metric == "cosine" and isinstance(queries, np.ndarray) and queries.dtype == np.float32:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow/NaN: the careful path reports them
            if queries.ndim == 1 and queries.shape[0] == dim:
                sq = float(np.dot(queries, queries))
                if 1e-30 < sq < 1e30:
                    return (queries / np.float32(math.sqrt(sq))).reshape(1, dim)
            elif queries.ndim == 2 and queries.shape[1] == dim and len(queries):
                sq = np.einsum("ij,ij->i", queries, queries)
                if sq.min() > 1e-30 and sq.max() < 1e30:  # NaN fails both comparisons
                    return queries / np.sqrt(sq)[:, None]
    return prepare_vectors(queries, dim, metric, what="queries")


def _prepare_one(vector: np.ndarray, dim: int, metric: str) -> np.ndarray | None:
    """:func:`_prepare_fast` for a single row (a single query): the same float64
    arithmetic with a scalar norm and a third of the numpy calls (a single
    query's validation used to cost more than its search)."""
    if vector.size != dim:
        return None
    wide = vector.reshape(dim).astype(np.float64)
    if metric == "cosine":
        with np.errstate(over="ignore", invalid="ignore"):  # huge rows: the careful path reports them
            sq = float(wide @ wide)
        if not 1e-300 < sq < math.inf:
            return None  # NaN/inf, zero, huge or subnormal: careful path
        return (wide / math.sqrt(sq)).astype(np.float32).reshape(1, dim)
    with np.errstate(over="ignore", invalid="ignore"):
        out = vector.reshape(1, dim).astype(np.float32)
        if not (math.isfinite(float(wide @ wide)) and np.isfinite(out).all()):
            return None
    return np.ascontiguousarray(out)


def _prepare_fast(vectors: Any, dim: int, metric: str) -> np.ndarray | None:
    """The common case (a float array of the right shape, finite, non-zero rows) in a few ufuncs.

    Returns None for anything else, which then takes the careful path above
    (with its exact error messages and overflow-safe normalisation). A single
    query spends most of its time here otherwise.
    """
    if not isinstance(vectors, np.ndarray) or vectors.dtype not in (np.float32, np.float64):
        return None
    if vectors.ndim == 1 or (vectors.ndim == 2 and vectors.shape[0] == 1):
        return _prepare_one(vectors, dim, metric)
    if vectors.ndim == 2 and vectors.shape[1] == dim:
        arr = vectors
    else:
        return None
    wide = arr.astype(np.float64)
    if metric == "cosine":
        sq = np.einsum("ij,ij->i", wide, wide)
        if not (np.isfinite(sq).all() and (sq > 1e-300).all()):
            return None  # NaN/inf, zero, huge or subnormal rows: careful path
        out = (wide / np.sqrt(sq)[:, None]).astype(np.float32)
    else:
        with np.errstate(over="ignore"):  # too large for float32: careful path reports it
            out = arr.astype(np.float32)
            finite = np.isfinite(np.einsum("ij,ij->i", wide, wide)).all() and np.isfinite(out).all()
        if not finite:
            return None
    return np.ascontiguousarray(out)


def escape_for_display(text: str) -> str:
    """``text`` safe for one line of tab-separated or terminal output.

    Undecodable bytes (lone surrogates) become ``\\xff``; tabs, newlines, other
    control codes and bidirectional controls become their escapes (``\\t``,
    ``\\n``, ``\\x1b``, ``\\u202e``), so a label or file name can neither
    break a row nor rewrite the terminal.
    """
    return _UNSAFE_RE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), escape_surrogates(text))


def escape_surrogates(text: str) -> str:
    """Lone surrogates as escapes: a byte that was not UTF-8 (surrogateescape) as ``\\xff``, others as ``\\ud800``.

    What makes a file name or argument that was not UTF-8 storable and printable.
    """
    return _SURROGATE_RE.sub(_surrogate_escape, text) if _SURROGATE_RE.search(text) else text


def _surrogate_escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}"


def label_for_display(label: str) -> str:
    """``label`` safe to echo in a one-line message: escaped, at most 60 characters."""
    text = escape_for_display(str(label))
    return text if len(text) <= 60 else text[:57] + "..."


def validate_label(label: Any) -> str:
    """Return ``label`` unchanged if acceptable (see :func:`normalize_label` for new labels).

    Labels are data, never file names, so path-like and non-ASCII labels are
    fine. Refused: non-strings, empty or invisible labels (whitespace and
    zero-width characters only), over-long ones, text that is not valid UTF-8
    (lone surrogates, e.g. a non-UTF-8 command-line argument), C0/C1 control
    characters (they break tab-separated and terminal output and are almost
    always a parsing bug) and bidirectional overrides/isolates (they make a
    label display as another one). Unchanged, so labels already stored in NFD
    (older indexes, macOS folder names) still validate and match.
    """
    if not isinstance(label, str):
        raise ValidationError(f"label must be a str; got {type(label).__name__} {label!r}")
    label = str(label)  # np.str_ -> str, so it round-trips through JSON/SQLite
    if len(label) > MAX_LABEL_LENGTH:
        raise ValidationError(
            f"label must be at most {MAX_LABEL_LENGTH} characters; got {len(label)} ({label[:40]!r}...)"
        )
    shown = label_for_display(label)
    if _SURROGATE_RE.search(label):
        raise ValidationError(f"label '{shown}' is not valid UTF-8 text; give the label in UTF-8")
    if not _INVISIBLE_RE.sub("", label):
        raise ValidationError("label must not be empty (it is blank or holds only invisible characters)")
    if _CONTROL_RE.search(label):
        raise ValidationError(f"label '{shown}' contains control characters (C0 \\x00-\\x1f, \\x7f, "
                              "C1 \\x80-\\x9f); remove them")
    if _BIDI_RE.search(label):
        raise ValidationError(f"label '{shown}' contains bidirectional override or isolate characters "
                              "(U+202A-U+202E, U+2066-U+2069); remove them")
    return label


def normalize_label(label: Any) -> str:
    """A new label as stored: validated, then NFC-normalised.

    NFC makes a typed ``é`` and a macOS (NFD) folder name ``e + U+0301`` one class.
    """
    return unicodedata.normalize("NFC", validate_label(label))


def resolve_label(label: Any, stored: Iterable[str]) -> str | None:
    """The stored label that ``label`` means (equal after NFC), or None if there is none.

    Lookups (remove, search filters, adding to an existing class) go through
    here, so a class stored in NFD by an older fewshot still matches a label
    typed in NFC, and the reverse.
    """
    want = normalize_label(label)
    if want in stored:
        return want
    if label in stored:
        return label
    return next((s for s in stored if not s.isascii() and unicodedata.normalize("NFC", s) == want), None)


def _require_sequence(value: Any, what: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ValidationError(f"{what} must be a list with one entry per vector; got {type(value).__name__}")
    return value


def validate_labels(labels: Any, n: int) -> list[str]:
    """Validate one label per vector."""
    seq = _require_sequence(labels, "labels")
    if len(seq) != n:
        raise ValidationError(f"got {n} vectors but {len(seq)} labels; pass one label per vector")
    return [validate_label(label) for label in seq]


def metadata_to_json(meta: Any, *, what: str = "metadata") -> str:
    """Serialise one metadata dict to strict JSON (no NaN), or raise ValidationError."""
    if not isinstance(meta, Mapping):
        raise ValidationError(f"{what} must be a dict; got {type(meta).__name__}")
    try:
        return json.dumps(dict(meta), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{what} must be JSON-serialisable (str/int/float/bool/None/list/dict): {exc}"
        ) from None


def validate_metadata(metadata: Any, n: int) -> list[str]:
    """Validate one metadata dict per vector (None -> empty dicts); return JSON texts."""
    if metadata is None:
        return ["{}"] * n
    seq = _require_sequence(metadata, "metadata")
    if len(seq) != n:
        raise ValidationError(f"got {n} vectors but {len(seq)} metadata entries; pass one dict per vector")
    return [metadata_to_json(m, what=f"metadata[{i}]") for i, m in enumerate(seq)]


def validate_extra(extra: Any) -> dict[str, Any]:
    """Validate the free-form ``extra`` fields; return a JSON-clean copy."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise ValidationError(f"extra must be a dict; got {type(extra).__name__}")
    for key in extra:
        if not isinstance(key, str):
            raise ValidationError(f"extra keys must be strings; got {key!r}")
    return json.loads(metadata_to_json(extra, what="extra"))


def validate_ids(ids: Any) -> np.ndarray:
    """Return ids as a 1-D int64 array (integers only; floats and bools are refused)."""
    if isinstance(ids, (numbers.Integral, str, bytes)):
        raise ValidationError(f"ids must be a list of integers; got a single {type(ids).__name__}")
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"ids must be a list of integers: {exc}") from None
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise ValidationError(f"ids must be a 1-D list of integers; got shape {arr.shape}")
    if arr.dtype == object:
        values = arr.tolist()
        if not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in values):
            raise ValidationError("ids must be integers")
        if any(not _INT64_MIN <= int(x) <= _INT64_MAX for x in values):
            raise ValidationError("ids must fit in a signed 64-bit integer")
        return np.array([int(x) for x in values], dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValidationError(f"ids must be integers; got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > _INT64_MAX:
        raise ValidationError("ids must fit in a signed 64-bit integer")
    return arr.astype(np.int64)
