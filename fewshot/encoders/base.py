"""The Encoder: a torch module plus the preprocessing that feeds it.

``embed(inputs)`` takes anything :func:`fewshot.inputs.expand_inputs` accepts and
returns float32 ``[n, dim]``. ``fingerprint`` hashes the weights and the
preprocessing config, so an index can refuse vectors from a different encoder.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from fewshot.encoders.preprocess import ImagePreprocess
from fewshot.inputs import InputItem, expand_inputs, to_pil

ENCODER_FILE_FORMAT = "fewshot-encoder"


@runtime_checkable
class Encoder(Protocol):
    """What the index needs from an encoder (any user object with these works)."""

    name: str
    input_kind: str  # "image" or "sequence"
    dim: int

    @property
    def fingerprint(self) -> str: ...

    def embed(self, inputs: Any, batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def fingerprint_module(module: nn.Module, config: dict) -> str:
    """sha256 over every tensor of the state dict (sorted by key) and the JSON config."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()[:16]


class TorchImageEncoder:
    """A CNN image encoder: decode -> preprocess -> forward in batches -> (centre) -> float32.

    ``centre`` (optional) is subtracted from every embedding: the mean feature of
    the training images (SimpleShot's CL2N). With the cosine metric the index then
    L2-normalises, which makes one-shot prototypes markedly more accurate.
    """

    input_kind = "image"

    def __init__(self, name: str, module: nn.Module, dim: int, preprocess: ImagePreprocess,
                 arch: str, arch_kwargs: dict | None = None, weights_source: str = "",
                 centre: np.ndarray | None = None, temperature: float | None = None,
                 threads: int = 0, tta_shift: int = 0):
        self.name, self.module, self.dim, self.preprocess = name, module.eval(), dim, preprocess
        if tta_shift < 0:
            raise ValueError("tta_shift must be >= 0")
        self.tta_shift = int(tta_shift)
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs or {})
        self.weights_source = weights_source
        self.centre = None if centre is None else np.asarray(centre, dtype=np.float32).reshape(-1)
        if self.centre is not None and self.centre.shape[0] != dim:
            raise ValueError(f"centre has {self.centre.shape[0]} values, encoder dim is {dim}")
        self.temperature = temperature
        self.threads = threads
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, fingerprint={self.fingerprint})"

    def config(self) -> dict:
        """Everything needed to rebuild this encoder, as JSON-able values."""
        return {"format": ENCODER_FILE_FORMAT, "version": 1, "name": self.name, "arch": self.arch,
                "arch_kwargs": self.arch_kwargs, "input_kind": self.input_kind, "dim": self.dim,
                "preprocess": self.preprocess.to_dict(),
                "centre": None if self.centre is None else [float(v) for v in self.centre],
                "temperature": self.temperature, **({"tta_shift": self.tta_shift} if self.tta_shift else {})}

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            cfg = self.config()
            cfg.pop("name")  # renaming a file does not change what it computes
            self._fingerprint = fingerprint_module(self.module, cfg)
        return self._fingerprint

    def invalidate(self) -> None:
        """Call after changing the module's weights in place (fine-tuning)."""
        self._fingerprint = None

    # --- embedding -----------------------------------------------------------------
    def load_arrays(self, items: list[InputItem], workers: int = 2) -> np.ndarray:
        """Decode and preprocess items to uint8 arrays; PIL releases the GIL, so use threads."""
        conv = lambda it: self.preprocess.to_array(to_pil(it))  # noqa: E731
        if len(items) < 16 or workers <= 1:
            return np.stack([conv(it) for it in items])
        with ThreadPoolExecutor(workers) as pool:
            return np.stack(list(pool.map(conv, items)))

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's computation on a preprocessed batch [n, c, h, w] (no input handling).

        With ``tta_shift = k`` the embedding is the mean over the image translated by
        every (dy, dx) in [-k, k]^2 (zero fill): (2k+1)^2 forward passes, steadier
        embeddings of hand-drawn strokes, which sit a pixel or two off from drawing to drawing.
        """
        k = self.tta_shift
        if not k:
            return self.module(x).float()
        h, w = x.shape[-2:]
        padded = torch.nn.functional.pad(x, (k, k, k, k))
        views = [padded[..., k + dy:k + dy + h, k + dx:k + dx + w] for dy in range(-k, k + 1) for dx in range(-k, k + 1)]
        out = self.module(torch.cat(views)).float()
        return out.view(len(views), x.shape[0], -1).mean(0)

    @torch.inference_mode()
    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """Forward an already preprocessed float batch [n, c, h, w], then centre."""
        out = self.forward(x).numpy()
        if self.centre is not None:
            out = out - self.centre
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed(self, inputs: Any, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        items = inputs if isinstance(inputs, list) and all(isinstance(i, InputItem) for i in inputs) \
            else expand_inputs(inputs)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        from tqdm import tqdm

        if self.threads:
            torch.set_num_threads(self.threads)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        starts = list(range(0, len(items), batch_size))
        # Decode batch i+1 on a worker thread while batch i runs through the network:
        # PIL releases the GIL while decoding, so input handling hides behind compute.
        with tqdm(total=len(items), desc=f"embed ({self.name})", unit="img", disable=not progress,
                  delay=1.0, leave=False) as bar, ThreadPoolExecutor(1) as pool:
            load = lambda i: self.load_arrays(items[i:i + batch_size], workers=1)  # noqa: E731
            pending = pool.submit(load, starts[0])
            for n, i in enumerate(starts):
                arrays = pending.result()
                if n + 1 < len(starts):
                    pending = pool.submit(load, starts[n + 1])
                out[i:i + len(arrays)] = self.embed_tensor(self.preprocess.normalize(arrays))
                bar.update(len(arrays))
        return out

    # --- saving --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``{"config", "state_dict"}`` (weights_only-safe) atomically, plus a JSON sidecar."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        payload = {"config": self.config(),
                   "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        side = path.with_suffix(".json")
        side.write_text(json.dumps({**self.config(), "fingerprint": self.fingerprint}, indent=2) + "\n")
        return path
