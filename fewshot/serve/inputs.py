"""Request inputs (uploads, base64 images, pen strokes, arrays) -> what ``FewShotIndex`` takes.

Everything is decoded in memory and checked before the index sees it, so a bad
input is refused with one clear message and nothing is written. Names sent by
clients are only used to label answers, never as file names.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from fewshot.errors import InputError

MAX_STROKE_POINTS = 20_000  # points in one drawing; a hand never draws that many


class InputModel(BaseModel):
    """One example: exactly one of ``image_base64``, ``strokes``, ``array`` or ``text``."""

    name: str | None = Field(None, max_length=200, description="How the answer names this input.")
    image_base64: str | None = Field(None, description="An image file (PNG, JPEG, ...) in base64.")
    strokes: list[list[list[float]]] | None = Field(
        None, description="Pen strokes, each a list of [x, y, t] points (y up, as Omniglot stroke files).")
    array: list[Any] | None = Field(None, description="A numeric array: an image [H, W] or a sequence [T, F].")
    text: str | None = Field(None, description="A text, for a text index.")


@dataclass
class Decoded:
    name: str
    value: Any  # PIL image or float32 numpy array


def strokes_array(strokes: list[list[list[float]]], name: str):
    """``[[[x, y, t], ...], ...]`` -> float32 ``[T, 3]`` ``(x, y, end_of_stroke)``, as a stroke file reads."""
    import numpy as np

    from fewshot.sequences import strokes_to_array

    if not strokes:
        raise InputError(f"{name}: no strokes")
    total = sum(len(s) for s in strokes)
    if total > MAX_STROKE_POINTS:
        raise InputError(f"{name}: {total} points; at most {MAX_STROKE_POINTS} per drawing")
    arrays = []
    for j, stroke in enumerate(strokes):
        if not stroke or any(len(p) < 2 for p in stroke):
            raise InputError(f"{name}, stroke {j}: expected a non-empty list of [x, y, t] points")
        a = np.asarray([p[:2] for p in stroke], np.float32)
        if not np.isfinite(a).all():
            raise InputError(f"{name}, stroke {j}: NaN or infinite coordinate")
        arrays.append(a)
    return strokes_to_array(arrays)


def decode_image(data: bytes, name: str):
    from fewshot.inputs import decode_image_bytes

    return decode_image_bytes(data, name)


def _base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{name}: image_base64 is not valid base64") from None


def _array(values: list[Any], name: str):
    import numpy as np

    try:
        a = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{name}: array must be a rectangular list of numbers") from None
    if a.size == 0 or not np.isfinite(a).all():
        raise InputError(f"{name}: array is empty or holds NaN/inf")
    return a


def decode_one(item: InputModel, i: int, input_kind: str) -> Decoded:
    """One JSON input -> a decoded value; strokes sent to an image index are rendered like Omniglot's PNGs."""
    name = item.name or f"#{i}"
    given = [k for k in ("image_base64", "strokes", "array", "text") if getattr(item, k) is not None]
    if len(given) != 1:
        raise InputError(f"{name}: give exactly one of image_base64, strokes, array, text (got {len(given)})")
    if (item.text is not None) != (input_kind == "text"):
        what = "text" if item.text is not None else given[0]
        raise InputError(f"{name}: {what} given to an index of {input_kind}s")
    if item.text is not None:  # named as the library names a text (shortened) unless the client names it
        from fewshot.text_inputs import text_item

        it = text_item(item.text, item.name)
        return Decoded(it.name, it)
    if item.image_base64 is not None:
        return Decoded(name, decode_image(_base64(item.image_base64, name), name))
    if item.strokes is not None:
        arr = strokes_array(item.strokes, name)
        if input_kind == "sequence":
            return Decoded(name, arr)
        from fewshot.sequences import render_strokes

        return Decoded(name, render_strokes(arr))
    return Decoded(name, _array(item.array, name))


def decode_many(items: list[InputModel], input_kind: str, max_batch: int) -> list[Decoded]:
    from fewshot.serve.errors import TooLarge

    if not items:
        raise InputError("no inputs given")
    if len(items) > max_batch:
        raise TooLarge(f"{len(items)} inputs in one request; at most {max_batch}")
    return [decode_one(it, i, input_kind) for i, it in enumerate(items)]
