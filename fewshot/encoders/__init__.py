"""A small registry of named encoders, in the manner of timm and torchvision.

    >>> from fewshot import encoders
    >>> [e.name for e in encoders.available()]
    >>> enc = encoders.load("omniglot-conv4")          # shipped, no download
    >>> enc = encoders.load("resnet18", weights="none")  # random init
    >>> enc = encoders.load("runs/my_encoder.pt")       # a file written by Encoder.save

Each entry is a short builder function; where weights come from is decided in
:mod:`fewshot.encoders.weights`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fewshot.encoders.base import ENCODER_FILE_FORMAT, Encoder, TorchImageEncoder
from fewshot.encoders.preprocess import ImagePreprocess
from fewshot.errors import EncoderError

DEFAULT_IMAGE_ENCODER = "omniglot-conv4"


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    input_kind: str
    dim: int
    weights: str  # where the default weights come from, in words
    description: str
    builder: Callable[..., Encoder]

    def to_dict(self) -> dict:
        return {"name": self.name, "input_kind": self.input_kind, "dim": self.dim,
                "weights": self.weights, "description": self.description}


_REGISTRY: dict[str, EncoderSpec] = {}


def register(name: str, *, input_kind: str, dim: int, weights: str, description: str):
    """Decorator: register ``builder(weights=None, **kw) -> Encoder`` under ``name``."""
    def deco(builder: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _REGISTRY[name] = EncoderSpec(name, input_kind, dim, weights, description, builder)
        return builder
    return deco


def available() -> list[EncoderSpec]:
    """Registered encoders, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def from_file(path: str | os.PathLike, name: str | None = None) -> Encoder:
    """Rebuild an encoder from a file written by ``Encoder.save`` (weights_only-safe)."""
    from fewshot.encoders.archs import build_arch
    from fewshot.encoders.weights import load_weights_file

    payload = load_weights_file(path)
    if not (isinstance(payload, dict) and isinstance(payload.get("config"), dict)
            and isinstance(payload.get("state_dict"), dict)
            and payload["config"].get("format") == ENCODER_FILE_FORMAT):
        raise EncoderError(f"{path} is not a fewshot encoder file (a dict with 'config' and 'state_dict'); "
                           "to use a torchvision state dict, pass it as weights=PATH with a named encoder")
    cfg = payload["config"]
    kind = cfg.get("input_kind", "image")
    if kind == "sequence":
        from fewshot.encoders.sequence import sequence_encoder_from_payload

        return sequence_encoder_from_payload(payload, name or cfg.get("name") or Path(path).stem, str(path))
    try:
        module, dim = build_arch(cfg["arch"], **cfg.get("arch_kwargs", {}))
        module.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise EncoderError(f"{path}: weights do not fit architecture {cfg.get('arch')!r} ({str(exc)[:160]})") from None
    enc = TorchImageEncoder(name or cfg.get("name") or Path(path).stem, module, dim,
                            ImagePreprocess.from_dict(cfg["preprocess"]), cfg["arch"], cfg.get("arch_kwargs"),
                            weights_source=str(path), centre=cfg.get("centre"),
                            temperature=cfg.get("temperature"), tta_shift=int(cfg.get("tta_shift", 0)))
    enc.encoder_file = str(path)
    return enc


def load(name_or_path: str | os.PathLike | Encoder = DEFAULT_IMAGE_ENCODER, weights: str | None = None,
         **kwargs) -> Encoder:
    """An encoder by registered name, or from an encoder file path; an Encoder passes through."""
    if isinstance(name_or_path, Encoder) and not isinstance(name_or_path, (str, os.PathLike)):
        return name_or_path
    key = str(name_or_path)
    if key in _REGISTRY:
        return _REGISTRY[key].builder(weights=weights, **kwargs)
    p = Path(key).expanduser()
    if p.exists() or os.sep in key or key.endswith(".pt"):
        if weights is not None:
            raise EncoderError("weights= applies to a named encoder, not to an encoder file")
        return from_file(p)
    raise EncoderError(f"unknown encoder {key!r}; `fewshot encoders` lists the names "
                       f"({', '.join(sorted(_REGISTRY))}), or pass a path to an encoder file")


# Register the built-in families (import for their side effect).
from fewshot.encoders import builtin  # noqa: E402,F401
from fewshot.encoders import sequence_builtin  # noqa: E402,F401

__all__ = ["Encoder", "EncoderSpec", "TorchImageEncoder", "ImagePreprocess", "available", "load",
           "from_file", "register", "DEFAULT_IMAGE_ENCODER"]
