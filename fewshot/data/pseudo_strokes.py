"""Pen trajectories traced from character images: more drawing classes for a stroke encoder.

The official pen trajectories cover 5 of Omniglot's 30 background alphabets
(``strokes_background_small1``), so a stroke GRU trained on them sees 112
characters; the images cover all 964. This module turns an image into a
plausible trajectory, so a stroke encoder can train on every alphabet's
characters (the idea behind Lake et al.'s parses of images into strokes, much
simplified):

1. **thin** the ink to a one-pixel skeleton (Zhang and Suen 1984, vectorised over
   a batch of images);
2. **trace** the skeleton into strokes: each stroke starts at the free end that
   is highest, then leftmost (``2 row + column`` smallest: people write top to
   bottom, left to right), walks to the unvisited neighbour that turns least, and
   stops at a dead end; a stroke that starts next to ink already drawn starts
   from that pixel, so junctions stay connected, and is dropped as a thinning
   spur if it is short.

How close the traces come to what people drew (the images were drawn from the
official trajectories, so each can be compared with its own) is measured by
``benchmarks/traced_strokes_gap.py``; the numbers are in SEQUENCE_MODEL_CARD.md.

The result is a ``[T, 3]`` array ``(x, y, end_of_stroke)`` in the frame of the
official files (x = column, y = -row, one point per pixel step), so the same
preprocessing, augmentation and rendering apply. The drawing order and
direction are a guess, which is why these are training data, not a reader.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from fewshot.data.dataset import LabelledSet

#: Bumped when the tracing changes what it draws (caches of traced sets name it).
TRACER_VERSION = 2
#: 8 neighbours (row, col offsets), clockwise from north: Zhang-Suen's P2..P9.
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
#: A stroke that starts on ink already drawn and is shorter than this is a thinning spur or the
#: rest of a junction, not something a pen drew: dropped (isolated short marks, dots, stay).
SPUR_PIXELS = 10


def _deletable(step: int) -> np.ndarray:
    """Zhang-Suen's rule as a table over the 256 neighbourhoods (bit k = neighbour P(k+2)): a pixel
    goes when 2-6 neighbours are ink, there is exactly one 0->1 transition around it, and (first
    sub-step) P2.P4.P6 = P4.P6.P8 = 0, or (second) P2.P4.P8 = P2.P6.P8 = 0."""
    table = np.zeros(256, bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]  # P2..P9
        b = sum(p)
        a = sum(1 for k in range(8) if not p[k] and p[(k + 1) % 8])
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        cond = (not (p2 and p4 and p6) and not (p4 and p6 and p8)) if step == 0 else \
            (not (p2 and p4 and p8) and not (p2 and p6 and p8))
        table[code] = 2 <= b <= 6 and a == 1 and cond
    return table


_DELETABLE = (_deletable(0), _deletable(1))


def thin(ink: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Zhang-Suen thinning of boolean images ``[n, h, w]`` (or ``[h, w]``) to 1-pixel skeletons.

    Each pass deletes, in two sub-steps, the border pixels whose removal keeps
    the shape connected (:func:`_deletable`), until nothing changes. Every
    pixel's neighbourhood is packed into one byte and looked up in the table.
    """
    one = ink.ndim == 2
    img = np.pad(np.asarray(ink, bool)[None] if one else np.asarray(ink, bool), ((0, 0), (1, 1), (1, 1)))
    h, w = img.shape[1:]
    core = img[:, 1:-1, 1:-1]  # a view: deleting from it thins img
    for _ in range(max_iter):
        changed = False
        for table in _DELETABLE:
            code = np.zeros(core.shape, np.uint8)
            for k, (dr, dc) in enumerate(_RING):
                code |= img[:, 1 + dr:h - 1 + dr, 1 + dc:w - 1 + dc].view(np.uint8) << k
            delete = core & table[code]
            if delete.any():
                core &= ~delete
                changed = True
        if not changed:
            break
    return core[0] if one else core


