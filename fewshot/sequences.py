"""Sequences as inputs: readers for three file formats and the preprocessing of pen strokes and series.

Every reader returns float32 ``[T, F]`` (one row per time step) or raises one
:class:`~fewshot.errors.InputError` naming the file (and line) and what is wrong.

* ``.txt``: an Omniglot stroke file (the official ``strokes_*`` format): a
  ``START`` line, then the strokes in drawing order, each a run of ``x,y,t`` rows
  ended by a ``BREAK`` line. Read as ``[T, 3]`` = ``(x, y, end_of_stroke)``:
  absolute pen positions, with 1 on the last point of each stroke (the time
  column is dropped: after arc-length resampling it carries nothing we use).
  Many files at once (a batch of the encoder): :func:`parse_stroke_files`, one
  vectorised pass with exactly the arrays and the errors of one file at a time.
* ``.npy``: a numeric array ``[T, F]`` (``[T]`` counts as ``[T, 1]``); pickled
  object arrays are refused, never loaded.
* ``.csv``: one row per time step, one column per feature, comma separated, with
  an optional header line (recognised when a field of the first line is not a number).

Preprocessing (:class:`SequencePreprocess`) turns such an array into what an RNN
reads: for strokes, pen-offset form ``(dx, dy, pen_up, x, y)`` normalised for
position and scale, optionally resampled by arc length; for generic series,
per-feature standardisation with statistics stored in the encoder file. It is a
plain dict in the encoder file, so it is part of the encoder's fingerprint.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fewshot.errors import InputError
from fewshot.inputs import SEQUENCE_SUFFIXES, InputItem
from fewshot.limits import check_points, check_size, limit, read_file

SEQ_BYTES = "FEWSHOT_MAX_SEQUENCE_BYTES"  # see fewshot.limits: the size cap, checked before reading
DEFAULT_MAX_LENGTH = 2000  # steps after preprocessing; documented option of SequencePreprocess


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------
def _read_bytes(path: Path, name: str) -> bytes:
    """A text file's bytes (size and emptiness checked); :func:`_decode` makes them text.

    Plain os calls (open, fstat, read), no file object: reading is a good share of the
    time a batch of small stroke files takes.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            check_size(size, name, SEQ_BYTES)
            data = os.read(fd, size + 1)
            if len(data) > size:  # more than fstat said (it grew, or a pseudo-file): read to the end
                parts, total, cap = [data], len(data), limit(SEQ_BYTES)
                while total <= cap and (chunk := os.read(fd, 1 << 20)):  # never more than the cap
                    parts.append(chunk)
                    total += len(chunk)
                data = b"".join(parts)
                check_size(len(data), name, SEQ_BYTES)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(f"{name}: file is empty")
    check_size(data.count(b"\n"), name, "FEWSHOT_MAX_SEQUENCE_POINTS", "lines")  # a point per line at most
    return data


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name}: not a text file (cannot decode it as UTF-8)") from None


def _read_text(path: Path, name: str) -> str:
    return _decode(_read_bytes(path, name), name)


def _fast_floats(text: str) -> np.ndarray | None:
    """Numbers separated by commas/newlines, parsed in C; None if anything is off (caller explains)."""
    flat = text.replace("\r", "").replace("\n", ",").strip(", ")
    if not flat:
        return np.zeros(0, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            arr = np.fromstring(flat, sep=",")  # noqa: NPY201 - text mode is not deprecated
        except (ValueError, DeprecationWarning):
            return None
    return arr


def _parse_row(line: str, width: int | None, name: str, lineno: int, what: str) -> list[float]:
    fields = [f.strip() for f in line.split(",")]
    try:
        vals = [float(f) for f in fields]
    except ValueError:
        raise InputError(f"{name}, line {lineno}: expected {what}, got {line.strip()[:60]!r}") from None
    if width is not None and len(vals) != width:
        raise InputError(f"{name}, line {lineno}: expected {width} values ({what}), got {len(vals)}")
    if not all(np.isfinite(vals)):
        raise InputError(f"{name}, line {lineno}: NaN or infinite value in {line.strip()[:60]!r}")
    return vals


def parse_strokes(text: str, name: str = "<strokes>") -> list[np.ndarray]:
    """An Omniglot stroke file's text -> list of float32 ``[n, 3]`` arrays ``(x, y, t)``, one per stroke."""
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{name}: file is empty")
    nl = stripped.find("\n")
    head, body = (stripped, "") if nl < 0 else (stripped[:nl], stripped[nl + 1:])
    first = text[: len(text) - len(stripped)].count("\n")  # 0-based line of the first non-blank line
    if head.strip() != "START":
        raise InputError(f"{name}, line {first + 1}: an Omniglot stroke file starts with a START line, "
                         f"got {head.strip()[:60]!r}")
    strokes: list[np.ndarray] = []
    fast_ok = "START" not in body
    if fast_ok:
        for chunk in body.split("BREAK"):
            arr = _fast_floats(chunk)
            if arr is None or arr.size % 3 or not np.isfinite(arr).all():
                fast_ok = False
                break
            if arr.size:
                strokes.append(arr.reshape(-1, 3).astype(np.float32))
    if not fast_ok:  # slow path: find the offending line and say which
        lines = text.splitlines()
        strokes, cur = [], []
        for lineno, ln in enumerate(lines[first + 1:], start=first + 2):
            s = ln.strip()
            if not s:
                continue
            if s == "BREAK":
                if cur:
                    strokes.append(np.asarray(cur, np.float32))
                cur = []
            elif s == "START":
                raise InputError(f"{name}, line {lineno}: a second START line (one character per file)")
            else:
                cur.append(_parse_row(s, 3, name, lineno, "x,y,t numbers or BREAK"))
        if cur:
            strokes.append(np.asarray(cur, np.float32))
    if not strokes:
        raise InputError(f"{name}: stroke file holds no points (only START/BREAK lines)")
    return strokes


def strokes_to_array(strokes: Sequence[np.ndarray]) -> np.ndarray:
    """Strokes ``[(n_i, >=2)]`` -> float32 ``[T, 3]`` = ``(x, y, end_of_stroke)``."""
    parts = []
    for s in strokes:
        a = np.zeros((len(s), 3), np.float32)
        a[:, :2] = np.asarray(s, np.float32)[:, :2]
        a[-1, 2] = 1.0
        parts.append(a)
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)


