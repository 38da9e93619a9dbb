"""Resource limits for everything that enters fewshot: files, zip entries, arrays.

One place, so every entry point (``add``, ``classify``, ``search``, ``embed``,
``evaluate``, the dataset loaders, in-memory arrays) refuses the same oversized
input the same way: an :class:`~fewshot.errors.InputError` naming the input,
raised from a size known *before* reading (``stat``, the zip directory, an
array's shape), so memory stays bounded whatever the input claims to be.

Each limit is read from its environment variable at the moment it is checked,
so a user (or a test) can raise or lower it without code. The defaults are far
above real inputs (an Omniglot PNG is 1 kB; a phone photo 5 MB and 12 Mpixels;
an Omniglot stroke file 2 kB and 200 points).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from fewshot.errors import InputError

LIMITS = {  # env var: (default, what it bounds)
    "FEWSHOT_MAX_IMAGE_BYTES": (256 * 2**20, "bytes of one image file or zip entry"),
    "FEWSHOT_MAX_PIXELS": (64_000_000, "pixels of one image (width x height), decoded or in memory"),
    "FEWSHOT_MAX_SEQUENCE_BYTES": (16 * 2**20, "bytes of one sequence file (.txt, .csv, .npy) or zip entry"),
    "FEWSHOT_MAX_SEQUENCE_POINTS": (200_000, "points (rows) of one sequence, before resampling"),
    "FEWSHOT_MAX_TEXT_CHARS": (10_000, "characters of one text example or query"),
    "FEWSHOT_MAX_TEXT_FILE_BYTES": (64 * 2**20, "bytes of one text file (.txt, .csv, .tsv, .jsonl) or stdin"),
}


def limit(var: str) -> int:
    """The current value of limit ``var`` (its environment variable, else the default)."""
    default = LIMITS[var][0]
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(f"{var}={raw!r} is not a number; unset it or give a size such as {default}") from None
    if value < 1:
        raise InputError(f"{var}={raw!r} must be at least 1")
    return value


def _too_big(name: str, size: int, var: str, unit: str = "bytes") -> InputError:
    return InputError(f"{name}: {size:,} {unit}, more than the limit of {limit(var):,} "
                      f"(raise {var} if this input is genuine)")


def check_size(size: int, name: str, var: str, unit: str = "bytes") -> None:
    """Refuse ``size`` (bytes, pixels or points of input ``name``) above limit ``var``."""
    if size > limit(var):
        raise _too_big(name, size, var, unit)


def read_file(path: str | os.PathLike, name: str, var: str = "FEWSHOT_MAX_IMAGE_BYTES") -> bytes:
    """A file's bytes, its size checked by ``fstat`` before anything is read.

    Reads at most limit + 1 bytes, so a file that grows (or lies, like a pipe)
    cannot exceed the limit either.
    """
    cap = limit(var)
    try:
        with open(path, "rb") as fh:
            check_size(os.fstat(fh.fileno()).st_size, name, var)
            data = fh.read(cap + 1)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
    check_size(len(data), name, var)
    return data


def read_zip_entry(zf: zipfile.ZipFile, entry: str, archive: str | os.PathLike,
                   var: str = "FEWSHOT_MAX_IMAGE_BYTES") -> bytes:
    """One zip entry's bytes; its declared size is checked from the zip directory first.

    A 3 MB zip can declare a 3 GB entry: the directory says so before a byte is
    inflated. The read is capped as well, so an entry that lies about its size
    stops at the limit instead of filling memory.
    """
    name = f"{Path(archive).name}:{entry}"
    try:
        info = zf.getinfo(entry)
        check_size(info.file_size, name, var)
        with zf.open(info) as fh:
            data = fh.read(limit(var) + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, KeyError) as exc:
        raise InputError(f"{name}: cannot read this zip entry ({exc})") from None
    check_size(len(data), name, var)
    return data


def check_pixels(width: int, height: int, name: str) -> None:
    """Refuse an image (file or in memory) of more than FEWSHOT_MAX_PIXELS pixels."""
    n = int(width) * int(height)
    if n > limit("FEWSHOT_MAX_PIXELS"):
        raise InputError(f"{name}: image is {width}x{height} = {n:,} pixels, more than the limit of "
                         f"{limit('FEWSHOT_MAX_PIXELS'):,} (refused as a possible decompression bomb; "
                         "raise FEWSHOT_MAX_PIXELS if this image is genuine)")


def check_points(n: int, name: str) -> None:
    """Refuse a sequence of more than FEWSHOT_MAX_SEQUENCE_POINTS points, before any resampling."""
    check_size(n, name, "FEWSHOT_MAX_SEQUENCE_POINTS", unit="points")