def _turn(prev: tuple[int, int] | None, step: tuple[int, int]) -> float:
    """How far ``step`` turns from the direction ``prev`` (0 = straight on); no direction yet: prefer
    downwards and rightwards, as a pen starts."""
    if prev is None:
        return -(step[0] + step[1]) * 0.1 + 0.01 * (abs(step[0]) + abs(step[1]))
    dot = prev[0] * step[0] + prev[1] * step[1]
    return -dot / (np.hypot(*prev) * np.hypot(*step))


def trace(skeleton: np.ndarray) -> list[np.ndarray]:
    """A skeleton ``[h, w]`` (bool) -> strokes, each ``[n, 2]`` float32 ``(x, y)`` = ``(col, -row)``."""
    rows, cols = np.nonzero(skeleton)
    free = set(zip(rows.tolist(), cols.tolist()))
    drawn: set[tuple[int, int]] = set()

    def neighbours(p: tuple[int, int], pool: set) -> list[tuple[int, int]]:
        return [(p[0] + dr, p[1] + dc) for dr, dc in _RING if (p[0] + dr, p[1] + dc) in pool]

    strokes: list[list[tuple[int, int]]] = []
    spurs: set[int] = set()
    while free:
        ends = [p for p in free if len(neighbours(p, free)) <= 1]
        start = min(ends or free, key=lambda p: (2 * p[0] + p[1], p[1]))
        path = [start]
        joined = neighbours(start, drawn)
        if joined:
            path.insert(0, joined[0])
        free.discard(start)
        drawn.add(start)
        prev = None
        while True:
            cur = path[-1]
            nxt = neighbours(cur, free)
            if not nxt:
                break
            step = min(((q[0] - cur[0], q[1] - cur[1]) for q in nxt), key=lambda s: _turn(prev, s))
            q = (cur[0] + step[0], cur[1] + step[1])
            path.append(q)
            free.discard(q)
            drawn.add(q)
            prev = step
        if joined and len(path) < SPUR_PIXELS:
            spurs.add(len(strokes))
        strokes.append(path)
    return [np.array([(c, -r) for r, c in s], np.float32) for i, s in enumerate(strokes) if i not in spurs]


def image_to_trajectory(ink: np.ndarray, threshold: int = 128) -> np.ndarray:
    """One character image ``[h, w]`` (uint8, ink high) -> a ``[T, 3]`` stroke array."""
    from fewshot.sequences import strokes_to_array

    skel = thin(np.asarray(ink) >= threshold)
    if not skel.any():
        raise ValueError("the image holds no ink")
    return strokes_to_array(trace(skel))


def trace_images(images: np.ndarray, threshold: int = 128, batch: int = 512) -> list[np.ndarray]:
    """Images ``[n, h, w]`` (uint8, ink high) -> one stroke array each (thinning batched)."""
    from fewshot.sequences import strokes_to_array

    out: list[np.ndarray] = []
    for lo in range(0, len(images), batch):
        for skel in thin(images[lo:lo + batch] >= threshold):
            out.append(strokes_to_array(trace(skel)) if skel.any() else np.zeros((1, 3), np.float32))
    return out


def load_traced_omniglot(path: str | os.PathLike, exclude_alphabets: Sequence[str] | None = None,
                         alphabets: Sequence[str] | None = None) -> LabelledSet:
    """Omniglot images (the zip or folder) traced into trajectories: a ``kind="sequence"`` set with
    the images' labels (``"<Alphabet>/<character>"``) and alphabets as groups, so its classes merge
    with the same characters' real trajectories. Sources end in ``#traced``."""
    from fewshot.data.omniglot import load_omniglot

    images = load_omniglot(path, size=105, alphabets=list(alphabets) if alphabets else None,
                           exclude_alphabets=list(exclude_alphabets) if exclude_alphabets else None)
    seqs = trace_images(images.items)
    return LabelledSet(seqs, images.labels, images.groups, [s + "#traced" for s in images.sources], "sequence")