def array_to_strokes(a: np.ndarray) -> list[np.ndarray]:
    """``[T, 3]`` ``(x, y, end_of_stroke)`` (or ``[T, 2]``: one stroke) -> list of ``[n, 2]`` strokes."""
    a = np.asarray(a, np.float32)
    if a.shape[1] == 2:
        return [a]
    ends = np.flatnonzero(a[:, 2] > 0.5) + 1
    bounds = np.concatenate([[0], ends, [len(a)]]) if not len(ends) or ends[-1] != len(a) \
        else np.concatenate([[0], ends])
    return [a[s:e, :2] for s, e in zip(bounds[:-1], bounds[1:]) if e > s]


# --- many stroke files at once ------------------------------------------------------------------
# parse_strokes reads one file at a time: np.fromstring parses decimals slowly (about as long as the
# RNN takes to embed them). parse_stroke_files reads a whole batch of files with a fixed number of
# numpy calls: every number is parsed as an integer with its decimal point removed (several times
# faster) and divided by 10**digits_after_the_point, which gives exactly the float64 that strtod
# gives (both are exact below 2**53, and IEEE division rounds correctly). Anything it does not
# recognise with certainty (other characters, blank lines inside a stroke, long numbers, '+', 'e',
# a BREAK that is not a line of its own, ...) goes to parse_strokes, file by file: the same arrays
# and the same errors as one file at a time, only faster.
_EXACT_INT = 2 ** 53  # integers below this are exact in float64
_POW10 = 10.0 ** np.arange(23)  # exact powers of ten
_BREAK = np.frombuffer(b"BREAK", np.uint8)
_FIVE = np.arange(5)
# newlines become commas, a BREAK line becomes the number 0 (told apart by where it is), points go
_TO_INTS = (bytes.maketrans(b"\nB", b",0"), b".REAK")
_MIN_FAST_FILES = 2  # a file alone: parse_strokes is as quick (numpy calls cost more than they save)


