"""The Encoder: a torch module plus the preprocessing that feeds it.

``embed(inputs)`` takes anything :func:`fewshot.inputs.expand_inputs` accepts and
returns float32 ``[n, dim]``. ``fingerprint`` hashes the weights and the
preprocessing config, so an index can refuse vectors from a different encoder.

:class:`TorchEncoder` holds everything every input kind shares (config,
fingerprint, the prefetching ``embed`` loop, centring, saving); a kind is a thin
subclass that says how user inputs become items (``_items``), how a batch of
items becomes the module's input (``prepare_batch``) and how the module runs on
it (``forward``). :class:`TorchImageEncoder` is the image kind;
:class:`~fewshot.encoders.sequence.TorchSequenceEncoder` the sequence kind.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import nn

from fewshot.encoders.archs import build_arch
from fewshot.encoders.files import atomic_json_save, atomic_torch_save
from fewshot.encoders.preprocess import ImagePreprocess
from fewshot.errors import EncoderError
from fewshot.inputs import InputItem, to_pil

ENCODER_FILE_FORMAT = "fewshot-encoder"

T = TypeVar("T")


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


def prefetched(prepare: Callable[[Any], T], chunks: Sequence[Any]) -> Iterator[T]:
    """``prepare(chunk)`` for each chunk, the next one computed on a worker thread meanwhile.

    The caller runs the network on chunk i while chunk i+1 is read and
    preprocessed; file reading, PIL decoding and torch all release the GIL, so
    input handling hides behind compute. A single chunk is prepared inline
    (starting a thread would only add latency).
    """
    if len(chunks) == 1:
        yield prepare(chunks[0])
        return
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(prepare, chunks[0])
        for nxt in list(chunks[1:]) + [None]:
            ready = pending.result()
            if nxt is not None:
                pending = pool.submit(prepare, nxt)
            yield ready


class TorchEncoder:
    """A torch module and its preprocessing: read -> preprocess -> forward in batches -> (centre) -> float32.

    ``centre`` (optional) is subtracted from every embedding: the mean feature of
    the training inputs (SimpleShot's CL2N). With the cosine metric the index then
    L2-normalises, which makes one-shot prototypes markedly more accurate.
    ``temperature`` is the softmax temperature an index built with it uses by default.

    Subclasses set ``input_kind``, ``preprocess_type``, ``build_module`` and
    implement ``_items``, ``prepare_batch`` and ``forward``.
    """

    input_kind: ClassVar[str] = ""
    unit: ClassVar[str] = "item"  # what the progress bar counts
    preprocess_type: ClassVar[Any] = None  # has from_dict / to_dict
    default_arch: ClassVar[str | None] = None  # the arch of files that do not name one

    def __init__(self, name: str, module: nn.Module, dim: int, preprocess: Any, arch: str,
                 arch_kwargs: dict | None = None, weights_source: str = "",
                 centre: np.ndarray | None = None, temperature: float | None = None, threads: int = 0):
        self.name, self.module, self.dim, self.preprocess = name, module.eval(), dim, preprocess
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

    # --- identity ------------------------------------------------------------------
    def _extra_config(self) -> dict:
        """Kind-specific settings for ``config()``; left out at their defaults so that
        fingerprints of encoders that never used them stay what they were."""
        return {}

    def config(self) -> dict:
        """Everything needed to rebuild this encoder, as JSON-able values."""
        return {"format": ENCODER_FILE_FORMAT, "version": 1, "name": self.name, "arch": self.arch,
                "arch_kwargs": self.arch_kwargs, "input_kind": self.input_kind, "dim": self.dim,
                "preprocess": self.preprocess.to_dict(),
                "centre": None if self.centre is None else [float(v) for v in self.centre],
                "temperature": self.temperature, **self._extra_config()}

    @property
    def fingerprint(self) -> str:
        """Hash of the weights and the config without the name (renaming a file changes nothing it computes)."""
        if self._fingerprint is None:
            cfg = self.config()
            cfg.pop("name")
            self._fingerprint = fingerprint_module(self.module, cfg)
        return self._fingerprint

    def invalidate(self) -> None:
        """Call after changing the module's weights or settings in place (fine-tuning)."""
        self._fingerprint = None

    # --- the hooks of a kind -------------------------------------------------------
    @staticmethod
    def build_module(arch: str, **arch_kwargs: Any) -> tuple[nn.Module, int]:
        """The kind's architectures by name: ``(module, output dim)``."""
        raise NotImplementedError

    def _items(self, inputs: Any) -> list[InputItem]:
        """User inputs (paths, folders, arrays, strings, ...) -> one item per example, read as the
        input kind registered in :mod:`fewshot.input_kinds` reads them (items pass through)."""
        if isinstance(inputs, list) and all(isinstance(i, InputItem) for i in inputs):
            return inputs
        from fewshot.input_kinds import input_kind

        return input_kind(self.input_kind).read(inputs)

    def prepare_batch(self, items: Sequence[InputItem]) -> Any:
        """Read, preprocess and collate items into what ``forward`` takes (runs on a worker thread)."""
        raise NotImplementedError

    def forward(self, batch: Any) -> torch.Tensor:
        """The model's computation on a prepared batch (no input handling, no centring)."""
        raise NotImplementedError

    def training_module(self) -> nn.Module:
        """The module fine-tuning trains (a copy is taken): ``forward(prepared batch) -> [n, dim]``."""
        return self.module

    # --- embedding -----------------------------------------------------------------
    @torch.inference_mode()
    def embed_tensor(self, batch: Any) -> np.ndarray:
        """Forward an already prepared batch, then centre: float32 ``[n, dim]``."""
        out = self.forward(batch).numpy()
        if self.centre is not None:
            out = out - self.centre
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed(self, inputs: Any, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embeddings float32 ``[n, dim]``; batch i+1 is prepared while batch i runs."""
        items = self._items(inputs)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        from tqdm import tqdm

        if self.threads:
            torch.set_num_threads(self.threads)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        row = 0
        with tqdm(total=len(items), desc=f"embed ({self.name})", unit=self.unit, disable=not progress,
                  delay=1.0, leave=False) as bar:
            for batch in prefetched(self.prepare_batch, chunks):
                vecs = self.embed_tensor(batch)
                out[row:row + len(vecs)] = vecs
                row += len(vecs)
                bar.update(len(vecs))
        return out

    # --- files ---------------------------------------------------------------------
    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """The weights an encoder file stores (a kind may store some in a smaller type)."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def sidecar(self, cfg: dict) -> dict:
        """What the JSON sidecar shows of the config (for people; loading reads only the encoder file)."""
        return cfg

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``{"config", "state_dict"}`` (weights_only-safe) atomically, plus a JSON sidecar."""
        path = Path(path)
        state = self.state_dict_to_save()
        cfg = self.config()
        atomic_torch_save({"config": cfg, "state_dict": state}, path)
        atomic_json_save({**self.sidecar(cfg), "fingerprint": self.fingerprint}, path.with_suffix(".json"))
        return path

    @classmethod
    def _config_kwargs(cls, cfg: dict) -> dict:
        """Constructor arguments read from a file's config beyond the common ones."""
        return {}

    @classmethod
    def from_payload(cls, payload: dict, name: str, path: str) -> "TorchEncoder":
        """Rebuild an encoder from a loaded encoder file (called by ``encoders.from_file``)."""
        cfg = payload["config"]
        arch = cfg.get("arch", cls.default_arch)
        try:
            pre = cls.preprocess_type.from_dict(cfg["preprocess"])
            module, dim = cls.build_module(arch, **cfg.get("arch_kwargs", {}))
            module.load_state_dict(payload["state_dict"])
            extra = cls._config_kwargs(cfg)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise EncoderError(f"{path}: not a loadable {cls.input_kind} encoder; its weights do not fit "
                               f"architecture {arch!r} ({str(exc).splitlines()[0][:160]})") from None
        enc = cls(name, module, dim, pre, arch, cfg.get("arch_kwargs"), weights_source=str(path),
                  centre=cfg.get("centre"), temperature=cfg.get("temperature"), **extra)
        enc.encoder_file = str(path)
        return enc


class TorchImageEncoder(TorchEncoder):
    """A CNN image encoder: PIL decode -> pad/resize/invert -> normalise -> forward (with optional shift TTA)."""

    input_kind = "image"
    unit = "img"
    preprocess_type = ImagePreprocess
    build_module = staticmethod(build_arch)

    def __init__(self, name: str, module: nn.Module, dim: int, preprocess: ImagePreprocess,
                 arch: str, arch_kwargs: dict | None = None, weights_source: str = "",
                 centre: np.ndarray | None = None, temperature: float | None = None,
                 threads: int = 0, tta_shift: int = 0, tta_flip: bool = False):
        if tta_shift < 0:
            raise ValueError("tta_shift must be >= 0")
        super().__init__(name, module, dim, preprocess, arch, arch_kwargs, weights_source, centre, temperature,
                         threads)
        self.tta_shift = int(tta_shift)
        self.tta_flip = bool(tta_flip)

    def _extra_config(self) -> dict:
        # absent when off, so files (and fingerprints) written before these options are unchanged
        return {**({"tta_shift": self.tta_shift} if self.tta_shift else {}),
                **({"tta_flip": True} if self.tta_flip else {})}

    @classmethod
    def _config_kwargs(cls, cfg: dict) -> dict:
        return {"tta_shift": int(cfg.get("tta_shift", 0)), "tta_flip": bool(cfg.get("tta_flip", False))}

    def prepare(self, item: InputItem) -> np.ndarray:
        """One input -> uint8 ``[size, size(, 3)]``: decoded, padded or cropped, resized, inverted if drawn dark on light."""
        return self.preprocess.to_array(to_pil(item))

    def load_arrays(self, items: Sequence[InputItem], workers: int = 2) -> np.ndarray:
        """Decode and preprocess items to uint8 arrays; PIL releases the GIL, so use threads."""
        if len(items) < 16 or workers <= 1:
            return np.stack([self.prepare(it) for it in items])
        with ThreadPoolExecutor(workers) as pool:
            return np.stack(list(pool.map(self.prepare, items)))

    def prepare_batch(self, items: Sequence[InputItem]) -> torch.Tensor:
        """Decode, preprocess and normalise a batch: float ``[n, c, h, w]``."""
        return self.preprocess.normalize(self.load_arrays(items, workers=1))

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's computation on a preprocessed batch [n, c, h, w] (no input handling).

        With ``tta_shift = k`` the embedding is the mean over the image translated by
        every (dy, dx) in [-k, k]^2 (zero fill): (2k+1)^2 forward passes, steadier
        embeddings of hand-drawn strokes, which sit a pixel or two off from drawing to drawing.
        With ``tta_flip`` each view is also seen mirrored left-right (photos, where the mirror
        image shows the same thing), doubling the passes.
        """
        k = self.tta_shift
        if not k and not self.tta_flip:
            return self.module(x).float()
        views = [x]
        if k:
            h, w = x.shape[-2:]
            padded = torch.nn.functional.pad(x, (k, k, k, k))
            views = [padded[..., k + dy:k + dy + h, k + dx:k + dx + w]
                     for dy in range(-k, k + 1) for dx in range(-k, k + 1)]
        if self.tta_flip:
            views += [v.flip(-1) for v in views]
        out = self.module(torch.cat(views)).float()
        return out.view(len(views), x.shape[0], -1).mean(0)
