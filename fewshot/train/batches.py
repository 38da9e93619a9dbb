"""Batchers: how one input kind becomes a training batch and validation embeddings.

The training loop knows nothing about images or strokes; it asks the batcher
registered for the data's ``kind`` (:data:`BATCHERS`) for the model input of an
episode's examples, and for embeddings of a validation set. A new input kind
adds a batcher here and nothing in the loop.

* image: uint8 images -> float tensor (the encoder's normalisation), then a
  small random affine warp per image (rotation, shear, scale, shift; one
  ``grid_sample``), seeded by ``(seed, step)``.
* sequence: each raw stroke array is augmented (affine warp of the trajectory,
  jitter, time-stretch, optional stroke reversal/reordering), preprocessed as
  the encoder will, and the batch packed; seeded by the step's generator. With
  teacher views (distillation) an example is drawn from one of its pre-rendered
  augmented views and the batch carries the teacher's target for it.
* text: the episode's strings, each with a few words dropped at random
  (``cfg.extra["word_dropout"]``, default 0.1, off with ``augment=False``),
  tokenised by the encoder's ``tokenize``; seeded by the step's generator. With
  ``targets`` (a teacher's embedding of every example: distillation) the batch
  carries the teacher's rows; with ``unlabelled`` (more texts and their teacher
  rows) ``cfg.extra["unlabelled_per_step"]`` of them, drawn at random, follow
  the episode's rows (the metric losses see only the labelled rows).

Time series (sequence preprocessing ``kind="ts"``) get :class:`~fewshot.train.series_augment.SeriesAugment`
instead (window slicing, time warping, scaling, jitter, channel dropout; its fields
from ``cfg.extra["series_augment"]``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data.dataset import LabelledSet
from fewshot.errors import InputError
from fewshot.train.devices import module_device, to_device


@dataclass
class Batch:
    """One training step's input: ``x`` for the model, ``labels`` 0..ways-1 (support rows first)."""

    x: Any
    labels: torch.Tensor
    n_support: int
    targets: torch.Tensor | None = None  # teacher embeddings, one row per example (distillation)
    classes: list[str] | None = None  # the class name of each label (class-level losses: ClassifierLoss)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [n,h,w] or [n,h,w,c] -> float32 [n,c,h,w] in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def random_affine(x: torch.Tensor, cfg: Any, gen: torch.Generator) -> torch.Tensor:
    """A small random rotation, shear, scale and translation per image (one grid_sample); with
    ``cfg.hflip``, half the images are also mirrored left-right (photos: a mirrored dog is a dog)."""
    n = x.shape[0]
    u = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
    ang = torch.deg2rad(u(-cfg.max_rotate, cfg.max_rotate))
    shear = u(-cfg.max_shear, cfg.max_shear)
    s = u(*cfg.scale_range)
    tx, ty = u(-cfg.max_translate, cfg.max_translate) * 2, u(-cfg.max_translate, cfg.max_translate) * 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    # the grid maps output to input coordinates: negating the column of output x mirrors the image
    mirror = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if getattr(cfg, "hflip", False) else 1.0
    theta = torch.stack([torch.stack([mirror * cos / s, (-sin + shear) / s, tx], 1),
                         torch.stack([mirror * sin / s, cos / s, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


#: the image warp's knobs (TrainConfig fields) an ``augment`` dict may set
IMAGE_WARP_FIELDS = ("max_rotate", "max_shear", "scale_range", "max_translate", "hflip")


def image_warp(cfg: Any) -> Any:
    """``cfg`` with an ``augment`` dict's warp fields applied (unknown fields are an InputError)."""
    if not isinstance(cfg.augment, dict):
        return cfg
    unknown = sorted(set(cfg.augment) - set(IMAGE_WARP_FIELDS))
    if unknown:
        raise InputError(f"unknown image augmentation {', '.join(unknown)}; known: {', '.join(IMAGE_WARP_FIELDS)}")
    return dataclasses.replace(cfg, **cfg.augment)


@torch.no_grad()
def _eval_forward(model: nn.Module, chunks: list) -> np.ndarray:
    """The model's outputs on ready inputs (moved to the model's device), in eval mode
    (training mode restored after), as one CPU array."""
    was, device = model.training, module_device(model)
    model.eval()
    out = [model(to_device(c, device)).cpu() for c in chunks]
    model.train(was)
    return torch.cat(out).numpy()


class ImageBatcher:
    """Images: tensor once (``to_tensor``, default [0, 1] floats), warp per step, optional ``transform``."""

    def __init__(self, data: LabelledSet, cfg: Any, to_tensor: Callable[[np.ndarray], torch.Tensor] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.cfg, self.transform = cfg, transform
        # ``augment`` as a dict overrides the warp's fields for this run, e.g. {"hflip": True} for photos
        self.warp = image_warp(cfg)
        self.to_tensor = to_tensor or images_to_tensor
        self.x_all = self.to_tensor(data.items)

    def inputs(self, idx: np.ndarray, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, None]:
        x = self.x_all[idx]
        if self.cfg.augment:
            x = random_affine(x, self.warp, torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step))
        return (self.transform(x) if self.transform is not None else x), None

    def embed(self, model: nn.Module, data: LabelledSet, batch: int = 512) -> np.ndarray:
        x = self.to_tensor(data.items)
        t = self.transform or (lambda v: v)
        return _eval_forward(model, [t(x[i:i + batch]) for i in range(0, len(x), batch)])


def pad_channels(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Series of several data sets in one batch: channels padded with NaN to the widest (``ts-gru`` masks them)."""
    width = max(a.shape[1] for a in arrays)
    return [a if a.shape[1] == width else
            np.concatenate([a, np.full((len(a), width - a.shape[1]), np.nan, np.float32)], 1) for a in arrays]


class SequenceBatcher:
    """Sequences: augment raw arrays, preprocess with ``pre``, pack; optionally teacher views and targets."""

    def __init__(self, data: LabelledSet, cfg: Any, pre: Any, views: list[list[np.ndarray]] | None = None,
                 targets: torch.Tensor | None = None):
        from fewshot.sequences import SequenceAugment

        self.data, self.pre, self.views, self.targets = data, pre, views, targets
        fields = dict(cfg.augment) if isinstance(cfg.augment, dict) else {}
        order = {"reverse_prob": cfg.reverse_prob, "shuffle_prob": cfg.shuffle_prob} \
            if cfg.reverse_prob or cfg.shuffle_prob else {}
        base = SequenceAugment(**fields)
        self.aug = SequenceAugment(**{**fields, **order}) if cfg.augment is not False else None
        # teacher views already carry the affine warp: add only time-stretch and jitter
        self.light = SequenceAugment(max_rotate=0, max_shear=0, scale_range=(1.0, 1.0), jitter=base.jitter / 2,
                                     stretch_range=base.stretch_range, **order)
        if getattr(pre, "kind", "") == "ts":  # multivariate series: the transfer-oriented augmentations
            from fewshot.train.series_augment import SeriesAugment

            self.aug = SeriesAugment(**cfg.extra.get("series_augment", {})) if cfg.augment is not False else None

    def inputs(self, idx: np.ndarray, step: int, rng: np.random.Generator) -> tuple[Any, torch.Tensor | None]:
        from fewshot.encoders.sequence import pack_batch
        from fewshot.sequences import augment_and_preprocess

        if self.views is None and self.pre.kind == "ts":
            arrays = [self.pre.apply(self.aug(self.data.items[i], rng) if self.aug else self.data.items[i])
                      for i in idx]
            return pack_batch(pad_channels(arrays)), None
        if self.views is None:
            arrays = [augment_and_preprocess(self.data.items[i], self.pre, self.aug, rng) for i in idx]
            return pack_batch(arrays), None
        vi = rng.integers(len(self.views), size=len(idx))
        arrays = [augment_and_preprocess(self.views[v][i], self.pre, self.light, rng) for v, i in zip(vi, idx)]
        return pack_batch(arrays), self.targets[torch.from_numpy(vi), torch.from_numpy(np.asarray(idx))]

    def embed(self, model: nn.Module, data: LabelledSet, batch: int = 256) -> np.ndarray:
        from fewshot.encoders.sequence import pack_batch

        arrays = [self.pre.apply(s, src) for s, src in zip(data.items, data.sources)]
        if self.pre.kind == "ts":
            arrays = pad_channels(arrays)
        return _eval_forward(model, [pack_batch(arrays[i:i + batch]) for i in range(0, len(arrays), batch)])


def drop_words(text: str, p: float, rng: np.random.Generator) -> str:
    """``text`` with each word dropped with probability ``p`` (at least one word is kept)."""
    words = text.split()
    keep = [w for w in words if rng.random() >= p]
    return " ".join(keep or words[:1])


class TextBatcher:
    """Text: the episode's strings (words dropped at random), then ``tokenize`` (the encoder's)."""

    def __init__(self, data: LabelledSet, cfg: Any, tokenize: Callable[[list[str]], Any] | None = None,
                 targets: torch.Tensor | None = None,
                 unlabelled: tuple[list[str], torch.Tensor] | None = None):
        self.data, self.tokenize, self.targets = data, tokenize or (lambda texts: texts), targets
        self.word_dropout = float(cfg.extra.get("word_dropout", 0.1)) if cfg.augment is not False else 0.0
        self.unlabelled = unlabelled
        self.n_unlabelled = int(cfg.extra.get("unlabelled_per_step", 0)) if unlabelled is not None else 0
        if self.n_unlabelled and targets is None:
            raise ValueError("unlabelled texts need teacher targets for the labelled ones too")

    def inputs(self, idx: np.ndarray, step: int, rng: np.random.Generator) -> tuple[Any, torch.Tensor | None]:
        texts = [self.data.items[int(i)] for i in idx]
        targets = None if self.targets is None else self.targets[torch.from_numpy(np.asarray(idx))]
        if self.n_unlabelled:
            more, more_targets = self.unlabelled
            pick = rng.choice(len(more), min(self.n_unlabelled, len(more)), replace=False)
            texts += [more[int(i)] for i in pick]
            targets = torch.cat([targets, more_targets[torch.from_numpy(pick)]])
        if self.word_dropout:
            texts = [drop_words(t, self.word_dropout, rng) for t in texts]
        return self.tokenize(texts), targets

    def embed(self, model: nn.Module, data: LabelledSet, batch: int = 256) -> np.ndarray:
        items = list(data.items)
        return _eval_forward(model, [self.tokenize(items[i:i + batch]) for i in range(0, len(items), batch)])


#: The batcher of each input kind.
BATCHERS: dict[str, type] = {"image": ImageBatcher, "sequence": SequenceBatcher, "text": TextBatcher}


def make_batcher(data: LabelledSet, cfg: Any, **kwargs: Any) -> Any:
    """The batcher registered for ``data.kind``, built on ``data``."""
    if data.kind not in BATCHERS:
        raise ValueError(f"no batcher for {data.kind!r} data; known kinds: {', '.join(BATCHERS)}")
    return BATCHERS[data.kind](data, cfg, **kwargs)


def episode_batch(batcher: Any, ep: Any, step: int, rng: np.random.Generator) -> Batch:
    """The examples of one episode (support first, class-major) as a :class:`Batch`."""
    idx = np.concatenate([ep.support.ravel(), ep.query.ravel()])
    ways, shots, queries = ep.ways, ep.support.shape[1], ep.query.shape[1]
    labels = torch.cat([torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat_interleave(queries)])
    x, targets = batcher.inputs(idx, step, rng)
    return Batch(x, labels, ways * shots, targets, list(ep.classes))