def _fromstring_raises() -> bool:
    """Whether np.fromstring raises on unparsable text (numpy 2) rather than warning (older numpy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            np.fromstring(b"1,x", dtype=np.int64, sep=",")  # noqa: NPY201
        except ValueError:
            return True
        except DeprecationWarning:
            return False
    return False


_FROMSTRING_RAISES = _fromstring_raises()


def _int_tokens(t: bytes) -> np.ndarray | None:
    """Comma-separated integers, parsed in C; None when np.fromstring cannot read them all."""
    if _FROMSTRING_RAISES:
        try:
            return np.fromstring(t, dtype=np.int64, sep=",")  # noqa: NPY201
        except ValueError:
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(t, dtype=np.int64, sep=",")  # noqa: NPY201
        except (ValueError, DeprecationWarning):
            return None


def _stroke_body(data: bytes) -> bytes | None:
    """The bytes after a file's START line (CRLF made LF, outer newlines stripped), or None.

    None: no START line, or a CR that does not end a line (parse_strokes then decides).
    """
    stripped = data.lstrip()
    nl = stripped.find(b"\n")
    if nl < 0 or stripped[:nl].strip() != b"START":
        return None
    body = stripped[nl + 1:]
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
        if b"\r" in body:
            return None
    return body.strip(b"\n")


def _whole_break_lines(a: np.ndarray, letters: np.ndarray, letter_bytes: np.ndarray) -> bool:
    """Whether the letter bytes ``letter_bytes``, at offsets ``letters`` of ``a``, are whole BREAK lines."""
    b = letters[::5]  # where each BREAK starts, if these are BREAK lines
    return not (len(letters) % 5 or (letter_bytes.reshape(-1, 5) != _BREAK).any()
                or (letters.reshape(-1, 5) - b[:, None] != _FIVE).any()
                or (a[b - 1] != 10).any() or (a[b + 5] != 10).any())  # b[0] == 0 wraps to the final newline


def _fast_stroke_rows(bodies: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray] | None:
    """Stroke-file bodies -> (float32 ``[N, 3]`` rows ``(x, y, end_of_stroke)`` of all, rows per file).

    None when any body holds something this parser does not handle for certain; then
    :func:`parse_strokes` decides (and names the line that is wrong, if one is).
    Accepts a subset of what ``parse_strokes``' fast path accepts, with the same result.
    """
    if not bodies or not all(bodies):
        return None
    s = b"\n".join([*bodies, b""])
    a = np.frombuffer(s, np.uint8)
    nd = np.flatnonzero((a - np.uint8(48)) > 9)  # every byte that is not a digit, in order
    cn = a[nd]
    is_let = cn > 57  # bytes above '9': only those of BREAK lines are for this parser
    letters = nd[is_let]
    if len(letters) and not _whole_break_lines(a, letters, cn[is_let]):
        return None  # nan, inf, 1e5, a second START, non-ASCII, BREAK inside a line ...
    is_minus = cn == 45
    minus = nd[is_minus]
    low = ~(is_let | is_minus)
    ev = nd[low]  # separators (, and newline) and decimal points, in order
    c = cn[low]
    is_sep = (c == 44) | (c == 10)
    is_dot = c == 46
    if not (is_sep | is_dot).all():
        return None  # a space, a tab, '+', '/' ...
    dots = np.flatnonzero(is_dot)
    n_tok = len(ev) - len(dots)  # every number (and BREAK) ends with exactly one separator
    if len(minus):
        before, after = a[minus - 1], a[minus + 1]  # minus[0] == 0 wraps to the final newline
        if not (((before == 44) | (before == 10)) & ((after - 48) < 10)).all():
            return None  # a minus sign only starts a number, right before a digit
    if len(dots):
        if dots[-1] + 1 >= len(ev) or not is_sep[dots + 1].all():
            return None  # the event after a point must be the separator ending its number
        k = ev[dots + 1] - ev[dots] - 1  # digits after the point
        if int(k.max()) >= len(_POW10):
            return None
        tok_of_dot = dots - np.arange(len(dots))  # separators before the point = its number's index
    ints = _int_tokens(s.translate(*_TO_INTS))
    if ints is None or len(ints) != n_tok:
        return None  # e.g. an empty field (a blank line, ",,") or a lone point
    if (ints >= _EXACT_INT).any() or (ints <= -_EXACT_INT).any():
        return None  # too many digits to be exact (or to fit: an overflow saturates)
    vals = ints.astype(np.float64)
    if len(dots):
        vals[tok_of_dot] /= _POW10[k]  # m / 10**k: the correctly rounded value of the decimal

    def tok_at(pos: np.ndarray) -> np.ndarray:
        """The index of the number at byte ``pos``: the separators before it (events less points)."""
        e = np.searchsorted(ev, pos)
        return e - np.searchsorted(dots, e)

    zm = minus[a[minus + 1] == 48]  # "-0...": a negative zero keeps its sign, as strtod gives it
    if len(zm):
        tok = tok_at(zm)
        vals[tok[ints[tok] == 0]] = -0.0
    offsets = np.cumsum([0] + [len(b) + 1 for b in bodies[:-1]])
    file_start = tok_at(offsets)  # first token of every file
    brk = tok_at(letters[::5])  # the BREAK lines (their B)
    is_brk = np.zeros(n_tok, bool)
    is_brk[brk] = True
    # segments: the numbers between BREAKs and file ends; each must hold whole (x, y, t) rows
    seg_start = np.sort(np.concatenate([file_start, brk + 1]))
    seg_end = np.sort(np.concatenate([file_start[1:], brk, [n_tok]]))
    seg_len = seg_end - seg_start
    if (seg_len % 3).any():
        return None
    rows_seg = seg_len // 3
    file_of_seg = np.searchsorted(file_start, seg_start, side="right") - 1
    lens = np.bincount(file_of_seg, weights=rows_seg, minlength=len(bodies)).astype(np.int64)
    if not lens.all():
        return None  # a file without points: parse_strokes says so
    xyt = (vals[~is_brk] if len(brk) else vals).reshape(-1, 3)
    out = np.zeros((len(xyt), 3), np.float32)
    out[:, :2] = xyt[:, :2]
    out[np.cumsum(rows_seg)[rows_seg > 0] - 1, 2] = 1.0
    return out, lens


def parse_stroke_files(datas: Sequence[bytes], names: Sequence[str], decode=None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Many Omniglot stroke files (their bytes) -> (float32 ``[N, 3]`` rows of all, rows per file).

    File ``i`` is ``rows[sum(lens[:i]):sum(lens[:i + 1])]``, equal to
    ``strokes_to_array(parse_strokes(text, name))``, bit for bit; a malformed file raises
    the same error, and the first malformed file (in order) is the one named.
    ``decode(data, name)`` makes the text parse_strokes reads (default: UTF-8, an error if
    it is not). Runs of files the vectorised parser declines are halved until it takes
    them; what is left (single files, and files it never takes) goes to parse_strokes.
    """
    decode = decode or _decode
    bodies = [_stroke_body(d) for d in datas]
    out: list[tuple[np.ndarray, np.ndarray]] = []

    def parse(lo: int, hi: int) -> None:  # files lo..hi-1, in order
        if hi - lo >= _MIN_FAST_FILES:
            fast = _fast_stroke_rows(bodies[lo:hi])
            if fast is not None:
                out.append(fast)
                return
            if hi - lo >= 2 * _MIN_FAST_FILES:
                mid = (lo + hi) // 2
                parse(lo, mid)
                parse(mid, hi)
                return
        for i in range(lo, hi):
            a = strokes_to_array(parse_strokes(decode(datas[i], names[i]), names[i]))
            out.append((a, np.array([len(a)], np.int64)))

    parse(0, len(datas))
    if len(out) == 1:
        return out[0]
    if not out:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    return np.concatenate([r for r, _ in out]), np.concatenate([n for _, n in out])


