"""Omniglot pen trajectories (``strokes_*``) and class folders of sequence files.

Reads the official layout, a zip (``strokes_background_small1.zip``) or the
extracted folder, as ``<split>/<Alphabet>/characterNN/<id>_<drawer>.txt``; junk
entries (``__MACOSX/``, ``.DS_Store``) are skipped. Each file becomes a raw
float32 ``[T, 3]`` array ``(x, y, end_of_stroke)`` (see :mod:`fewshot.sequences`).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from fewshot.data.dataset import LabelledSet
from fewshot.data.omniglot import select_alphabets
from fewshot.errors import InputError
from fewshot.limits import read_file, read_zip_entry
from fewshot.sequences import parse_stroke_files, parse_strokes, strokes_to_array


def _is_junk(name: str) -> bool:
    return any(p.startswith("__MACOSX") or p.startswith(".") for p in name.replace("\\", "/").split("/"))


def _parse_entry(name: str) -> tuple[str, str] | None:
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if len(parts) < 3 or not parts[-1].lower().endswith(".txt") or _is_junk(name):
        return None
    return parts[-3], parts[-2]


def load_omniglot_strokes(path: str | os.PathLike, alphabets: list[str] | None = None,
                          exclude_alphabets: list[str] | None = None) -> LabelledSet:
    """Load Omniglot stroke files into memory; labels ``"<Alphabet>/<character>"``, groups = alphabets.

    All 2,720 files of ``strokes_background_small1`` parse in well under a second
    (together, with :func:`~fewshot.sequences.parse_stroke_files`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Omniglot strokes not found at {path}; get them with "
                                "`fewshot.data.download_omniglot(root, 'strokes_background')`")
    entries: list[tuple[str, str, str]] = []
    if path.is_file():
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise InputError(f"{path} is not a zip file") from None
        entries = [(*pe, n) for n in zf.namelist() if (pe := _parse_entry(n))]
        read = lambda n: read_zip_entry(zf, n, path, "FEWSHOT_MAX_SEQUENCE_BYTES")  # noqa: E731
    else:
        for p in path.rglob("*.txt"):
            rel = p.relative_to(path).as_posix()
            if (pe := _parse_entry(rel)):
                entries.append((*pe, str(p)))
        read = lambda n: read_file(n, n, "FEWSHOT_MAX_SEQUENCE_BYTES")  # noqa: E731
    if not entries:
        raise ValueError(f"{path} holds no Omniglot stroke files (<Alphabet>/<character>/<file>.txt)")
    entries = select_alphabets(entries, alphabets, exclude_alphabets, noun="alphabet")
    in_zip = path.is_file()
    sources = [f"{path}:{n}" if in_zip else n for _, _, n in entries]
    decode = lambda data, name: data.decode("utf-8-sig", errors="replace")  # noqa: E731
    try:
        datas = [read(n) for _, _, n in entries]
    except Exception:  # noqa: BLE001 - one by one, to fail where reading and parsing in order fails
        datas = None
    if datas is None:
        seqs = [strokes_to_array(parse_strokes(decode(read(n), src), src)) for (_, _, n), src in zip(entries, sources)]
    else:  # all files parsed together (vectorised): the same arrays, the same errors
        rows, lens = parse_stroke_files(datas, sources, decode)
        ends = np.cumsum(lens)
        seqs = [rows[e - k:e].copy() for e, k in zip(ends.tolist(), lens.tolist())]
    return LabelledSet(seqs, [f"{a}/{c}" for a, c, _ in entries], [a for a, _, _ in entries], sources, "sequence")


def load_sequence_folder(root: str | os.PathLike) -> LabelledSet:
    """A folder with one sub-folder per class of sequence files (``.txt`` strokes, ``.npy``, ``.csv``).

    A second level of folders (``root/<group>/<class>/file``) is read as groups,
    as Omniglot's alphabets. Hidden files and folders are skipped.
    """
    from fewshot.inputs import SEQUENCE_SUFFIXES, InputItem
    from fewshot.sequences import load_sequence

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SEQUENCE_SUFFIXES
                   and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(root).parts))
    if not files:
        raise InputError(f"{root} holds no sequence files ({', '.join(SEQUENCE_SUFFIXES)}) in class folders")
    seqs, labels, groups = [], [], []
    for f in files:
        parts = f.relative_to(root).parts
        if len(parts) < 2:
            raise InputError(f"{f}: put each file in a folder named after its class")
        seqs.append(load_sequence(InputItem(f, str(f))))
        labels.append("/".join(parts[-3:-1]) if len(parts) >= 3 else parts[-2])
        groups.append(parts[-3] if len(parts) >= 3 else "all")
    return LabelledSet(seqs, labels, groups, [str(f) for f in files], "sequence")
