"""``ts-rocket``: MiniRocket's fixed convolutions on every channel, weighted by a metric learnt for new classes.

Why not a trained network: a GRU trained on the aeon problems memorised their
classes and transferred worse to a problem it never saw than the same GRU left
random (benchmarks/results/TIMESERIES.md). Random-kernel features are what
transfers in time-series classification (Dempster et al., MiniRocket, 2021), so
the shape part here is fixed and only a small metric on top is learnt:

* **Features of one channel** (z-normalised, resampled to ``steps``): the 84
  MiniRocket kernels (length 9, weights -1 and three 2s, so each sums to 0) at a
  few ``dilations``; for each kernel and dilation the *proportion of positive
  values* (PPV) of the convolution minus a bias, at ``len(quantiles)`` biases. The
  biases are quantiles of the convolution outputs over the training problems'
  channels (:meth:`ChannelSlotPPV.fit_statistics`: no labels used), stored in the
  encoder file, so a new data set needs no fitting.
* **Level and scale**, which z-normalising drops and which are often the class in
  multichannel data: the channel's mean and std relative to the whole series
  (series standardised as a whole, as ``ts-gru`` does), and its *absolute*
  ``asinh(mean)`` and ``log(std)``, standardised by their spread over the training
  problems. They are clipped only at +-``abs_clip`` = 50 (a constant channel's ``log(0 + 1e-6)``):
  a problem whose level lies far outside the training problems' (UnitTest: 13-15 spreads
  above their mean) keeps its differences (TIMESERIES_MODEL_CARD.md has the numbers).
* **The learnt metric** (trained with metric losses: ``fewshot.train.timeseries``):
  one weight per (dilation, bias quantile) group and one per kernel on the PPV
  vector (which is then L2-normalised), and one per level/scale number. 118
  numbers in the shipped setting: too few to memorise a class, enough to say which
  scales and statistics separate classes in general.

Channels go into ``slots`` as in ``ts-gru`` (:class:`~fewshot.encoders.timeseries.ChannelSlots`).
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fewshot.encoders.timeseries import ChannelSlots

#: MiniRocket's kernels: length 9, the 84 ways to place three weights of 2 among six of -1.
N_KERNELS = 84


def minirocket_kernels() -> torch.Tensor:
    """``[84, 1, 9]``: every kernel sums to 0, so a constant input gives 0 (PPV is shift-invariant)."""
    k = torch.full((N_KERNELS, 9), -1.0)
    for i, pos in enumerate(itertools.combinations(range(9), 3)):
        k[i, list(pos)] = 2.0
    return k[:, None, :]


class ChannelSlotPPV(ChannelSlots):
    """``[B, steps, C]`` resampled raw series (NaN = absent channel) -> ``[B, slots * width]``."""

    name = "ts-rocket"

    def __init__(self, steps: int = 128, dilations: Sequence[int] = (1, 2, 3, 5, 8, 12),
                 quantiles: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), slots: int = 12,
                 stat_weight: float = 1.0, abs_weight: float = 0.5, abs_clip: float = 50.0):
        super().__init__()
        if slots < 1 or not dilations or not quantiles or min(dilations) < 1:
            raise ValueError("ts-rocket needs slots >= 1, dilations >= 1 and at least one bias quantile")
        if not all(0 < q < 1 for q in quantiles) or stat_weight <= 0 or abs_weight <= 0:
            raise ValueError("quantiles must lie in (0, 1); stat_weight and abs_weight must be > 0")
        self.steps, self.dilations, self.quantiles = int(steps), [int(d) for d in dilations], list(quantiles)
        self.slots, self.abs_clip = slots, float(abs_clip)
        self.n_ppv = N_KERNELS * len(self.dilations) * len(self.quantiles)
        self.width = self.n_ppv + 4
        self.register_buffer("kernels", minirocket_kernels())
        self.register_buffer("biases", torch.zeros(len(self.dilations), N_KERNELS, len(self.quantiles)))
        self.register_buffer("abs_centre", torch.zeros(2))
        self.register_buffer("abs_scale", torch.ones(2))
        # the learnt metric (log-weights, so a weight never changes sign)
        self.log_group = nn.Parameter(torch.zeros(len(self.dilations), len(self.quantiles)))
        self.log_kernel = nn.Parameter(torch.zeros(N_KERNELS))
        self.log_stat = nn.Parameter(torch.full((2,), math.log(stat_weight)))
        self.log_abs = nn.Parameter(torch.full((2,), math.log(abs_weight)))

    # -- per-channel inputs -------------------------------------------------------------------
    @staticmethod
    def channel_inputs(x: torch.Tensor, row: torch.Tensor, chan: torch.Tensor, eps: float = 1e-6
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (z-normalised channels ``[n, T]``, relative (mean, std) ``[n, 2]``, absolute
        (asinh mean, log std) ``[n, 2]``) for channel ``chan[i]`` of series ``row[i]``."""
        x = x.double()  # raw values may be large (1e4) and nearly constant: float64 for the moments
        n_vals = (~torch.isnan(x)).sum((1, 2)).clamp_min(1)
        level = torch.nansum(x, (1, 2)) / n_vals
        dev = torch.nan_to_num(x - level[:, None, None])
        spread = (dev.pow(2).sum((1, 2)) / n_vals).sqrt()
        spread = torch.where(spread < eps, torch.ones_like(spread), spread)  # a constant series -> zeros
        v = x.permute(0, 2, 1)[row, chan]  # [n, T], raw
        s = (v - level[row, None]) / spread[row, None]  # standardised as a whole series
        mu, sd = s.mean(1, keepdim=True), s.std(1, unbiased=False, keepdim=True)
        z = (s - mu) / sd.clamp_min(eps)
        absolute = torch.stack([torch.asinh(v.mean(1)), torch.log(v.std(1, unbiased=False) + eps)], 1)
        return z.float(), torch.cat([mu, sd], 1).float(), absolute.float()

    @torch.no_grad()
    def convolve(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``[n, T]`` -> per dilation ``[n, 84, T]`` (zero padding keeps the length)."""
        return [F.conv1d(z[:, None], self.kernels, padding=4 * d, dilation=d) for d in self.dilations]

    @torch.no_grad()
    def ppv(self, z: torch.Tensor, chunk: int = 32) -> torch.Tensor:
        """``[n, T]`` -> ``[n, dilations, 84, quantiles]``: the share of positions where conv > bias.

        Memory-bound: one bias at a time, uint8 sums and chunks of 32 channels (so a chunk's
        convolutions stay in cache) made it 2.5x, 1.2x and 1.6x faster than the plain version.
        """
        out = []
        for i in range(0, len(z), chunk):
            per_d = [torch.stack([(c > b[None, :, j, None]).to(torch.uint8).sum(2, dtype=torch.int32)
                                  for j in range(b.shape[1])], -1)
                     for c, b in zip(self.convolve(z[i:i + chunk]), self.biases)]
            out.append(torch.stack(per_d, 1).float() / z.shape[1])
        return torch.cat(out) if out else z.new_zeros((0, len(self.dilations), N_KERNELS, len(self.quantiles)))

    @torch.no_grad()
    def fit_statistics(self, series: Sequence[np.ndarray], max_channels: int = 2000, seed: int = 0) -> None:
        """Set the PPV biases and the absolute stats' spread from training series (``[steps, C]``
        each, as preprocessed; no labels): bias = the quantiles of every kernel's outputs over
        up to ``max_channels`` random channels; spread = mean and std of the absolute stats."""
        zs, absolute = [], []
        for a in series:
            x = torch.as_tensor(np.asarray(a, np.float32))[None]
            row, chan = torch.zeros(x.shape[2], dtype=torch.int64), torch.arange(x.shape[2])
            z, _, ab = self.channel_inputs(x, row, chan)
            zs.append(z)
            absolute.append(ab)
        z, ab = torch.cat(zs), torch.cat(absolute)
        z = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:max_channels]]
        q = torch.tensor(self.quantiles)
        for i, c in enumerate(self.convolve(z)):
            self.biases[i] = torch.quantile(c.transpose(0, 1).reshape(N_KERNELS, -1), q, dim=1).T
        self.abs_centre.copy_(ab.mean(0))
        self.abs_scale.copy_(ab.std(0).clamp_min(1e-6))

    # -- the embedding -----------------------------------------------------------------------
    def embed_channels(self, x: torch.Tensor, row: torch.Tensor, chan: torch.Tensor) -> torch.Tensor:
        z, rel, absolute = self.channel_inputs(x, row, chan)
        f = self.ppv(z)
        w = self.log_group.exp()[:, None, :] * self.log_kernel.exp()[None, :, None]
        f = F.normalize((f * w).reshape(len(f), -1), dim=1)
        absz = ((absolute - self.abs_centre) / self.abs_scale).clamp(-self.abs_clip, self.abs_clip)
        return torch.cat([f, rel * self.log_stat.exp(), absz * self.log_abs.exp()], 1)


#: The architecture of the shipped ts-rocket (ChannelSlotPPV's defaults, written out).
TS_ROCKET_ARCH = {"steps": 128, "dilations": [1, 2, 3, 5, 8, 12], "quantiles": [0.1, 0.3, 0.5, 0.7, 0.9],
                  "slots": 12, "stat_weight": 1.0, "abs_weight": 0.5, "abs_clip": 50.0}
