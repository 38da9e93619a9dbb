"""Turn what users pass (paths, folders, PIL images, numpy arrays, torch tensors) into items.

Every entry point (library and CLI) goes through :func:`expand_inputs`, so all
accept the same things and fail the same way: an :class:`InputError` naming the
input and saying what is wrong, never a traceback from deep inside PIL.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fewshot.errors import InputError
from fewshot.limits import check_pixels, limit, read_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
SEQUENCE_SUFFIXES = (".txt", ".npy", ".csv")


@dataclass
class InputItem:
    """One example: ``value`` is a Path or an in-memory object; ``name`` is how we report it."""

    value: Any
    name: str

    @property
    def path(self) -> Path | None:
        return self.value if isinstance(self.value, Path) else None


def display_path(p: str | os.PathLike) -> str:
    """A path as text that can be printed, stored in SQLite and sent as JSON.

    File names are bytes on Linux; one that is not UTF-8 reaches Python with lone
    surrogates (surrogateescape), which cannot be encoded. Such bytes are shown as
    ``\\xff`` escapes; the file itself is still read through its real path.
    """
    from index.validation import escape_surrogates

    return escape_surrogates(os.fspath(p))


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or type(x).__module__.startswith("torch")


def expand_inputs(inputs: Any, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[InputItem]:
    """Flatten inputs to items; a folder expands to its files with ``suffixes`` (sorted, recursive).

    A single path, image or array counts as one input; a list or tuple as many. A
    4-D array/tensor (or 3-D with a channel-less stack) is *not* split: pass a list.
    """
    if isinstance(inputs, (str, os.PathLike, Image.Image)) or _is_array(inputs):
        inputs = [inputs]
    items: list[InputItem] = []
    for i, x in enumerate(inputs):
        if isinstance(x, (str, os.PathLike)):
            p = Path(x)
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
                               and not any(part.startswith(".") for part in f.relative_to(p).parts))
                if not files:
                    raise InputError(f"folder {display_path(p)} holds no files of type {', '.join(suffixes)}")
                items.extend(InputItem(f, display_path(f)) for f in files)
            elif not p.exists():
                raise InputError(f"file not found: {display_path(p)}")
            elif not p.is_file():
                raise InputError(f"not a regular file: {display_path(p)}")
            else:
                items.append(InputItem(p, display_path(p)))
        elif isinstance(x, Image.Image) or _is_array(x):
            items.append(InputItem(x, f"<{type(x).__name__} #{i}>"))
        elif isinstance(x, InputItem):  # already an item (named by its caller: `fewshot serve`'s uploads)
            items.append(x)
        else:
            raise InputError(f"unsupported input #{i} of type {type(x).__name__}: "
                             "pass file paths, folders, PIL images, numpy arrays or torch tensors")
    return items


@dataclass
class ClassFolders:
    """What ``root/<class>/...`` holds: files per class (folder name) and notices for the user."""

    classes: dict[str, list[Path]]
    notices: list[str] = field(default_factory=list)


def some_names(names: list[str], n: int = 3) -> str:
    """The first ``n`` names and how many more: a notice stays one short line."""
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def scan_class_folders(root: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> ClassFolders:
    """One class per sub-folder of ``root``, named after it, with every file of ``suffixes`` below it.

    Nothing is silent: empty class folders are skipped, files in nested
    sub-folders join their top class folder, and symbolic links are followed,
    each with a notice (hidden files and folders are ignored, as everywhere).
    Only a root with no non-empty class folder is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"not a folder: {display_path(root)}")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise InputError(f"{display_path(root)} has no sub-folders; expected one sub-folder per class")
    classes, empty, nested, links = {}, [], [], []
    for sub in subs:
        files = sorted(f for f in sub.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
                       and not any(part.startswith(".") for part in f.relative_to(sub).parts))
        if not files:
            empty.append(display_path(sub.name))
            continue
        classes[sub.name] = files
        nested += [display_path(f.relative_to(root)) for f in files if f.parent != sub]
        links += [display_path(f.relative_to(root)) for f in files if sub.is_symlink() or f.is_symlink()]
    if not classes:
        raise InputError(f"{display_path(root)}: every class folder is empty (no {', '.join(suffixes)} files)")
    notices = []
    if empty:
        notices.append(f"skipped {len(empty)} empty class folder(s) (no {', '.join(suffixes)} files): "
                       f"{some_names(empty)}")
    if nested:
        notices.append(f"{len(nested)} file(s) in nested sub-folders were added to their top class folder's "
                       f"label: {some_names(nested)}")
    if links:
        notices.append(f"{len(links)} file(s) are symbolic links (or in a linked class folder); added the files "
                       f"they point to: {some_names(links)}")
    return ClassFolders(classes, notices)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (streamed): the name its stored copy gets in ``examples/``."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {display_path(path)}: {exc.strerror or exc}") from None
    return h.hexdigest()


