"""One entry point for datasets: ``load_dataset(spec)`` where spec is a name or a path.

* ``"digits"``: scikit-learn's bundled 8x8 digits (no download);
* an Omniglot zip (``images_background.zip``) or extracted Omniglot folder
  (``<Alphabet>/<character>/<drawing>.png``, optionally under a split folder);
* any other folder: one class per sub-folder (``root/<class>/<image>``).

The layout of a folder is detected from where its images sit (see
:func:`detect_layout`); pass ``layout=`` to override. Every loader returns an
:class:`~fewshot.data.ImageDataset` of uint8 images, ink-high grayscale unless
``rgb=True`` is asked of a folder dataset.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from fewshot.data.dataset import ImageDataset
from fewshot.errors import InputError

NAMED = ("digits",)
LAYOUTS = ("auto", "omniglot", "folders")


def detect_layout(root: str | os.PathLike) -> str:
    """``"omniglot"`` or ``"folders"`` for a directory, from the depth of its images.

    Images two levels down (``root/<class>/<image>``) make a class-per-folder
    set; PNGs only three or more levels down (``root/<Alphabet>/<character>/<png>``,
    perhaps under ``images_background/``) make an Omniglot tree.
    """
    from fewshot.data.folders import is_junk
    from fewshot.inputs import IMAGE_SUFFIXES

    root = Path(root)
    depths: set[int] = set()
    all_png = True
    for f in root.rglob("*"):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not is_junk(f, root):
            depths.add(len(f.relative_to(root).parts))
            all_png = all_png and f.suffix.lower() == ".png"
    if not depths:
        raise InputError(f"{root} holds no images; expected one sub-folder per class "
                         "(root/<class>/<image>) or an Omniglot tree (<Alphabet>/<character>/<png>)")
    if min(depths) == 1:
        raise InputError(f"{root} has images directly inside it; put each class's images in its own "
                         "sub-folder (root/<class>/<image>)")
    return "omniglot" if min(depths) >= 3 and all_png else "folders"


def _is_omniglot_zip(path: Path) -> bool:
    from fewshot.data.omniglot import _parse_entry

    try:
        with zipfile.ZipFile(path) as zf:
            return any(_parse_entry(n) for n in zf.namelist())
    except zipfile.BadZipFile:
        raise InputError(f"{path} is not a readable zip file") from None


def load_dataset(spec: str | os.PathLike, size: int = 28, rgb: bool = False,
                 alphabets: list[str] | None = None, exclude_alphabets: list[str] | None = None,
                 layout: str = "auto") -> ImageDataset:
    """Load a dataset by name or path into memory (see the module docstring for what is accepted).

    ``alphabets`` / ``exclude_alphabets`` restrict an Omniglot dataset to (or
    remove) whole alphabets, e.g. the alphabets held out from an encoder's training.
    """
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if size < 1:
        raise InputError("size must be >= 1")
    key = os.fspath(spec)
    path = Path(key).expanduser()
    if key in NAMED and not path.exists():
        _no_alphabets(key, alphabets, exclude_alphabets)
        from fewshot.data.digits import load_digits

        return load_digits(size=size)
    if not path.exists():
        raise InputError(f"dataset not found: {key} (give a folder, an Omniglot zip, or one of: "
                         f"{', '.join(NAMED)})")
    if path.is_file():
        if path.suffix.lower() != ".zip" or not _is_omniglot_zip(path):
            raise InputError(f"{path}: a dataset file must be an Omniglot zip (<Alphabet>/<character>/<png>); "
                             "for other images give a folder with one sub-folder per class")
        kind = "omniglot"
    else:
        kind = detect_layout(path) if layout == "auto" else layout
    if kind == "omniglot":
        from fewshot.data.omniglot import load_omniglot

        if rgb:
            raise InputError("Omniglot is loaded as grayscale; rgb=True applies to folder datasets")
        try:
            return load_omniglot(path, size=size, alphabets=alphabets, exclude_alphabets=exclude_alphabets)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    _no_alphabets(str(path), alphabets, exclude_alphabets)
    from fewshot.data.folders import load_folder_dataset

    return load_folder_dataset(path, size=size, rgb=rgb)


def _no_alphabets(name: str, alphabets, exclude_alphabets) -> None:
    if alphabets or exclude_alphabets:
        raise InputError(f"alphabets apply to Omniglot data only, and {name} is not Omniglot")


def describe_dataset(ds: ImageDataset) -> str:
    """``"3820 images, 191 classes, 5 groups"``: for summaries."""
    groups = len(set(ds.groups))
    return f"{len(ds)} images, {len(ds.classes)} classes" + (f", {groups} groups" if groups > 1 else "")