def read_strokes(path: str | Path, name: str | None = None) -> np.ndarray:
    """An Omniglot stroke file -> float32 ``[T, 3]`` ``(x, y, end_of_stroke)``."""
    path = Path(path)
    name = name or str(path)
    return parse_stroke_files([_read_bytes(path, name)], [name])[0]


def read_csv(path: str | Path, name: str | None = None) -> np.ndarray:
    """A CSV file (one row per step, one column per feature, optional header) -> float32 ``[T, F]``."""
    path = Path(path)
    name = name or str(path)
    lines = _read_text(path, name).splitlines()
    rows = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not rows:
        raise InputError(f"{name}: file is empty")
    first = [f.strip() for f in rows[0][1].split(",")]
    try:
        [float(f) for f in first]
    except ValueError:
        rows = rows[1:]  # a header line
        if not rows:
            raise InputError(f"{name}: CSV has a header but no data rows")
    width = len(first)
    body = "\n".join(ln for _, ln in rows)
    arr = _fast_floats(body)
    if arr is not None and arr.size == width * len(rows) and all(ln.count(",") == width - 1 for _, ln in rows):
        arr = arr.reshape(len(rows), width).astype(np.float32)
        if np.isnan(arr[-1]).all():  # NaN-padded (aeon-style unequal lengths): drop the padding rows
            arr = strip_nan_padding(arr, name)
            rows = rows[:len(arr)]
        if np.isfinite(arr).all():
            return arr
    for lineno, ln in rows:  # slow path: name the bad line
        _parse_row(ln, width, name, lineno, f"{width} comma-separated numbers")
    raise InputError(f"{name}: cannot parse as CSV numbers")  # pragma: no cover - slow path found nothing


