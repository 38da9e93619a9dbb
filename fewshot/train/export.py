"""Turn a training checkpoint into an encoder file, for either input kind.

The encoder's ``centre`` is the mean embedding of the training examples (CL2N
centring, computed once here) and its temperature is the inverse of the learned
scale, which an index then uses for its softmax probabilities.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from fewshot.data.dataset import LabelledSet


def encoder_from_module(kind: str, name: str, module: torch.nn.Module, dim: int, preprocess: Any, arch: str,
                        arch_kwargs: dict, **kwargs: Any) -> Any:
    """An encoder object of ``kind`` around a trained module (the registry's class for that kind)."""
    from fewshot.encoders.registry import kind_class

    return kind_class(kind)(name, module, dim, preprocess, arch, arch_kwargs, **kwargs)


def mean_embedding(module: torch.nn.Module, data: LabelledSet, pre: Any = None) -> np.ndarray:
    """The mean embedding of ``data`` (unaugmented; sequences through ``pre``): an encoder's CL2N centre."""
    from fewshot.train.batches import make_batcher

    return make_batcher(data, _NoAugment(), **({"pre": pre} if data.kind == "sequence" else {})
                        ).embed(module, data).mean(0)


def export_encoder(kind: str, state_dict_path: str | os.PathLike, out_path: str | os.PathLike, preprocess: Any,
                   arch: str, arch_kwargs: dict, name: str, train: LabelledSet | None = None,
                   scale: float | None = None) -> Any:
    """Load ``best.pt`` into a fresh module of ``arch``, centre it on ``train`` and save an encoder file."""
    from fewshot.encoders.registry import KINDS

    module, dim = KINDS[kind].build_module(arch, **arch_kwargs)
    module.load_state_dict(torch.load(state_dict_path, map_location="cpu", weights_only=True))
    centre = None
    if train is not None:
        centre = mean_embedding(module, train, preprocess if kind == "sequence" else None)
    enc = encoder_from_module(kind, name, module, dim, preprocess, arch, arch_kwargs,
                              weights_source=str(out_path), centre=centre,
                              temperature=None if scale is None else round(1.0 / scale, 6))
    enc.save(out_path)
    return enc


def export_image_encoder(state_dict_path: str | os.PathLike, out_path: str | os.PathLike,
                         train: LabelledSet | None, name: str, arch_kwargs: dict, size: int = 28,
                         scale: float | None = None, arch: str = "conv") -> Any:
    """An image encoder file from a checkpoint (inputs: ink-high grayscale at ``size``)."""
    from fewshot.encoders.preprocess import ImagePreprocess

    return export_encoder("image", state_dict_path, out_path, ImagePreprocess(size=size), arch, arch_kwargs, name,
                          train, scale)


def export_sequence_encoder(state_dict_path: str | os.PathLike, out_path: str | os.PathLike, pre: Any,
                            arch_kwargs: dict, name: str, train: LabelledSet | None = None,
                            scale: float | None = None) -> Any:
    """A sequence (RNN) encoder file from a checkpoint, with the preprocessing it was trained with."""
    return export_encoder("sequence", state_dict_path, out_path, pre, "rnn", arch_kwargs, name, train, scale)


class _NoAugment:
    """The few config fields a batcher reads, for embedding only (no augmentation)."""

    augment = False
    reverse_prob = shuffle_prob = 0.0
    seed = 0
