"""A small registry of named encoders, in the manner of timm and torchvision.

    >>> from fewshot import encoders
    >>> [e.name for e in encoders.available()]
    >>> enc = encoders.load("omniglot-conv4")          # shipped, no download
    >>> enc = encoders.load("resnet18", weights="none")  # random init (seeded: the same in every process)
    >>> enc = encoders.load("runs/my_encoder.pt")       # a file written by Encoder.save
    >>> enc = encoders.resolve(None, kind="sequence")   # the default for an input kind

The registry itself is :mod:`fewshot.encoders.registry`; this package only
re-exports it and imports the built-in families for their registrations. Where
weights come from is decided in :mod:`fewshot.encoders.weights`.
"""
from __future__ import annotations

from fewshot.encoders.base import Encoder, TorchEncoder, TorchImageEncoder
from fewshot.encoders.files import atomic_torch_save
from fewshot.encoders.preprocess import ImagePreprocess
from fewshot.encoders.registry import (DEFAULT_IMAGE_ENCODER, DEFAULTS, EncoderSpec, available, default_for,
                                       from_file, load, manifest_entries, register, release_of, resolve,
                                       resolve_recorded, split_version, version_status, versions)

# Register the built-in families (imported for their side effect).
from fewshot.encoders import builtin  # noqa: E402,F401  isort: skip
from fewshot.encoders import sequence_builtin  # noqa: E402,F401  isort: skip
from fewshot.encoders import text_builtin  # noqa: E402,F401  isort: skip

__all__ = ["Encoder", "EncoderSpec", "TorchEncoder", "TorchImageEncoder", "ImagePreprocess", "available", "load",
           "resolve", "resolve_recorded", "versions", "split_version", "release_of", "version_status", "default_for", "from_file", "register", "manifest_entries", "atomic_torch_save",
           "DEFAULT_IMAGE_ENCODER", "DEFAULTS"]