def _array_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """An image-like array to uint8 [h,w] or [h,w,c].

    uint8 passes unchanged; floats in [0, 1] are scaled by 255; any other range
    (0..16 digits, 16-bit, signed) is stretched linearly from its min..max to 0..255.
    """
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC (torch layout)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise InputError(f"{name}: expected an image array [H, W], [H, W, C] or [C, H, W], got shape {a.shape}")
    check_pixels(a.shape[1], a.shape[0], name)  # before the float64 copy below
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype.kind not in "fiu":
        raise InputError(f"{name}: image array has non-numeric dtype {a.dtype}")
    with np.errstate(all="ignore"):  # float16/float128 extremes: reported below, never a RuntimeWarning
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise InputError(f"{name}: image array contains NaN or inf")
        lo, hi = a.min(), a.max()
        if lo >= 0 and hi <= 1.0:
            a = a * 255.0
        else:
            a = (a - lo) / ((hi - lo) or 1.0) * 255.0
        if not np.isfinite(a).all():  # a range too wide for float64 (hi - lo overflowed)
            raise InputError(f"{name}: image array values span too wide a range to scale to 0..255")
        return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Composite transparent images over white, as they would be seen on a page."""
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def decode_image_bytes(data: bytes, name: str) -> Image.Image:
    """Decode and fully load an image; any failure becomes one clear InputError.

    The pixel count is checked from the header, before the pixels are decoded
    (FEWSHOT_MAX_PIXELS). PIL's warnings (EXIF, truncated chunks) are not shown:
    an image either loads or is refused with one message.
    """
    if not data:
        raise InputError(f"{name}: file is empty")
    max_pixels = limit("FEWSHOT_MAX_PIXELS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            Image.MAX_IMAGE_PIXELS = None  # open reads the header only; check_pixels names the size
            im = Image.open(io.BytesIO(data))
            Image.MAX_IMAGE_PIXELS = max_pixels  # PIL's own guard for what load() may find later
            check_pixels(*im.size, name)
            im.load()
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{name}: image is larger than the limit of {max_pixels:,} pixels (refused as "
                             "a possible decompression bomb; raise FEWSHOT_MAX_PIXELS if it is genuine)") from None
        except UnidentifiedImageError:
            raise InputError(f"{name}: not an image file fewshot can read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{name}: cannot decode image ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    return im


def to_pil(item: InputItem) -> Image.Image:
    """Load an item as a PIL image in mode ``L`` or ``RGB`` (16-bit, CMYK, alpha handled)."""
    v = item.value
    if isinstance(v, Path):
        im = decode_image_bytes(read_file(v, item.name), item.name)  # size checked before reading
    elif isinstance(v, Image.Image):
        check_pixels(*v.size, item.name)
        im = v
    else:
        arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        return Image.fromarray(_array_to_uint8(arr, item.name))
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_array_to_uint8(np.asarray(im), item.name))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return _flatten_alpha(im)
    if im.mode in ("L", "RGB"):
        return im
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, P, ...
