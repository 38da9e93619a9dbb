"""Crash-safe writing of encoder files and checkpoints.

One helper for every torch file fewshot writes (encoder files, training
checkpoints): serialise in memory, then hand the bytes to the index package's
temp-file + fsync + rename recipe, so a reader or a restarted process sees the
old file or the new one, never a torn mix. ``fewshot`` may import ``index``;
``index`` never imports ``fewshot``.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically and durably; creates the parent folder."""
    from index.atomic import atomic_write_bytes  # imported here: the index package loads FAISS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())
    return path


def atomic_json_save(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON, atomically (the sidecar of an encoder file)."""
    from index.atomic import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
    return path
