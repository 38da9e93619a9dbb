"""Where training runs: ``cpu``, ``cuda`` (``cuda:N``) or ``auto``, and moving a batch or a state there.

The loop keeps everything that leaves it on the CPU: checkpoints hold CPU tensors
(a run trained on a GPU resumes or exports on a machine without one), validation
embeddings come back as numpy, and the model is handed back on the CPU. Only the
model, the loss terms and each step's batch live on the training device; the
batchers build batches on the CPU (their augmentations are seeded per step there,
so the episodes and their warps do not depend on the device).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.nn.utils.rnn import PackedSequence

from fewshot.errors import InputError


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (a GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; checked here."""
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but torch sees no CUDA GPU here; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {name!r} is not supported; use cpu, cuda, cuda:N or auto")
    return dev


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj`` with every tensor in it moved to ``device``: tensors, packed sequences, dicts, lists,
    tuples and dataclasses (a tokenizer's output, a batch, an optimizer state); anything else as is."""
    if isinstance(obj, (torch.Tensor, PackedSequence)):
        return obj.to(device)
    if isinstance(obj, dict):
        moved = {k: to_device(v, device) for k, v in obj.items()}
        return moved if type(obj) is dict else type(obj)(moved)  # an OrderedDict state dict stays one
    if isinstance(obj, (list, tuple)) and not isinstance(obj, str):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_device(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def cpu_state(state: Any) -> Any:
    """A state dict (or a checkpoint of them) with CPU tensors: what the loop writes to disk."""
    return to_device(state, "cpu")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")
