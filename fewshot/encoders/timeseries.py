"""``ts-gru``: a channel-independent GRU for multivariate time series with any number of channels.

Why channel-independent: the data sets an encoder meets after training have other
channel counts and other meanings per channel (1 for GunPoint, 6 for BasicMotions,
12 for JapaneseVowels), so nothing learnt may depend on what a channel *is*. Every
channel of a series (the series standardised as a whole and resampled to a fixed
length by ``SequencePreprocess(kind="ts")``) goes through the same small network:
the channel is z-normalised, ``(value, first difference)`` -> two strided 1-D
convolutions (local shape, a quarter of the steps) -> a bidirectional GRU
(:class:`~fewshot.encoders.sequence.SequenceRNN`, attention pooling) -> a unit
vector of ``channel_dim``, followed by the channel's mean and standard deviation
relative to the whole series (two numbers, fixed weight): in multichannel
data the levels and energies of the channels are often the class (which vowel,
running or standing), and they stay comparable across data sets because the
series was standardised as a whole.

Why slots rather than one pooled vector: averaging the channel vectors would
throw away which channel did what, the main cue within a multichannel data set.
Channel ``c`` is added into slot ``c mod slots`` of a ``slots x (channel_dim + 2)``
embedding, so for up to ``slots`` channels the dot product of two embeddings is
the sum of per-channel similarities (series of one data set share their channel
order); more channels fold onto the slots and still embed. The embedding size is
fixed, as an index needs. In training batches that mix data sets, absent channels
arrive as NaN and add nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from fewshot.encoders.sequence import SequenceRNN


class ChannelSlots(nn.Module):
    """The channel-independent frame of the ts encoders: ``[B, T, C]`` -> ``[B, slots * width]``.

    Subclasses set ``slots`` and ``width`` and embed the present channels
    (:meth:`embed_channels`); channel ``c`` of a series is added into slot ``c mod slots``.
    """

    slots: int
    width: int
    name = "ts"

    @property
    def out_dim(self) -> int:
        return self.slots * self.width

    def embed_channels(self, x: torch.Tensor, row: torch.Tensor, chan: torch.Tensor) -> torch.Tensor:
        """``x [B, T, C]`` (NaN = absent channel) -> ``[len(row), width]`` for channel ``chan[i]`` of series ``row[i]``."""
        raise NotImplementedError

    def forward(self, x: PackedSequence | tuple[torch.Tensor, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(x, PackedSequence):
            x = pad_packed_sequence(x, batch_first=True)
        if isinstance(x, tuple):
            x, lengths = x
            if int(lengths.min()) != x.shape[1]:
                raise ValueError(f"{self.name} reads series resampled to one length (SequencePreprocess kind 'ts')")
        b = x.shape[0]
        present = ~torch.isnan(x[:, 0, :])  # [B, C]: training batches mix data sets, NaN pads absent channels
        row, chan = present.nonzero(as_tuple=True)
        e = self.embed_channels(x, row, chan)
        cell = row * self.slots + chan % self.slots
        out = torch.zeros(b * self.slots, self.width, dtype=e.dtype, device=e.device).index_add_(0, cell, e)
        return out.reshape(b, self.out_dim)


class ChannelSlotGRU(ChannelSlots):
    """``[B, T, C]`` (a PackedSequence of equal lengths, or ``(padded, lengths)``) -> ``[B, slots * (channel_dim + 2)]``."""

    name = "ts-gru"

    def __init__(self, conv: int = 32, kernel: int = 7, hidden: int = 64, channel_dim: int = 64, slots: int = 12,
                 dropout: float = 0.1, stat_weight: float = 1.0):
        super().__init__()
        if slots < 1 or channel_dim < 1:
            raise ValueError("slots and channel_dim must be >= 1")
        self.slots, self.channel_dim = slots, channel_dim
        self.conv = nn.Sequential(nn.Conv1d(2, conv, kernel, stride=2, padding=kernel // 2), nn.GELU(),
                                  nn.Conv1d(conv, conv, 5, stride=2, padding=2), nn.GELU())
        self.rnn = SequenceRNN(conv, hidden=hidden, layers=1, cell="gru", bidirectional=True, pooling="attention",
                               dim=0)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(self.rnn.out_dim, channel_dim)
        self.stat_weight = float(stat_weight)
        self.width = channel_dim + 2

    def channel_embeddings(self, v: torch.Tensor) -> torch.Tensor:
        """Single channels ``[N, T]`` -> ``[N, channel_dim + 2]`` (the same weights for every channel).

        The shape part is a unit vector computed from the z-normalised channel; the
        last two numbers are the channel's mean and standard deviation (relative to
        the whole series, as preprocessed), times ``stat_weight`` (fixed: in training,
        mostly univariate, they are constant and a learned weight would get no signal).
        """
        mu, sd = v.mean(1, keepdim=True), v.std(1, unbiased=False, keepdim=True)
        z = ((v - mu) / sd.clamp_min(1e-6))[:, None, :]
        dz = torch.cat([torch.zeros_like(z[..., :1]), z[..., 1:] - z[..., :-1]], 2)
        h = self.conv(torch.cat([z, dz], 1)).transpose(1, 2)  # [N, T / 4, conv]
        lengths = torch.full((len(h),), h.shape[1], dtype=torch.int64, device=h.device)
        shape = F.normalize(self.proj(self.drop(self.rnn((h, lengths)))), dim=1)
        return torch.cat([shape, torch.cat([mu, sd], 1) * self.stat_weight], 1)

    def embed_channels(self, x: torch.Tensor, row: torch.Tensor, chan: torch.Tensor) -> torch.Tensor:
        return self.channel_embeddings(x.permute(0, 2, 1)[row, chan])


#: The architecture of the shipped ts-gru (ChannelSlotGRU's defaults).
TS_ARCH = {"conv": 32, "kernel": 7, "hidden": 64, "channel_dim": 64, "slots": 12, "dropout": 0.1, "stat_weight": 1.0}
#: The length every series is resampled to (``SequencePreprocess(kind="ts", steps=...)``).
TS_STEPS = 128


def new_ts_encoder(name: str = "ts-gru", steps: int = TS_STEPS, arch: str = "ts-gru", **arch_kwargs):
    """A fresh ``ts-gru`` (random init) or ``ts-rocket`` (unfitted) encoder, any channel count, to train or compare."""
    from fewshot.encoders.sequence import TorchSequenceEncoder, build_sequence_arch
    from fewshot.sequences import SequencePreprocess

    if arch == "ts-rocket":
        from fewshot.encoders.ts_rocket import TS_ROCKET_ARCH

        kw = {**TS_ROCKET_ARCH, "steps": steps, **arch_kwargs}
        pre = SequencePreprocess(kind="ts", n_features=0, steps=steps, standardise=False)  # it keeps the level
    else:
        kw = {**TS_ARCH, **arch_kwargs}  # every value written out: the file does not depend on today's defaults
        pre = SequencePreprocess(kind="ts", n_features=0, steps=steps)
    module, dim = build_sequence_arch(arch, **kw)
    return TorchSequenceEncoder(name, module, dim, pre, arch, kw, weights_source="random init")
