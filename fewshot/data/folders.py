"""Class-per-folder image trees: ``root/<class>/<image>``, the layout most people already have,
as a folder or as a zip of one (``cifar10_train.zip``: ``cifar10/train/<class>/<NNNN>.jpg``).

Every image goes through :func:`fewshot.inputs.to_pil` (so 16-bit, CMYK, alpha and
decompression bombs are handled as everywhere else) and then through one fixed,
encoder-independent conversion: :func:`to_ink_high` (grayscale, padded square,
``size`` x ``size``, ink bright on a dark background, exactly as Omniglot is
loaded) or :func:`to_rgb`. The encoder's own preprocessing runs later, at
embedding time, so one loaded dataset serves any encoder.
"""
from __future__ import annotations

import os
import posixpath
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from fewshot.data.dataset import LabelledSet
from fewshot.errors import InputError
from fewshot.limits import check_size
from fewshot.inputs import IMAGE_SUFFIXES, InputItem, decode_image_bytes, to_pil


def is_junk(path: Path, root: Path) -> bool:
    """Hidden files and folders (``.DS_Store``, ``.git``) and macOS resource forks (``__MACOSX``)."""
    return any(p.startswith(".") or p.startswith("__MACOSX") for p in path.relative_to(root).parts)


def _square(im: Image.Image) -> Image.Image:
    """Pad to a square with the corner colour (the background), keeping the drawing undistorted."""
    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    return ImageOps.pad(im, (side, side), color=im.getpixel((0, 0)), centering=(0.5, 0.5))


def _resize(im: Image.Image, size: int) -> Image.Image:
    if im.size == (size, size):
        return im
    # BOX averages when shrinking (what Omniglot uses); bilinear when enlarging, so small
    # images are not blown up into blocks.
    shrink = im.size[0] >= size
    return im.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)


def to_ink_high(im: Image.Image, size: int = 28) -> np.ndarray:
    """uint8 [size, size]: grayscale, padded square, resized; inverted if the background is light.

    For Omniglot's 105x105 black-on-white PNGs this is exactly what
    :func:`fewshot.data.load_omniglot` does (BOX-resize, then 255 - x).
    """
    a = np.asarray(_resize(_square(im.convert("L")), size), dtype=np.uint8)
    return 255 - a if a.mean() > 127.5 else a


def to_rgb(im: Image.Image, size: int = 28) -> np.ndarray:
    """uint8 [size, size, 3]: RGB, padded square with the corner colour, resized."""
    return np.asarray(_resize(_square(im.convert("RGB")), size), dtype=np.uint8)


def list_class_folders(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{class name: sorted image paths}`` for every sub-folder of ``root`` that holds images.

    Images may sit anywhere below their class folder; junk entries are skipped
    and class folders without images are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not is_junk(p, root)):
        files = sorted(f for f in sub.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not is_junk(f, root))
        if files:
            out[sub.name] = files
    if not out:
        raise InputError(f"{root} has no sub-folders with images; expected one sub-folder per class "
                         f"(root/<class>/<image>, image types {', '.join(IMAGE_SUFFIXES)})")
    return out


def _junk_entry(name: str) -> bool:
    return any(p.startswith(".") or p.startswith("__MACOSX") for p in name.split("/"))


def zip_image_entries(path: str | os.PathLike) -> list[zipfile.ZipInfo]:
    """The image entries of a zip (junk skipped), in name order; an unreadable zip is an InputError."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path} is not a readable zip file ({exc})") from None
    return sorted((i for i in infos if not i.is_dir() and not _junk_entry(i.filename)
                   and PurePosixPath(i.filename).suffix.lower() in IMAGE_SUFFIXES), key=lambda i: i.filename)


def zip_root(names: list[str]) -> str:
    """The folder of a zip that holds the class folders: the deepest folder above every image's folder.

    ``cifar10/train/<class>/<file>`` gives ``cifar10/train``; a zip whose images all
    sit in one folder has that folder as its only class.
    """
    parents = {posixpath.dirname(n) for n in names}
    root = posixpath.commonpath(sorted(parents)) if parents else ""
    return posixpath.dirname(root) if len(parents) == 1 else root


def list_zip_classes(path: str | os.PathLike) -> dict[str, list[zipfile.ZipInfo]]:
    """``{class name: image entries}`` of a class-per-folder zip (images anywhere below their class folder)."""
    entries = zip_image_entries(path)
    if not entries:
        raise InputError(f"{path} holds no images; expected one folder per class (<class>/<image>, image types "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    root = zip_root([e.filename for e in entries])
    out: dict[str, list[zipfile.ZipInfo]] = {}
    for e in entries:
        rel = PurePosixPath(e.filename).relative_to(root) if root else PurePosixPath(e.filename)
        if len(rel.parts) < 2:
            raise InputError(f"{path}: {e.filename} sits directly in {root or 'the top of the zip'}; put each "
                             "class's images in its own folder (<class>/<image>)")
        out.setdefault(rel.parts[0], []).append(e)
    return out


def _load_zip(path: Path, size: int, convert) -> tuple[list[np.ndarray], list[str], list[str]]:
    classes = list_zip_classes(path)
    arrays, labels, sources = [], [], []
    with zipfile.ZipFile(path) as zf:
        for c, entries in classes.items():
            for e in entries:
                name = f"{path}:{e.filename}"
                check_size(e.file_size, name, "FEWSHOT_MAX_IMAGE_BYTES")  # before inflating it
                try:
                    data = zf.read(e)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise InputError(f"{name}: cannot read it from the zip ({exc})") from None
                with decode_image_bytes(data, name) as im:
                    arrays.append(convert(to_pil(InputItem(im, name)), size))
                labels.append(c)
                sources.append(name)
    return arrays, labels, sources


def load_folder_dataset(root: str | os.PathLike, size: int = 28, rgb: bool = False) -> LabelledSet:
    """Load ``root/<class>/...`` (a folder, or a zip of one) into memory: one class per sub-folder, named after it.

    ``rgb=False`` (default) gives ink-high grayscale [n, size, size], the form the
    Omniglot encoders are trained on; ``rgb=True`` gives [n, size, size, 3] for
    ImageNet backbones. Groups are all ``"all"`` (no super-classes).
    """
    if size < 1:
        raise InputError("size must be >= 1")
    convert = to_rgb if rgb else to_ink_high
    if Path(root).is_file():
        arrays, labels, sources = _load_zip(Path(root), size, convert)
        return LabelledSet(np.stack(arrays), labels, ["all"] * len(labels), sources, "image")
    classes = list_class_folders(root)
    paths = [(c, f) for c, fs in classes.items() for f in fs]
    shape = (len(paths), size, size, 3) if rgb else (len(paths), size, size)
    images = np.empty(shape, dtype=np.uint8)
    for i, (_, f) in enumerate(paths):
        with to_pil(InputItem(f, str(f))) as im:
            images[i] = convert(im, size)
    return LabelledSet(images, [c for c, _ in paths], ["all"] * len(paths), [str(f) for _, f in paths], "image")
