"""Where weights come from, resolved in one place.

* package data: encoders this project trains ship inside ``fewshot/encoders/weights``;
* ImageNet: torchvision's own weights API and cache (``~/.cache/torch``), downloaded
  once on first use;
* a local file: an encoder file written by ``Encoder.save`` or a plain state dict.

Every file is read with ``torch.load(..., weights_only=True)``: a pickle that
would run code is refused, never executed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import torch

from fewshot.errors import EncoderError


def packaged_path(filename: str) -> Path:
    """Path of a weights file shipped as package data."""
    p = Path(str(resources.files("fewshot.encoders") / "weights" / filename))
    if not p.exists():
        raise EncoderError(f"packaged weights {filename} are missing from this installation; reinstall fewshot")
    return p


def load_weights_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes one EncoderError."""
    path = Path(path)
    if path.is_dir():
        raise EncoderError(f"{path} is a directory, not a weights file; pass the .pt file inside it")
    if not path.is_file():
        raise EncoderError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise on stderr before our one error line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a refused pickle, a truncated zip, not a torch file, ...
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            raise EncoderError(f"refused to load {path}: it is not a plain weights file "
                               "(it holds objects that would run code when unpickled)") from None
        raise EncoderError(f"cannot read weights file {path}: {type(exc).__name__}: {str(exc)[:160]}") from None


class WeightsUnavailableError(EncoderError):
    """Downloadable weights could not be had (offline, proxy, disk full).

    The way out is to name other weights, which a library caller spells
    ``weights='none'`` and a CLI user ``--weights none``: ``str()`` gives the
    library's spelling, ``cli_message`` the command line's.
    """

    def __init__(self, arch: str, cause: str):
        self.arch, self.cause = arch, cause
        super().__init__(self._text("weights='none' or weights=PATH"))

    def _text(self, alternatives: str) -> str:
        return (f"could not get ImageNet weights for {self.arch} ({self.cause}); connect once to fill "
                f"torch's cache, or use {alternatives} (random weights, or a local state dict)")

    @property
    def cli_message(self) -> str:
        return self._text("--weights none or --weights PATH")


def imagenet_state_dict(arch: str) -> dict:
    """ImageNet weights for a torchvision architecture, through torchvision's cache."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return enum.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # offline, proxy, disk full
        raise WeightsUnavailableError(arch, f"{type(exc).__name__}: {str(exc)[:120]}") from None


@contextlib.contextmanager
def seeded_init(seed: int | str) -> Iterator[None]:
    """Run a module's random initialisation from ``seed`` (a string, e.g. the arch name, is hashed).

    Untrained weights (``weights='none'``) must be the same in every process, or an
    index made with them could never accept vectors from a second process (the
    fingerprints would differ). The global RNG is restored afterwards, so loading an
    encoder does not disturb a caller's own seeding.
    """
    if isinstance(seed, str):
        seed = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def imagenet_preprocess_params(arch: str) -> dict:
    """The crop, resize, mean and std of the weights' own transforms (no download needed)."""
    import torchvision

    t = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    return {"size": int(t.crop_size[0]), "resize_size": int(t.resize_size[0]),
            "mean": tuple(float(v) for v in t.mean), "std": tuple(float(v) for v in t.std),
            "interpolation": t.interpolation.value}
