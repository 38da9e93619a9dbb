"""RNN sequence encoders: GRU/LSTM, stacked, optionally bidirectional, pooled over time.

Variable lengths are handled by packing: a batch travels as a PackedSequence
(the lengths go with it), padding never reaches a used output of the recurrence
and pooling masks it out, so a sequence embeds the same alone or in a batch
with longer ones. Nothing is truncated; inputs longer
than the preprocessing's ``max_length`` are refused with an error.

:class:`TorchSequenceEncoder` is the sequence kind of
:class:`~fewshot.encoders.base.TorchEncoder` (config, fingerprint, the prefetching
``embed`` loop and ``save`` are shared) and writes the same encoder-file format
with ``config["input_kind"] = "sequence"``.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from fewshot.encoders.base import ENCODER_FILE_FORMAT, TorchEncoder, fingerprint_module  # noqa: F401 (old import path)
from fewshot.errors import EncoderError, InputError
from fewshot.inputs import SEQUENCE_SUFFIXES, InputItem, expand_inputs
from fewshot.sequences import SequencePreprocess, load_sequence, load_sequences

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
POOLINGS = ("attention", "mean", "last")


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of a padded batch ``[B, T, F]`` within its own length (padding stays at the end)."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))


class SequenceRNN(nn.Module):
    """Input projection -> stacked (bi)GRU/LSTM over a packed batch -> pooling over time -> linear.

    ``pooling="attention"``: a learned softmax weighting of the time steps;
    ``"mean"``: the masked mean; ``"last"``: the final state of each direction
    (the forward one at the last step, the backward one at the first). ``dim``
    (0 = none) adds a linear projection to the embedding size.

    Each direction of each layer is its own unidirectional RNN run over the
    padded batch; the backward one reads every sequence reversed *within its
    length*, so padding only ever follows the real steps and never reaches an
    output that is used: the result equals a packed ``nn.GRU``/``nn.LSTM`` (the
    tests check this), and on a CPU it trains several times faster, since
    autograd through a packed RNN walks one time step at a time.
    """

    def __init__(self, in_features: int, hidden: int = 128, layers: int = 2, cell: str = "gru",
                 bidirectional: bool = True, pooling: str = "attention", dim: int = 128,
                 input_proj: int = 0, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown RNN cell {cell!r}; choose {', '.join(CELLS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose {', '.join(POOLINGS)}")
        if layers < 1 or hidden < 1:
            raise ValueError("layers and hidden must be >= 1")
        self.cell, self.pooling, self.bidirectional = cell, pooling, bidirectional
        self.proj_in = nn.Linear(in_features, input_proj) if input_proj else None
        width = hidden * (2 if bidirectional else 1)
        sizes = [input_proj or in_features] + [width] * (layers - 1)
        self.fwd = nn.ModuleList([CELLS[cell](n, hidden, batch_first=True) for n in sizes])
        self.bwd = nn.ModuleList([CELLS[cell](n, hidden, batch_first=True) for n in sizes]) \
            if bidirectional else None
        self.dropout = nn.Dropout(dropout) if dropout and layers > 1 else None
        self.att = nn.Sequential(nn.Linear(width, width // 2), nn.Tanh(), nn.Linear(width // 2, 1)) \
            if pooling == "attention" else None
        self.proj_out = nn.Linear(width, dim) if dim else None
        self.out_dim = dim or width

    def run(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-step outputs ``[B, T, width]`` of the stacked RNN (valid where ``t < length``)."""
        if self.proj_in is not None:
            x = torch.relu(self.proj_in(x))
        for i, f in enumerate(self.fwd):
            if i and self.dropout is not None:
                x = self.dropout(x)
            out = f(x)[0]
            if self.bwd is not None:
                back = reverse_within_length(self.bwd[i](reverse_within_length(x, lengths))[0], lengths)
                out = torch.cat([out, back], 2)
            x = out
        return x

    def forward(self, x: PackedSequence | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """A PackedSequence (or ``(padded [B, T, F], lengths [B])``) -> embeddings ``[B, out_dim]``."""
        pad, lengths = pad_packed_sequence(x, batch_first=True) if isinstance(x, PackedSequence) else x
        lengths = lengths.to(pad.device, torch.int64)  # pad_packed_sequence gives CPU lengths
        out = self.run(pad, lengths)
        if self.pooling == "last":
            h = out.shape[2] // (2 if self.bidirectional else 1)
            last = out[torch.arange(len(out), device=out.device), lengths - 1]
            pooled = torch.cat([last[:, :h], out[:, 0, h:]], 1) if self.bidirectional else last
        else:
            mask = torch.arange(out.shape[1], device=out.device)[None, :] < lengths[:, None]
            if self.pooling == "mean":
                pooled = (out * mask[..., None]).sum(1) / lengths[:, None].to(out.dtype)
            else:
                w = self.att(out).squeeze(-1).masked_fill(~mask, float("-inf"))
                pooled = (torch.softmax(w, 1)[..., None] * out).sum(1)
        return self.proj_out(pooled) if self.proj_out is not None else pooled


def build_sequence_arch(arch: str, **kwargs) -> tuple[nn.Module, int]:
    """The sequence architectures by name: ``rnn`` (the family above), ``ts-gru`` (encoders/timeseries.py),
    ``ts-rocket`` (encoders/ts_rocket.py)."""
    if arch == "ts-gru":
        from fewshot.encoders.timeseries import ChannelSlotGRU

        m = ChannelSlotGRU(**kwargs)
    elif arch == "ts-rocket":
        from fewshot.encoders.ts_rocket import ChannelSlotPPV

        m = ChannelSlotPPV(**kwargs)
    elif arch == "rnn":
        m = SequenceRNN(**kwargs)
    else:
        raise EncoderError(f"unknown sequence architecture {arch!r}; known: rnn, ts-gru, ts-rocket")
    return m, m.out_dim


def pack_batch(arrays: Sequence[np.ndarray]) -> PackedSequence:
    """Preprocessed float32 ``[T_i, F]`` arrays of unequal lengths -> one PackedSequence."""
    lens = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
    if (lens < 1).any():
        raise InputError("cannot pack an empty sequence")
    return pack_rows(np.concatenate(arrays), lens)


def pack_rows(rows: np.ndarray, lens: np.ndarray) -> PackedSequence:
    """The rows of several sequences, concatenated, and their lengths -> one PackedSequence.

    Exactly what ``pack_padded_sequence(padded, lens, batch_first=True, enforce_sorted=False)``
    returns (the same sort of the lengths, the same data in the same order), built with
    one scatter of the rows: no padded copy of the batch, no re-ordering of it.
    """
    lens = np.asarray(lens, np.int64)
    if (lens < 1).any():
        raise InputError("cannot pack an empty sequence")
    lengths = torch.from_numpy(lens)
    _, sorted_indices = torch.sort(lengths, descending=True)  # as pack_padded_sequence sorts
    n_seq, t_max = len(lens), int(lens.max())
    rank = np.empty(n_seq, np.int64)
    rank[sorted_indices.numpy()] = np.arange(n_seq)  # place of each sequence within a time step
    batch_sizes = n_seq - np.cumsum(np.bincount(lens, minlength=t_max + 1))[:t_max]  # sequences longer than t
    step_start = np.cumsum(batch_sizes) - batch_sizes
    starts = np.cumsum(lens) - lens
    seq = np.repeat(np.arange(n_seq), lens)
    t = np.arange(len(rows)) - starts[seq]
    data = np.empty((len(rows), rows.shape[1]), np.float32)
    data[step_start[t] + rank[seq]] = rows
    return PackedSequence(torch.from_numpy(data), torch.from_numpy(batch_sizes), sorted_indices)


_PATH = type(Path())


def _regular_file_items(inputs: Sequence[Any]) -> list[InputItem] | None:
    """The items ``expand_inputs`` makes of paths that are all regular files, with one ``stat`` each.

    ``expand_inputs`` asks three questions of every path (is_dir, exists, is_file),
    on the main thread before the first batch; for thousands of small stroke files
    that is a visible share of the time. Anything else (a folder, a missing file, an
    array) gives None, and ``expand_inputs`` handles the inputs (and says what is wrong).
    """
    items = []
    for x in inputs:
        if not isinstance(x, (str, os.PathLike)):
            return None
        p = x if type(x) is _PATH else Path(x)  # a Path is kept: Path(path) costs a new parse
        name = str(p)
        try:
            if not stat.S_ISREG(os.stat(name).st_mode):
                return None
        except (OSError, ValueError):
            return None
        items.append(InputItem(p, name))
    return items


class TorchSequenceEncoder(TorchEncoder):
    """A sequence encoder: read -> preprocess -> pack -> RNN forward in batches -> (centre) -> float32.

    Reading and preprocessing of the next batch run in a worker thread while the
    current batch goes through the RNN (torch releases the GIL), so file parsing
    costs little next to the forward pass.
    """

    input_kind = "sequence"
    unit = "seq"
    preprocess_type = SequencePreprocess
    build_module = staticmethod(build_sequence_arch)
    default_arch = "rnn"

    def __init__(self, name: str, module: nn.Module, dim: int, preprocess: SequencePreprocess,
                 arch: str = "rnn", arch_kwargs: dict | None = None, weights_source: str = "",
                 centre: np.ndarray | None = None, temperature: float | None = None, threads: int = 0):
        super().__init__(name, module, dim, preprocess, arch, arch_kwargs, weights_source, centre, temperature,
                         threads)

    def _items(self, inputs: Any) -> list[InputItem]:
        if isinstance(inputs, list) and all(isinstance(i, InputItem) for i in inputs):
            return inputs
        if isinstance(inputs, (list, tuple)) and (files := _regular_file_items(inputs)) is not None:
            return files
        if isinstance(inputs, (list, tuple)) or not isinstance(inputs, np.ndarray):
            return expand_inputs(inputs, SEQUENCE_SUFFIXES)
        return expand_inputs([inputs], SEQUENCE_SUFFIXES)  # one [T, F] array is one sequence

    def prepare(self, item: InputItem) -> np.ndarray:
        """One input -> the preprocessed float32 ``[T, in_features]`` the RNN reads."""
        return self.preprocess.apply(load_sequence(item), item.name)

    def prepare_batch(self, items: Sequence[InputItem]) -> PackedSequence:
        """Read (stroke files parsed together), preprocess (all at once) and pack a batch of inputs."""
        rows, lens = self.preprocess.apply_batch(load_sequences(items), [it.name for it in items])
        return pack_rows(rows, lens)

    @torch.inference_mode()
    def forward(self, x: PackedSequence) -> torch.Tensor:
        """The model's computation on an already packed batch (see :func:`pack_batch`), no centring."""
        return self.module(x).float()


def new_sequence_encoder(name: str, preprocess: SequencePreprocess, **arch_kwargs) -> TorchSequenceEncoder:
    """A randomly initialised RNN encoder (to train, or to test with)."""
    kw = {"in_features": preprocess.in_features, **arch_kwargs}
    module, dim = build_sequence_arch("rnn", **kw)
    return TorchSequenceEncoder(name, module, dim, preprocess, "rnn", kw, weights_source="random init")
