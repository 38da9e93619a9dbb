"""One entry point for datasets: ``load_dataset(spec)`` where spec is a name or a path.

* ``"digits"``: scikit-learn's bundled 8x8 digits (no download);
* an Omniglot zip (``images_background.zip``) or extracted Omniglot folder
  (``<Alphabet>/<character>/<drawing>.png``, optionally under a split folder);
* any other folder: one class per sub-folder (``root/<class>/<image>``).

The layout of a folder is detected from where its images sit (see
:func:`detect_layout`); pass ``layout=`` to override. Every loader returns an
:class:`~fewshot.data.LabelledSet` of uint8 images, ink-high grayscale unless
``rgb=True`` is asked of a folder dataset.

Sequence data (pen strokes, time series) has its own entry point,
:func:`load_sequence_dataset`: an Omniglot strokes zip or folder
(``strokes_background_small1.zip``), or a folder with one sub-folder per class
of ``.txt`` / ``.npy`` / ``.csv`` files. :func:`dataset_kind` tells the two
kinds apart without loading anything.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from fewshot.data.dataset import LabelledSet
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


def zip_layout(path: Path) -> str:
    """``"omniglot"`` or ``"folders"`` for a zip, by the rule :func:`detect_layout` applies to a folder:
    PNGs only, three or more levels below the folder that holds them all, make Omniglot."""
    from fewshot.data.folders import zip_image_entries, zip_root

    names = [e.filename for e in zip_image_entries(path)]
    if not names:
        raise InputError(f"{path} holds no images; expected one folder per class (<class>/<image>) "
                         "or an Omniglot zip (<Alphabet>/<character>/<png>)")
    root = zip_root(names)
    depth = min(len(Path(n).relative_to(root).parts) if root else len(Path(n).parts) for n in names)
    return "omniglot" if depth >= 3 and all(n.lower().endswith(".png") for n in names) else "folders"


def load_dataset(spec: str | os.PathLike, size: int = 28, rgb: bool = False,
                 alphabets: list[str] | None = None, exclude_alphabets: list[str] | None = None,
                 layout: str = "auto") -> LabelledSet:
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
        raise _not_found(key)
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise InputError(f"{path}: a dataset file must be a zip (an Omniglot zip, <Alphabet>/<character>/<png>, "
                             "or one folder per class, <class>/<image>); or give a folder")
        kind = zip_layout(path) if layout == "auto" else layout
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


def describe_dataset(ds) -> str:
    """``"3820 images, 191 classes, 5 groups"`` (``sequences`` for a sequence set): for summaries."""
    groups = len(set(ds.groups))
    what = f"{ds.kind}s"
    return f"{len(ds)} {what}, {len(ds.classes)} classes" + (f", {groups} groups" if groups > 1 else "")


# --- sequence data ------------------------------------------------------------------------
def _not_found(key: str) -> InputError:
    return InputError(f"dataset not found: {key} (give a folder, an Omniglot zip, or one of: "
                      f"{', '.join(NAMED)})")


def _count_kinds(root: Path) -> tuple[int, int, int]:
    """(image files, sequence files, sequence files that sit as Omniglot strokes do) below ``root``.

    The last counts ``.txt`` files three or more levels down (``<Alphabet>/<character>/<file>.txt``).
    """
    from fewshot.data.folders import is_junk
    from fewshot.inputs import IMAGE_SUFFIXES, SEQUENCE_SUFFIXES

    n_img = n_seq = n_omni = 0
    for f in root.rglob("*"):
        suf = f.suffix.lower()
        if suf not in IMAGE_SUFFIXES and suf not in SEQUENCE_SUFFIXES:
            continue
        if not f.is_file() or is_junk(f, root):
            continue
        if suf in IMAGE_SUFFIXES:
            n_img += 1
        else:
            n_seq += 1
            n_omni += suf == ".txt" and len(f.relative_to(root).parts) >= 3
    return n_img, n_seq, n_omni


def dataset_kind(spec: str | os.PathLike) -> str:
    """``"image"``, ``"sequence"`` or ``"text"``: what a dataset spec holds, from names only (nothing is decoded).

    A zip with Omniglot stroke files (``<Alphabet>/<character>/<file>.txt``) and
    no Omniglot images, or a folder with more sequence files (``.txt``, ``.npy``,
    ``.csv``) than images, is sequence data; everything else is left to
    :func:`load_dataset` (which says what is wrong with it). A missing path is an
    InputError ("dataset not found").
    """
    key = os.fspath(spec)
    path = Path(key).expanduser()
    if key in NAMED and not path.exists():
        return "image"
    if not path.exists():
        raise _not_found(key)
    if path.is_file():
        from fewshot.data.text import TEXT_DATA_SUFFIXES

        if path.suffix.lower() in TEXT_DATA_SUFFIXES:  # CLINC150 JSON, CSV/TSV/JSONL of text and label
            return "text"
        if path.suffix.lower() != ".zip":
            return "image"
        from fewshot.data.omniglot import _parse_entry as image_entry
        from fewshot.data.strokes import _parse_entry as stroke_entry

        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            raise InputError(f"{path} is not a readable zip file") from None
        if any(image_entry(n) for n in names):
            return "image"
        return "sequence" if any(stroke_entry(n) for n in names) else "image"
    n_img, n_seq, _ = _count_kinds(path)
    return "sequence" if n_seq > n_img else "image"


def load_sequence_dataset(spec: str | os.PathLike, alphabets: list[str] | None = None,
                          exclude_alphabets: list[str] | None = None):
    """Load sequence data into a :class:`~fewshot.data.strokes.LabelledSet`.

    * an Omniglot strokes zip (``strokes_background_small1.zip``), or a folder
      holding only ``<Alphabet>/<character>/<file>.txt`` stroke files:
      :func:`~fewshot.data.strokes.load_omniglot_strokes` (labels
      ``"<Alphabet>/<character>"``, groups = alphabets);
    * any other folder, one sub-folder per class of ``.txt`` / ``.npy`` / ``.csv``
      files (optionally ``root/<group>/<class>/file``):
      :func:`~fewshot.data.strokes.load_sequence_folder`.

    ``alphabets`` / ``exclude_alphabets`` keep (or remove) whole groups, as
    :func:`load_dataset` does for Omniglot images.
    """
    from fewshot.data.strokes import load_omniglot_strokes, load_sequence_folder

    key = os.fspath(spec)
    path = Path(key).expanduser()
    if not path.exists():
        raise _not_found(key)
    if path.is_dir():
        _, n_seq, n_omni = _count_kinds(path)
        omniglot = n_seq > 0 and n_omni == n_seq
    else:
        omniglot = True  # a file: only an Omniglot strokes zip is a sequence dataset
    if not omniglot:
        return load_sequence_folder(path).keep_groups(str(path), alphabets, exclude_alphabets)
    try:
        return load_omniglot_strokes(path, alphabets=alphabets, exclude_alphabets=exclude_alphabets)
    except ValueError as exc:
        raise InputError(str(exc)) from None
