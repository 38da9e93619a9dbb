"""Embed a labelled set once, exactly as an index embeds its inputs (optionally with shift TTA).

Episodes then only index into the embedding matrix, so 1000 episodes cost little
more than one.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.data.dataset import LabelledSet
from fewshot.errors import InputError

# Test-time augmentation: the image itself and its four one-pixel shifts.
TTA_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def _shift(batch: np.ndarray, dy: int, dx: int, fill_edge: bool) -> np.ndarray:
    """Translate uint8 images [n, h, w(, c)] by (dy, dx) pixels; background fill, no wrap-around."""
    if dy == 0 and dx == 0:
        return batch
    h, w = batch.shape[1:3]
    pad = [(0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (batch.ndim - 3)
    padded = np.pad(batch, pad, mode="edge" if fill_edge else "constant")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[:, y0:y0 + h, x0:x0 + w])


def check_kinds(encoder: Any, dataset_kind: str, data: Any = "the data") -> None:
    """One clear error when the encoder takes another kind of input than the data holds."""
    enc_kind = getattr(encoder, "input_kind", "image")
    if enc_kind == dataset_kind:
        return
    name = getattr(encoder, "name", encoder)
    if "text" in (enc_kind, dataset_kind):
        raise InputError(f"encoder {name} takes {enc_kind}, but {data} holds {dataset_kind}; pass "
                         f"{'a text encoder (e.g. --encoder minilm) or ' if dataset_kind == 'text' else ''}"
                         f"data of the encoder's kind")
    if enc_kind == "sequence":
        raise InputError(f"encoder {name} takes sequences (pen strokes, time series), but {data} holds images; "
                         "pass an image encoder (e.g. --encoder omniglot-conv4) or sequence data")
    raise InputError(f"encoder {name} takes {enc_kind}s, but {data} holds {dataset_kind}s (strokes); pass a "
                     "sequence encoder (e.g. --encoder omniglot-strokes-gru) or image data")


def embed_dataset(encoder: Any, dataset: LabelledSet, tta: bool = False, batch_size: int = 256,
                  progress: bool = True) -> np.ndarray:
    """Embeddings float32 [n, dim] of every example, each through the encoder once.

    Images pass through the encoder's own preprocessing (``to_array`` then
    ``normalize``), exactly as files added to an index do; with ``tta`` each
    embedding is the mean over the image and its one-pixel shifts
    (:data:`TTA_SHIFTS`). Sequences go through the encoder's own ``embed``.
    """
    kind = getattr(encoder, "input_kind", "image")
    if kind != dataset.kind:
        raise ValueError(f"encoder {getattr(encoder, 'name', encoder)!r} takes {kind}s, not {dataset.kind}s; "
                         "evaluate it on its own kind of data")
    if dataset.kind != "image":  # sequences, text: the encoder's own embed reads the items
        if tta:
            raise ValueError(f"test-time augmentation (tta) applies to images, not to {dataset.kind}")
        return np.asarray(encoder.embed(list(dataset.items), batch_size=batch_size, progress=progress),
                          dtype=np.float32)
    if getattr(encoder, "preprocess", None) is None or not callable(getattr(encoder, "embed_tensor", None)):
        raise ValueError(f"encoder {getattr(encoder, 'name', encoder)!r} does not take images "
                         "(it has no image preprocessing); evaluate it on its own kind of data")
    return _embed_images(encoder, dataset.items, tta, batch_size, progress)


def _embed_images(encoder: Any, images: np.ndarray, tta: bool, batch_size: int, progress: bool) -> np.ndarray:
    from PIL import Image
    from tqdm import tqdm

    pre = encoder.preprocess
    out = np.empty((len(images), encoder.dim), dtype=np.float32)
    shifts = TTA_SHIFTS if tta else TTA_SHIFTS[:1]
    with tqdm(total=len(images), desc=f"embed ({encoder.name})", unit="img", disable=not progress, leave=False,
              delay=0.5) as bar:
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            arrays = np.stack([pre.to_array(Image.fromarray(img)) for img in chunk])
            acc = np.zeros((len(chunk), encoder.dim), dtype=np.float64)
            for dy, dx in shifts:
                acc += encoder.embed_tensor(pre.normalize(_shift(arrays, dy, dx, fill_edge=pre.channels == 3)))
            out[i:i + len(chunk)] = acc / len(shifts)
            bar.update(len(chunk))
    return out


def dataset_counts(dataset: LabelledSet) -> dict:
    """The dataset part of an evaluation's protocol: kind and sizes (``n_images`` is null for sequences)."""
    seq = dataset.kind != "image"
    return {"input_kind": dataset.kind, "n_classes": len(dataset.classes),
            "n_examples": len(dataset), "n_images": None if seq else len(dataset)}
