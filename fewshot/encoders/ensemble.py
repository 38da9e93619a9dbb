"""Several image encoders that read images the same way, used as one.

Each image is read and preprocessed once; every member embeds it, and the members'
L2-normalised embeddings are concatenated, member i scaled by sqrt(w_i)
(:func:`fewshot.encoders.fusion.fuse_embeddings`), so the cosine of two ensemble vectors
is the weighted mean of the members' cosines. Two networks of different families
(a ResNet-12 and a Conv-4) make different mistakes, which is why their mean cosine ranks
classes better than either one (MODEL_CARD.md measures it).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from fewshot.encoders.base import TorchEncoder, TorchImageEncoder
from fewshot.encoders.fusion import fuse_embeddings
from fewshot.errors import EncoderError
from fewshot.inputs import InputItem


class ImageEnsemble:
    """Image encoders with one preprocessing, as one encoder: ``embed`` returns their fused vectors."""

    input_kind = "image"
    unit = "img"

    def __init__(self, name: str, members: Sequence[TorchImageEncoder], weights: Sequence[float] | None = None):
        if len(members) < 2:
            raise EncoderError("an ensemble needs at least two image encoders")
        if any(getattr(m, "input_kind", None) != "image" for m in members):
            raise EncoderError("an ensemble's members must all be image encoders")
        if len({m.preprocess for m in members}) != 1:
            raise EncoderError("an ensemble's members must read images the same way (one preprocessing)")
        w = np.full(len(members), 1.0 / len(members)) if weights is None else np.asarray(weights, float)
        if len(w) != len(members) or (w < 0).any() or not w.sum() > 0:
            raise EncoderError("ensemble weights: one non-negative weight per member, not all zero")
        self.name, self.members, self.weights = name, list(members), tuple(float(x) for x in w / w.sum())
        self.preprocess = members[0].preprocess
        self.dim = sum(m.dim for m in members)
        self.threads = 0
        temps = [m.temperature for m in members]
        # the fused cosine is the weighted mean of the members': so is its temperature
        self.temperature = float(sum(wi * t for wi, t in zip(self.weights, temps))) if all(temps) else None

    def __repr__(self) -> str:
        return f"ImageEnsemble(name={self.name!r}, dim={self.dim}, fingerprint={self.fingerprint})"

    @property
    def fingerprint(self) -> str:
        """The members' fingerprints and weights: another member or weight is another encoder."""
        key = "ensemble:v1:" + ":".join(f"{m.fingerprint}*{w:.6g}" for m, w in zip(self.members, self.weights))
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def load_arrays(self, items: Sequence[InputItem], workers: int = 2) -> np.ndarray:
        """Decoded, preprocessed uint8 arrays, read once for every member."""
        return self.members[0].load_arrays(items, workers)

    def prepare_batch(self, items: Sequence[InputItem]) -> torch.Tensor:
        """Read and preprocess once for every member."""
        return self.members[0].prepare_batch(items)

    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Every member on the prepared batch (each with its own test-time shifts), fused."""
        return fuse_embeddings(*(m.embed_tensor(batch) for m in self.members), weights=self.weights)

    # reading inputs and batching are the torch encoders' own (they only use the hooks above)
    _items = TorchEncoder._items
    embed = TorchEncoder.embed
