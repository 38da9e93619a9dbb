"""Omniglot (Lake, Salakhutdinov and Tenenbaum, Science 2015): reader and downloader.

Reads the official layout, either a zip (``images_background.zip``) or the
extracted folder, as ``<split>/<Alphabet>/characterNN/<id>_<drawer>.png``.
Junk entries that real archives carry (``__MACOSX/``, ``.DS_Store``) are skipped.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from fewshot.data.dataset import LabelledSet
from fewshot.inputs import decode_image_bytes
from fewshot.limits import read_file, read_zip_entry

OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{split}.zip"
SPLITS = ("images_background", "images_evaluation", "strokes_background", "strokes_evaluation",
          "images_background_small1", "images_background_small2",
          "strokes_background_small1", "strokes_background_small2")


def select_alphabets(entries: list[tuple], alphabets=None, exclude_alphabets=None,
                     noun: str = "Omniglot alphabet") -> list[tuple]:
    """The ``(alphabet, character, name)`` entries of ``alphabets`` (all when None) less
    ``exclude_alphabets``, sorted; a ValueError names an alphabet that is not there."""
    keep = set(alphabets) if alphabets else None
    drop = set(exclude_alphabets or ())
    known = {a for a, _, _ in entries}
    for name in (keep or set()) | drop:
        if name not in known:
            raise ValueError(f"unknown {noun} {name!r}; known: {', '.join(sorted(known))}")
    return sorted(e for e in entries if (keep is None or e[0] in keep) and e[0] not in drop)


def _is_junk(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return any(p.startswith("__MACOSX") or p.startswith(".") for p in parts)


def _parse_entry(name: str) -> tuple[str, str] | None:
    """(alphabet, character) for ``.../<Alphabet>/<character>/<file>.png``, else None."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if len(parts) < 3 or not parts[-1].lower().endswith(".png") or _is_junk(name):
        return None
    return parts[-3], parts[-2]


def load_omniglot(path: str | os.PathLike, size: int = 28, alphabets: list[str] | None = None,
                  exclude_alphabets: list[str] | None = None) -> LabelledSet:
    """Load Omniglot images into memory as a uint8 array [n, size, size], ink = 255.

    ``path`` is the zip or the extracted split folder. Labels are
    ``"<Alphabet>/<character>"``; groups are alphabets (for within-alphabet episodes).
    Decoding all 19,280 background images takes a few seconds; the whole set is
    15 MB at 28x28, so keeping it in memory makes episode sampling free.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Omniglot data not found at {path}; get it with `fewshot.data.download_omniglot(root)`")
    entries: list[tuple[str, str, str]] = []  # (alphabet, character, name)
    if path.is_file():
        zf = zipfile.ZipFile(path)
        for name in zf.namelist():
            parsed = _parse_entry(name)
            if parsed:
                entries.append((*parsed, name))
        read = lambda n: read_zip_entry(zf, n, path)  # noqa: E731 - size from the zip directory first
    else:
        for p in path.rglob("*.png"):
            rel = p.relative_to(path).as_posix()
            parsed = _parse_entry(rel)
            if parsed:
                entries.append((*parsed, str(p)))
        read = lambda n: read_file(n, n)  # noqa: E731 - size checked before reading
    if not entries:
        raise ValueError(f"{path} holds no Omniglot images (<Alphabet>/<character>/<file>.png)")
    entries = select_alphabets(entries, alphabets, exclude_alphabets)
    images = np.empty((len(entries), size, size), dtype=np.uint8)
    for i, (_, _, name) in enumerate(entries):
        with decode_image_bytes(read(name), f"{path.name}:{name}" if path.is_file() else name) as im:
            im = im.convert("L").resize((size, size), Image.Resampling.BOX)
            images[i] = 255 - np.asarray(im, dtype=np.uint8)  # ink high, background 0
    labels = [f"{a}/{c}" for a, c, _ in entries]
    groups = [a for a, _, _ in entries]
    sources = [f"{path}:{n}" if path.is_file() else n for _, _, n in entries]
    return LabelledSet(images, labels, groups, sources, kind="image")


def download_omniglot(root: str | os.PathLike, split: str = "images_background",
                      timeout: float = 60.0) -> Path:
    """Download one official Omniglot zip into ``root`` (once) and return its path.

    The archive comes from the authors' public repository. Offline, this raises a
    ``ConnectionError`` that says where to put the file by hand.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Omniglot split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{split}.zip"
    if target.exists():
        return target
    url = OMNIGLOT_URL.format(split=split)
    tmp = target.with_suffix(".zip.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {url} ({exc}); download it elsewhere and place it at {target}") from exc
    zipfile.ZipFile(tmp).testzip()  # refuse a truncated download
    os.replace(tmp, target)
    return target
