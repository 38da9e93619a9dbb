"""New classes from old ones by symmetry: the Omniglot rotation trick, for images and for strokes.

For handwriting and symbols a rotated or mirrored character is a different
character, so a handful of labelled classes becomes four or eight times as many.
Not for photos (a mirrored cat is a cat) and not for time series.
"""
from __future__ import annotations

import numpy as np

from fewshot.data.dataset import LabelledSet

EXPANSIONS = ("none", "rotations", "dihedral")
# (quarter turns, mirrored) of the 8 dihedral symmetries; the first 4 are the rotations.
_SYMS = [(k, False) for k in range(4)] + [(k, True) for k in range(4)]
# The middle of Omniglot's 105-pixel canvas, about which stroke coordinates are rotated.
STROKE_CENTRE = (52.5, -52.5)


def _tag(k: int, mirror: bool, image: bool) -> str:
    """The label suffix of a symmetry (the images' and strokes' historical spellings)."""
    if image:
        return ("@flip" if mirror else "") + (f"@rot{90 * k}" if k else "")
    return "" if (k, mirror) == (0, False) else f"@{'m' if mirror else ''}rot{90 * k}"


def _transform_strokes(a: np.ndarray, k: int, mirror: bool, centre: tuple[float, float]) -> np.ndarray:
    """Rotate (x, y) by 90*k degrees about ``centre`` (and mirror x); the end-of-stroke column is kept."""
    out = a.copy()
    x, y = a[:, 0] - centre[0], a[:, 1] - centre[1]
    if mirror:
        x = -x
    for _ in range(k):
        x, y = -y, x
    out[:, 0], out[:, 1] = x + centre[0], y + centre[1]
    return out


def _image_parts(ds: LabelledSet, n: int) -> list[LabelledSet]:
    """The images in the order the image trainer has always used: (mirror first), then rotations."""
    flips = [(False, ds.items)] + ([(True, np.ascontiguousarray(ds.items[:, :, ::-1]))] if n == 8 else [])
    parts = []
    for k in range(4 if n > 1 else 1):
        for mirror, imgs in flips:
            rot = np.rot90(imgs, k, axes=(1, 2)) if k else imgs
            parts.append(LabelledSet(rot, [lab + _tag(k, mirror, True) for lab in ds.labels], ds.groups,
                                     ds.sources, "image"))
    return parts


def expand_symmetries(ds: LabelledSet, n: int, centre: tuple[float, float] = STROKE_CENTRE) -> LabelledSet:
    """Each class in ``n`` symmetric versions (1, 4 rotations, or 8: rotations x mirror), each a new class.

    Images are rotated in the pixel grid; strokes about ``centre`` (rotated
    stroke alphabets become their own groups, as before).
    """
    if n not in (1, 4, 8):
        raise ValueError("symmetries must be 1, 4 or 8")
    if n == 1:
        return ds
    if ds.kind == "image":
        parts = _image_parts(ds, n)
    else:
        parts = []
        for k, mirror in _SYMS[:n]:
            tag = _tag(k, mirror, False)
            seqs = [_transform_strokes(s, k, mirror, centre) if tag else s for s in ds.items]
            parts.append(LabelledSet(seqs, [lab + tag for lab in ds.labels], [g + tag for g in ds.groups],
                                     ds.sources, "sequence"))
    return LabelledSet.concat(parts)


def expand_classes(ds: LabelledSet, mode: str) -> LabelledSet:
    """``"none"``, ``"rotations"`` (x4 classes) or ``"dihedral"`` (x8 classes)."""
    if mode not in EXPANSIONS:
        raise ValueError(f"unknown class expansion {mode!r}; choose one of {', '.join(EXPANSIONS)}")
    return expand_symmetries(ds, {"none": 1, "rotations": 4, "dihedral": 8}[mode])
