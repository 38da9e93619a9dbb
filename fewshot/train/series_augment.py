"""Augmentation of raw multivariate time series ``[T, C]`` for training encoders that must transfer.

Each transform keeps the label of every UCR/UEA-style problem we train on and
removes a nuisance the encoder should not rely on when it meets a new data set:

* **window slicing**: a random crop of ``slice_range`` of the length (where in the
  recording an event starts varies between data sets);
* **time warping**: a smooth monotone re-timing (random speeds at ``warp_knots``
  knots, log-uniform in ``1/warp, warp``), so local speed is not a class cue;
* **scaling**: one random factor per channel (amplitude units differ);
* **jitter**: Gaussian noise, ``jitter`` times each channel's standard deviation;
* **channel dropout**: each channel of a multichannel series replaced by a
  constant with probability ``channel_dropout`` (at least one kept), so the
  encoder does not lean on one sensor.

All draws come from the caller's generator (the training loop seeds one per step).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SeriesAugment:
    """Random label-preserving views of a raw series ``[T, C]`` (see the module docstring)."""

    jitter: float = 0.03
    scale_range: tuple[float, float] = (0.8, 1.25)
    warp: float = 1.5  # largest local speed-up (and 1/warp the largest slow-down)
    warp_knots: int = 4
    slice_range: tuple[float, float] = (0.8, 1.0)
    channel_dropout: float = 0.2

    def __call__(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = np.asarray(a, np.float64)
        a = self.window_slice(a, rng)
        a = self.time_warp(a, rng)
        sd = np.maximum(a.std(0), 1e-6)
        a = a * rng.uniform(*self.scale_range, size=(1, a.shape[1]))
        if self.jitter:
            a = a + rng.normal(0.0, 1.0, a.shape) * self.jitter * sd
        return self.drop_channels(a, rng).astype(np.float32)

    def window_slice(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = max(2, int(round(len(a) * rng.uniform(*self.slice_range))))
        if n >= len(a):
            return a
        start = int(rng.integers(0, len(a) - n + 1))
        return a[start:start + n]

    def time_warp(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t = len(a)
        if t < 3 or self.warp <= 1:
            return a
        speeds = np.exp(rng.uniform(-np.log(self.warp), np.log(self.warp), self.warp_knots + 1))
        speed = np.interp(np.linspace(0, self.warp_knots, t), np.arange(self.warp_knots + 1), speeds)
        pos = np.concatenate([[0.0], np.cumsum(speed[1:])])
        pos *= (t - 1) / pos[-1]  # monotone, from 0 to t-1
        return np.stack([np.interp(pos, np.arange(t), a[:, j]) for j in range(a.shape[1])], 1)

    def drop_channels(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = a.shape[1]
        if c < 2 or not self.channel_dropout:
            return a
        drop = rng.random(c) < self.channel_dropout
        if drop.all():
            drop[rng.integers(c)] = False
        a = a.copy()
        a[:, drop] = a[:, drop].mean(0)  # constant: standardises to zeros
        return a
