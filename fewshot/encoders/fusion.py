"""Stroke + image fusion: one encoder made of a sequence encoder and an image encoder.

It lives with the encoders (not with the training code) because an index embeds
with it at inference time; training and evaluation import :func:`fuse_embeddings`
from here.
"""
from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fewshot.errors import EncoderError
from fewshot.inputs import InputItem
from fewshot.prototypes import l2_normalize
from fewshot.sequences import load_sequence, render_strokes

if TYPE_CHECKING:  # for annotations only: fusion composes the two kinds without importing their code
    from fewshot.encoders.base import TorchImageEncoder
    from fewshot.encoders.sequence import TorchSequenceEncoder


def fuse_embeddings(*parts: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Concatenate L2-normalised embeddings, part i scaled by sqrt(w_i) (weights summing to 1).

    The cosine of two fused vectors is then the weighted mean of the parts'
    cosines, ``sum_i w_i cos_i``; the default weights are equal.
    """
    w = np.full(len(parts), 1.0 / len(parts)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(parts) or (w < 0).any() or not w.sum() > 0:
        raise ValueError("fusion weights: one non-negative weight per part, not all zero")
    w = w / w.sum()
    return np.concatenate([l2_normalize(p) * math.sqrt(wi) for p, wi in zip(parts, w)], 1).astype(np.float32)


class FusionEncoder:
    """Stroke + image: each stroke input is embedded by a sequence encoder and, rendered as
    Omniglot draws it, by an image encoder; the two L2-normalised embeddings are
    concatenated, scaled by sqrt(w) and sqrt(1 - w), so the cosine of two fused vectors is
    ``w * cos_sequence + (1 - w) * cos_image`` (``w = sequence_weight``; 0.5: the mean). An
    index built with it keeps both embeddings of every example and classifies with both.
    """

    input_kind = "sequence"

    def __init__(self, name: str, sequence_encoder: TorchSequenceEncoder, image_encoder: TorchImageEncoder,
                 render_width: float = 5.0, sequence_weight: float = 0.5):
        if sequence_encoder.preprocess.kind != "strokes":
            raise EncoderError("fusion needs a stroke encoder (its inputs are rendered to images)")
        if not 0.0 <= sequence_weight <= 1.0:
            raise EncoderError(f"sequence_weight must be in [0, 1]; got {sequence_weight}")
        self.name, self.sequence, self.image = name, sequence_encoder, image_encoder
        self.render_width = render_width
        self.sequence_weight = float(sequence_weight)
        self.dim = sequence_encoder.dim + image_encoder.dim
        t_seq, t_img = sequence_encoder.temperature, getattr(image_encoder, "temperature", None)
        if t_seq and t_img:  # the fused cosine is the weighted mean: so is its temperature
            self.temperature = float(self.sequence_weight * t_seq + (1 - self.sequence_weight) * t_img)
        else:
            self.temperature = t_seq or t_img or None

    def __repr__(self) -> str:
        return f"FusionEncoder(name={self.name!r}, dim={self.dim}, fingerprint={self.fingerprint})"

    @property
    def fingerprint(self) -> str:
        """Both parts' fingerprints and how they are combined (so a changed weight is a new encoder)."""
        key = f"fusion:v1:{self.sequence.fingerprint}:{self.image.fingerprint}:{self.render_width}"
        if self.sequence_weight != 0.5:
            key += f":w{self.sequence_weight}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def embed(self, inputs: Any, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Fused float32 ``[n, dim]`` of stroke files, folders or ``[T, 3]`` arrays."""
        items = self.sequence._items(inputs)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        raws = [self.sequence.preprocess.check_input(load_sequence(it), it.name) for it in items]
        seq = self.sequence.embed([InputItem(r, it.name) for r, it in zip(raws, items)], batch_size, progress)
        img = self.image.embed([render_strokes(r, width=self.render_width) for r in raws], batch_size, progress)
        return fuse_embeddings(seq, img, weights=(self.sequence_weight, 1 - self.sequence_weight))