def check_array(a: Any, name: str) -> np.ndarray:
    """Validate an in-memory sequence: numeric ``[T, F]`` (``[T]`` -> ``[T, 1]``), finite, T >= 1."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise InputError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(f"{name}: expected a sequence array of shape [T, F], got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name}: sequence is empty (shape {tuple(a.shape)})")
    check_points(a.shape[0], name)
    a = strip_nan_padding(a.astype(np.float32, copy=False), name)
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise InputError(f"{name}, row {row}: NaN or infinite value")
    return a


def strip_nan_padding(a: np.ndarray, name: str) -> np.ndarray:
    """``[T, F]`` without its trailing all-NaN rows: how aeon and UCR/UEA tables pad unequal lengths.

    Only whole rows at the end are padding; a NaN anywhere else is still an error
    (raised by the caller's finiteness check, naming the row).
    """
    nan_rows = np.isnan(a).all(1)
    if not nan_rows[-1]:
        return a
    keep = len(a) - int(np.argmin(nan_rows[::-1])) if not nan_rows.all() else 0
    if keep == 0:
        raise InputError(f"{name}: every row is NaN (an empty, padded sequence)")
    return a[:keep]


def read_npy(path: str | Path, name: str | None = None) -> np.ndarray:
    """A ``.npy`` array ``[T, F]`` -> float32; object (pickled) arrays are refused."""
    path = Path(path)
    name = name or str(path)
    data = read_file(path, name, SEQ_BYTES)  # size checked before reading, the read capped
    if not data:
        raise InputError(f"{name}: file is empty")
    if not data.startswith(b"\x93NUMPY"):  # np.load would take anything else for a pickle
        raise InputError(f"{name}: not a valid .npy file (no NUMPY header); save arrays with numpy.save")
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        msg = "it holds Python objects (refused: loading them would unpickle)" if "pickle" in str(exc) \
            else f"not a valid .npy file ({str(exc)[:80]})"
        raise InputError(f"{name}: {msg}") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{name}: not a valid .npy file ({str(exc)[:80]})") from None
    return check_array(a, name)


def load_sequence(item: InputItem | str | Path | np.ndarray) -> np.ndarray:
    """One input (an InputItem holding a path or an array, or a bare path/array) -> float32 ``[T, F]``."""
    if not isinstance(item, InputItem):
        item = InputItem(Path(item), str(item)) if isinstance(item, (str, Path)) else InputItem(item, "<array>")
    v = item.value
    if isinstance(v, Path):
        suf = v.suffix.lower()
        if suf == ".txt":
            return read_strokes(v, item.name)
        if suf == ".npy":
            return read_npy(v, item.name)
        if suf == ".csv":
            return read_csv(v, item.name)
        raise InputError(f"{item.name}: a sequence must be a {', '.join(SEQUENCE_SUFFIXES)} file, "
                         f"not {suf or 'a file without extension'}")
    if hasattr(v, "mode") and hasattr(v, "size") and hasattr(v, "getpixel"):
        raise InputError(f"{item.name}: an image cannot go into a sequence encoder or index; "
                         "pass a stroke file or a [T, F] array")
    return check_array(v, item.name)


def load_sequences(items: Sequence[InputItem]) -> list[np.ndarray]:
    """``[load_sequence(it) for it in items]``, with the Omniglot stroke files among them read together.

    The same arrays and, for bad inputs, the same error (the first bad input's), but the
    stroke files of a batch are parsed by one vectorised pass (:func:`parse_stroke_files`);
    their arrays are consecutive slices of one array.
    """
    out: list[Any] = [None] * len(items)
    txt: list[int] = []
    datas: list[bytes] = []
    try:
        for i, it in enumerate(items):
            v = it.value if isinstance(it, InputItem) else None
            if isinstance(v, Path) and v.suffix.lower() == ".txt":
                datas.append(_read_bytes(v, it.name))
                txt.append(i)
            else:
                out[i] = load_sequence(it)
    except Exception:  # noqa: BLE001 - one by one: fails at the same (first) bad input, the same way
        return [load_sequence(it) for it in items]
    if txt:
        rows, lens = parse_stroke_files(datas, [items[i].name for i in txt])
        ends = np.cumsum(lens)
        for i, e, n in zip(txt, ends.tolist(), lens.tolist()):
            out[i] = rows[e - n:e]
    return out


# ---------------------------------------------------------------------------------------------
# stroke preprocessing
# ---------------------------------------------------------------------------------------------
def stroke_features(a: np.ndarray, resample: float = 0.05, with_position: bool = True) -> np.ndarray:
    """``[T, 3]`` ``(x, y, end_of_stroke)`` -> pen-offset rows ``(dx, dy, pen_up[, x, y])``, vectorised.

    Steps: centre the bounding box and scale its longer side to 1; when
    ``resample > 0``, resample every stroke at arc-length spacing ``resample``
    (one ``np.interp`` over all strokes: queries never fall in the pen-up gaps);
    then take offsets. ``pen_up`` is 1 on the first point of every stroke after
    the first (the offset leading to it was travelled with the pen lifted); the
    first row's offset is the start point itself, relative to the centre.
    """
    return stroke_features_batch([np.asarray(a)], resample, with_position)[0]


def stroke_features_batch(arrays: Sequence[np.ndarray], resample: float = 0.05, with_position: bool = True
                          ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stroke_features` of many sequences at once: (rows of all of them, lengths).

    The same computation on the concatenation of every point of the batch: a fixed
    number of numpy calls per batch instead of per sequence, which is what keeps
    preprocessing small next to the RNN's forward pass.
    """
    lens = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
    starts = np.cumsum(lens) - lens
    widths = {np.shape(a)[1] for a in arrays}
    if len(widths) == 1 and widths.pop() > 2:  # all [T, 3]: one concatenation
        allrows = np.concatenate(arrays)
        pts = allrows[:, :2].astype(np.float64)
        eos = allrows[:, 2] > 0.5
    else:
        pts = np.concatenate([np.asarray(a)[:, :2] for a in arrays]).astype(np.float64)
        eos = np.zeros(len(pts), bool)
        for a, s0 in zip(arrays, starts):
            if a.shape[1] > 2:
                eos[s0:s0 + len(a)] = a[:, 2] > 0.5
    eos[starts + lens - 1] = True
    sid_pt = np.repeat(np.arange(len(arrays)), lens)
    lo, hi = np.minimum.reduceat(pts, starts, axis=0), np.maximum.reduceat(pts, starts, axis=0)
    scale = (hi - lo).max(1)
    scale[scale <= 1e-6] = 1.0
    pts -= np.repeat((lo + hi) / 2, lens, axis=0)  # = ((lo + hi) / 2)[sid_pt], without a gather
    pts /= np.repeat(scale, lens)[:, None]
    ends = np.flatnonzero(eos)
    firsts = np.empty_like(ends)
    firsts[0] = 0
    firsts[1:] = ends[:-1] + 1
    seq_of_stroke = sid_pt[ends]
    if resample > 0:
        d = np.diff(pts, axis=0)
        g = np.empty(len(pts))
        g[0] = 0.0
        np.cumsum(np.hypot(d[:, 0], d[:, 1]), out=g[1:])
        g0, length = g[firsts], g[ends] - g[firsts]
        n = np.where(length > 0, np.ceil(length / resample).astype(np.int64) + 1, 1)
        sid = np.repeat(np.arange(len(n)), n)
        firsts = np.cumsum(n) - n
        frac = (np.arange(int(n.sum())) - firsts[sid]) / np.maximum(n - 1, 1)[sid]
        q = g0[sid] + frac * length[sid]
        pts = np.stack([np.interp(q, g, pts[:, 0]), np.interp(q, g, pts[:, 1])], 1)
        sid_pt = seq_of_stroke[sid]
    new_lens = np.bincount(sid_pt, minlength=len(arrays))
    new_starts = np.cumsum(new_lens) - new_lens
    out = np.zeros((len(pts), 5 if with_position else 3), np.float32)
    out[1:, :2] = pts[1:] - pts[:-1]
    out[new_starts, :2] = pts[new_starts]  # each sequence's first offset is its start point
    pen = firsts[np.r_[False, seq_of_stroke[1:] == seq_of_stroke[:-1]]]  # strokes after a sequence's first
    out[pen, 2] = 1.0
    if with_position:
        out[:, 3:] = pts
    return out, new_lens


@dataclass(frozen=True)
class SequencePreprocess:
    """How a sequence encoder sees an input; a plain dict in the encoder file (and its fingerprint).

    ``kind="strokes"``: input ``[T, 3]`` ``(x, y, end_of_stroke)`` or ``[T, 2]`` (one
    stroke); output pen-offset rows ``(dx, dy, pen_up[, x, y])`` after centring,
    scaling the bounding box to 1 and, when ``resample > 0``, resampling every
    stroke at arc-length spacing ``resample``.
    ``kind="series"``: input ``[T, n_features]``; output ``(x - mean) / std`` per
    feature (statistics fitted on training data with :func:`fit_series_stats`).
    ``kind="ts"`` (time series for encoders that read any channel count, ``ts-gru``):
    input ``[T, C]`` with any ``C`` (``n_features=0``) or exactly ``n_features``; each
    series is standardised on its own (one mean and std over its values: no
    statistics of a training set, so it transfers to new data sets) and resampled
    by linear interpolation to ``steps`` time steps; with ``standardise=False`` it is
    only resampled (``ts-rocket`` standardises itself and keeps the series' absolute
    level and scale as features).
    ``max_length``: the most steps an input may have *after* preprocessing; longer
    inputs are refused with an error (never silently truncated).
    """

    kind: str = "strokes"
    n_features: int = 3
    resample: float = 0.05
    with_position: bool = True
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    max_length: int = DEFAULT_MAX_LENGTH
    steps: int = 0  # kind "ts": the fixed length every series is resampled to
    standardise: bool = True  # kind "ts": standardise each series as a whole before resampling

    def __post_init__(self) -> None:
        if self.kind not in ("strokes", "series", "ts"):
            raise ValueError(f"unknown sequence kind {self.kind!r}; choose strokes, series or ts")
        if self.kind == "ts" and self.steps < 2:
            raise ValueError("kind 'ts' needs steps >= 2 (the length series are resampled to)")
        if self.max_length < 1 or self.resample < 0:
            raise ValueError("max_length must be >= 1 and resample >= 0")
        if self.kind == "series" and self.mean and (len(self.mean) != self.n_features
                                                    or len(self.std) != self.n_features):
            raise ValueError("mean and std need one value per feature")

    @property
    def in_features(self) -> int:
        """Features per step that the RNN reads."""
        if self.kind == "strokes":
            return 5 if self.with_position else 3
        return self.n_features

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = [float(v) for v in self.mean], [float(v) for v in self.std]
        if self.kind != "ts":
            del d["steps"]  # files written before the ts kind keep their dict (and fingerprint)
        if self.standardise:
            del d["standardise"]  # likewise for files written before the option
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SequencePreprocess":
        d = dict(d)
        d["mean"], d["std"] = tuple(d.get("mean", ())), tuple(d.get("std", ()))
        return cls(**d)

    def check_input(self, a: np.ndarray, name: str) -> np.ndarray:
        check_points(len(a), name)  # before resampling, which costs memory per point
        if self.kind == "strokes":
            if a.shape[1] not in (2, 3):
                raise InputError(f"{name}: a stroke encoder reads [T, 3] (x, y, end_of_stroke) or [T, 2] "
                                 f"arrays, got {a.shape[1]} features")
        elif self.kind == "ts":
            if self.n_features and a.shape[1] != self.n_features:
                raise InputError(f"{name}: this encoder reads {self.n_features} channel(s), got {a.shape[1]}")
        elif a.shape[1] != self.n_features:
            raise InputError(f"{name}: this encoder reads {self.n_features} features per step, got {a.shape[1]}")
        return a

    def apply(self, a: np.ndarray, name: str = "<sequence>", strokes: list[np.ndarray] | None = None
              ) -> np.ndarray:
        """Raw ``[T, F]`` -> float32 ``[T', in_features]``; raises InputError past ``max_length``."""
        if strokes is None:
            a = self.check_input(a, name)
        else:
            check_points(sum(len(s) for s in strokes), name)
        if self.kind == "strokes":
            raw = strokes_to_array(strokes) if strokes is not None else a
            out = stroke_features(raw, self.resample, self.with_position)
        elif self.kind == "ts":
            out = standardise_resample(a, self.steps, standardise=self.standardise)
        else:
            out = a.astype(np.float32)
            if self.mean:
                out = (out - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        self._check_length(len(out), name)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _check_length(self, n: int, name: str) -> None:
        if n > self.max_length:
            raise InputError(f"{name}: sequence has {n} steps after preprocessing, more than the "
                             f"encoder's max_length {self.max_length}; shorten or downsample it, or raise "
                             "max_length (SequencePreprocess(max_length=...))")

    def apply_batch(self, arrays: Sequence[np.ndarray], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Many raw sequences -> (all preprocessed rows concatenated, lengths); same result as ``apply``."""
        arrays = [self.check_input(a, nm) for a, nm in zip(arrays, names)]
        if self.kind == "strokes":
            rows, lens = stroke_features_batch(arrays, self.resample, self.with_position)
        elif self.kind == "ts":
            check_same_channels(arrays, names)
            rows = np.concatenate([standardise_resample(a, self.steps, standardise=self.standardise)
                                   for a in arrays])
            lens = np.full(len(arrays), self.steps, np.int64)
        else:
            rows = np.concatenate(arrays).astype(np.float32)
            if self.mean:
                rows = (rows - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
            lens = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
        for n, nm in zip(lens, names):
            self._check_length(int(n), nm)
        return rows, lens


def check_same_channels(arrays: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Raise one InputError naming the first series whose channel count differs from the first one's."""
    if not len(arrays):
        return
    c0 = arrays[0].shape[1]
    for a, nm in zip(arrays, names):
        if a.shape[1] != c0:
            raise InputError(f"{nm}: {a.shape[1]} channel(s), but {names[0]} has {c0}; series that are "
                             "embedded or compared together need the same channels")


def standardise_resample(a: np.ndarray, steps: int, eps: float = 1e-6, standardise: bool = True) -> np.ndarray:
    """``[T, C]`` -> float32 ``[steps, C]``: standardised as a whole (unless not ``standardise``), then
    linearly resampled.

    One mean and one standard deviation over all values of the series, so the
    channels keep their levels and scales relative to each other (the encoder
    z-normalises each channel itself and keeps those as two numbers). A constant
    series becomes zeros; a series of one step is repeated.
    """
    a = np.asarray(a, np.float64)
    if standardise:
        sd = float(a.std())
        z = (a - a.mean()) / (sd if sd >= eps else 1.0)
    else:
        z = a
    if len(z) == 1:
        return np.repeat(z, steps, 0).astype(np.float32)
    src = np.linspace(0.0, len(z) - 1.0, steps)
    lo = np.minimum(np.floor(src).astype(np.int64), len(z) - 2)
    w = (src - lo)[:, None]
    return ((1 - w) * z[lo] + w * z[lo + 1]).astype(np.float32)


def fit_series_stats(sequences: Sequence[np.ndarray], eps: float = 1e-6) -> tuple[tuple[float, ...],
                                                                                  tuple[float, ...]]:
    """Per-feature mean and std over all steps of all training sequences (stored with the encoder)."""
    allx = np.concatenate([np.asarray(s, np.float64) for s in sequences])
    mean, std = allx.mean(0), allx.std(0)
    std = np.where(std < eps, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# ---------------------------------------------------------------------------------------------
# augmentation (training only)
# ---------------------------------------------------------------------------------------------
@dataclass
class SequenceAugment:
    """Random, label-preserving changes to one raw sequence (seeded by the caller's generator).

    For strokes: a small affine warp of the trajectory (rotation, shear, anisotropic
    scale), Gaussian jitter of every point (relative to the character size), and
    time-stretching as a random change of the resampling density. Optional, off by
    default: reversing a stroke's direction or reordering strokes (drawers differ).
    For series: time-stretching by linear interpolation, jitter, and a per-feature
    random scale.
    """

    max_rotate: float = 10.0  # degrees
    max_shear: float = 0.15
    scale_range: tuple[float, float] = (0.85, 1.15)
    jitter: float = 0.01  # std, fraction of the character size / of a feature's std
    stretch_range: tuple[float, float] = (0.8, 1.25)
    reverse_prob: float = 0.0
    shuffle_prob: float = 0.0

    def strokes(self, strokes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        ang = np.deg2rad(rng.uniform(-self.max_rotate, self.max_rotate))
        sh = rng.uniform(-self.max_shear, self.max_shear)
        sx, sy = rng.uniform(*self.scale_range, size=2)
        c, s = np.cos(ang), np.sin(ang)
        m = np.array([[c, -s], [s, c]]) @ np.array([[1, sh], [0, 1]]) @ np.diag([sx, sy])
        allp = np.concatenate(strokes)
        size = float(np.ptp(allp, 0).max()) or 1.0
        out = []
        for st in strokes:
            p = st[:, :2] @ m.T.astype(np.float32)
            if self.jitter:
                p = p + rng.normal(0, self.jitter * size, p.shape).astype(np.float32)
            if self.reverse_prob and rng.random() < self.reverse_prob:
                p = p[::-1]
            out.append(p.astype(np.float32))
        if self.shuffle_prob and len(out) > 1 and rng.random() < self.shuffle_prob:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def stretch(self, rng: np.random.Generator) -> float:
        """A factor for the resampling step (time-stretch of a resampled trajectory)."""
        lo, hi = self.stretch_range
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    def series(self, a: np.ndarray, std: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        f = self.stretch(rng)
        t = len(a)
        n = max(2, int(round(t * f)))
        src = np.linspace(0, t - 1, n)
        out = np.stack([np.interp(src, np.arange(t), a[:, j]) for j in range(a.shape[1])], 1)
        out = out * rng.uniform(*self.scale_range, size=(1, a.shape[1]))
        if self.jitter:
            sd = std if std is not None else np.maximum(a.std(0), 1e-6)
            out = out + rng.normal(0, 1, out.shape) * self.jitter * np.asarray(sd)
        return out.astype(np.float32)


def augment_and_preprocess(raw: np.ndarray, pre: SequencePreprocess, aug: SequenceAugment | None,
                           rng: np.random.Generator) -> np.ndarray:
    """One training view: augment the raw sequence, then preprocess it as the encoder will."""
    if aug is None:
        return pre.apply(raw)
    if pre.kind == "strokes":
        ss = aug.strokes(array_to_strokes(raw), rng)
        if pre.resample > 0:
            p2 = SequencePreprocess(**{**pre.to_dict(), "mean": (), "std": (),
                                       "resample": pre.resample * aug.stretch(rng),
                                       "max_length": 10 ** 9})
            return p2.apply(raw, strokes=ss)
        return SequencePreprocess(**{**pre.to_dict(), "mean": (), "std": (), "max_length": 10 ** 9}
                                  ).apply(raw, strokes=ss)
    std = np.asarray(pre.std) if pre.std else None
    return SequencePreprocess(**{**pre.to_dict(), "max_length": 10 ** 9}).apply(aug.series(raw, std, rng))


# ---------------------------------------------------------------------------------------------
# rendering (strokes -> image, for an image encoder and for fusion)
# ---------------------------------------------------------------------------------------------
OMNIGLOT_CANVAS = 105


def render_strokes(raw: np.ndarray, canvas: int = OMNIGLOT_CANVAS, width: float = 5.0,
                   margin: float = 0.1):
    """Draw a stroke array ``[T, 3]`` as a PIL image (black ink on white, like Omniglot's PNGs).

    Omniglot stroke coordinates are in the 105-pixel image frame with y pointing
    up (negative rows); those are drawn where they were written. Any other
    trajectory is centred and scaled to fill the canvas less ``margin``.
    """
    from PIL import Image, ImageDraw

    strokes = array_to_strokes(raw)
    allp = np.concatenate(strokes)
    xs, ys = allp[:, 0], -allp[:, 1]
    if xs.min() >= 0 and xs.max() <= canvas and ys.min() >= 0 and ys.max() <= canvas:
        tr = lambda p: np.stack([p[:, 0], -p[:, 1]], 1)  # noqa: E731
    else:
        lo = np.array([xs.min(), ys.min()])
        span = float(max(xs.max() - xs.min(), ys.max() - ys.min())) or 1.0
        k = canvas * (1 - 2 * margin) / span
        off = (canvas - k * np.array([xs.max() - xs.min(), ys.max() - ys.min()])) / 2
        tr = lambda p: (np.stack([p[:, 0], -p[:, 1]], 1) - lo) * k + off  # noqa: E731
    im = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(im)
    w = max(1, int(round(width)))
    for st in strokes:
        q = tr(st.astype(np.float64))
        if len(q) == 1:
            x, y = q[0]
            draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=0)
        else:
            draw.line(q.ravel().tolist(), fill=0, width=w)
    return im
