"""Named encoders and the one rule for turning an encoder spec into an Encoder.

``resolve(spec, weights, kind)`` is what every caller (library, index, CLI) uses:
a registered name, a path to an encoder file, an Encoder object, or None for the
default of the input kind (``default_for``). The built-in families register
themselves from :mod:`fewshot.encoders.builtin` and
:mod:`fewshot.encoders.sequence_builtin`, which import this module (never the
package ``__init__``), so there is no import cycle.

Versions. A name can have several released versions (``register(..., version=2,
fingerprint=...)``, each with its own weights file): the bare name is the newest
(what a new index gets), ``name@N`` is version N. An index records the bare name
and the encoder's fingerprint, so opening it finds the release with that
fingerprint (:func:`resolve_recorded`) even after a newer one became the default;
``fewshot reindex IDX --encoder NAME`` moves it to the newest.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fewshot.encoders.base import ENCODER_FILE_FORMAT, Encoder, TorchEncoder, TorchImageEncoder
from fewshot.encoders.sequence import TorchSequenceEncoder
from fewshot.encoders.weights import load_weights_file
from fewshot.errors import EncoderError

#: The encoder an index, ``embed`` or ``evaluate`` uses when none is named, by input kind.
DEFAULTS = {"image": "omniglot-ensemble", "sequence": "omniglot-strokes-fusion", "text": "minilm"}
DEFAULT_IMAGE_ENCODER = DEFAULTS["image"]
#: Names whose role passed to another name (a new architecture is a new name, not a new version):
#: ``info`` on an index built with the old one names the successor and its ``reindex`` command.
SUCCESSORS = {"omniglot-conv4": "omniglot-ensemble"}
#: Encoder-file classes by ``config["input_kind"]``.
KINDS: dict[str, type[TorchEncoder]] = {"image": TorchImageEncoder, "sequence": TorchSequenceEncoder}


def _text_kind() -> type[TorchEncoder]:
    from fewshot.encoders.text_rnn import TorchTextEncoder

    return TorchTextEncoder


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    input_kind: str
    dim: int
    weights: str  # where the default weights come from, in words
    description: str
    builder: Callable[..., Encoder]
    version: int = 1
    #: The released weights' fingerprint (None: not declared, e.g. downloaded or random weights).
    fingerprint: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "input_kind": self.input_kind, "dim": self.dim,
                "weights": self.weights, "description": self.description, "version": self.version,
                "versions": [s.version for s in versions(self.name)], "fingerprint": self.fingerprint}


#: The newest version of each name (what the bare name builds).
_REGISTRY: dict[str, EncoderSpec] = {}
#: Every registered version of each name.
_VERSIONS: dict[str, dict[int, EncoderSpec]] = {}


def register(name: str, *, input_kind: str, dim: int, weights: str, description: str, version: int = 1,
             fingerprint: str | None = None) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator: register ``builder(weights=None, **kw) -> Encoder`` as ``name`` version ``version``.

    ``fingerprint`` is that release's (checked by the tests against the built encoder):
    it lets an index recording it find this version without loading every weights file.
    """
    if "@" in name or not (isinstance(version, int) and version >= 1):
        raise EncoderError(f"cannot register {name!r} version {version!r}: names have no '@', versions are 1, 2, ...")

    def deco(builder: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _VERSIONS.setdefault(name, {})[version] = EncoderSpec(name, input_kind, dim, weights, description, builder,
                                                             version, fingerprint)
        _REGISTRY[name] = _VERSIONS[name][max(_VERSIONS[name])]
        return builder
    return deco


def available() -> list[EncoderSpec]:
    """Registered encoders (the newest version of each), sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def versions(name: str) -> list[EncoderSpec]:
    """Every registered version of ``name``, oldest first (empty for an unknown name)."""
    return [v for _, v in sorted(_VERSIONS.get(name, {}).items())]


def split_version(key: str) -> tuple[str, int | None]:
    """``"omniglot-conv4@2"`` -> ``("omniglot-conv4", 2)``; anything else -> ``(key, None)``.

    Only a registered name followed by ``@`` and digits is a versioned name, so a
    path containing ``@`` stays a path.
    """
    base, sep, tail = key.rpartition("@")
    if sep and tail.isdigit() and base in _VERSIONS:
        return base, int(tail)
    return key, None


def _spec(key: str) -> EncoderSpec | None:
    """The spec ``key`` names: a bare name (newest) or ``name@N``; None when it names none."""
    name, version = split_version(key)
    if version is None:
        return _REGISTRY.get(name)
    if version not in _VERSIONS[name]:
        known = ", ".join(f"{name}@{v}" for v in sorted(_VERSIONS[name]))
        raise EncoderError(f"{name} has no version {version}; released: {known}")
    return _VERSIONS[name][version]


def release_of(name: str, fingerprint: str | None) -> EncoderSpec | None:
    """The released version of ``name`` whose declared fingerprint is ``fingerprint`` (None: none is)."""
    return next((s for s in versions(name) if fingerprint and s.fingerprint == fingerprint), None)


def version_status(ref: str | None, fingerprint: str | None) -> dict:
    """Which release of its named encoder an index is on, from the manifest alone (nothing is loaded).

    ``encoder_version`` is None when the fingerprint is no declared release (a user's
    weights or file); ``encoder_is_newest`` is then None too, unless the name has one version.
    """
    name = split_version(ref)[0] if ref else None
    newest = _REGISTRY[name].version if name in _REGISTRY else None
    spec = release_of(name, fingerprint) if name else None
    current = spec.version if spec is not None else None
    is_newest = None if current is None or newest is None else current == newest
    return {"encoder_version": current, "encoder_newest_version": newest, "encoder_is_newest": is_newest,
            "encoder_successor": SUCCESSORS.get(name)}


def default_for(kind: str | None) -> str:
    """The name of the default encoder for an input kind (``"image"`` when None)."""
    try:
        return DEFAULTS[kind or "image"]
    except KeyError:
        raise EncoderError(f"no default encoder for input kind {kind!r}; known: {', '.join(DEFAULTS)}") from None


def from_file(path: str | os.PathLike, name: str | None = None) -> TorchEncoder:
    """Rebuild an encoder from a file written by ``Encoder.save`` (weights_only-safe)."""
    payload = load_weights_file(path)
    if not (isinstance(payload, dict) and isinstance(payload.get("config"), dict)
            and isinstance(payload.get("state_dict"), dict)
            and payload["config"].get("format") == ENCODER_FILE_FORMAT):
        raise EncoderError(f"{path} is not a fewshot encoder file (a dict with 'config' and 'state_dict'); "
                           "to use a torchvision state dict, pass it as weights=PATH with a named encoder")
    cfg = payload["config"]
    cls = kind_class(cfg.get("input_kind", "image"), where=str(path))
    return cls.from_payload(payload, name or cfg.get("name") or Path(path).stem, str(path))


def kind_class(kind: str, where: str = "encoder") -> type[TorchEncoder]:
    """The encoder-file class of input ``kind`` (what ``from_file`` builds and fine-tuning exports)."""
    if kind == "text" and kind not in KINDS:  # registered on first use: text_rnn imports the text module
        KINDS["text"] = _text_kind()
    if kind not in KINDS:
        raise EncoderError(f"{where}: unknown input kind {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]


def _weights_ref(weights: str | None) -> str | None:
    """How an index records ``weights``: a path made absolute, the words 'imagenet' / 'none' as they are."""
    if weights is None or weights in ("imagenet", "none"):
        return weights
    return str(Path(weights).expanduser().resolve())


def resolve(spec: str | os.PathLike | Encoder | None = None, weights: str | None = None,
            kind: str | None = None, **kwargs: Any) -> Encoder:
    """An Encoder from a registered name, an encoder-file path, an Encoder object (returned as
    it is), or None: the default for ``kind`` (see :func:`default_for`).

    An encoder built from a registered name remembers it (``registered_as``: name and
    weights), so an index records it by name, and a user's encoder file by path,
    whatever folder either lives in.
    """
    if spec is not None and not isinstance(spec, (str, os.PathLike)) and hasattr(spec, "embed"):
        return spec
    key = default_for(kind) if spec is None else str(spec)
    found = _spec(key)
    if found is not None:
        return _build(found, weights, **kwargs)
    from fewshot.encoders.text import is_st_spec, sentence_transformer

    if is_st_spec(key):  # st:NAME, sentence-transformers/NAME, or a sentence-transformers folder
        return sentence_transformer(key)
    p = Path(key).expanduser()
    if p.exists() or os.sep in key or key.endswith(".pt"):
        if weights is not None:
            raise EncoderError("weights= applies to a named encoder, not to an encoder file")
        return from_file(p)
    raise EncoderError(f"unknown encoder {key!r}; `fewshot encoders` lists the names "
                       f"({', '.join(sorted(_REGISTRY))}), or pass a path to an encoder file "
                       "(text: st:MODEL or a sentence-transformers folder)")


def _build(spec: EncoderSpec, weights: str | None, **kwargs: Any) -> Encoder:
    """Build one registered version; it remembers its bare name (what an index records) and version."""
    enc = spec.builder(weights=weights, **kwargs)
    if not kwargs:  # builder options are not recorded, so such an encoder is not rebuilt by name
        enc.registered_as = (spec.name, _weights_ref(weights))
    return enc


def resolve_recorded(ref: str, weights: str | None = None, fingerprint: str | None = None) -> Encoder:
    """The encoder an index's manifest records: ``ref`` as :func:`resolve` reads it, except that a
    registered name with its released weights gets the version whose fingerprint the index
    recorded, so an index keeps opening (and answering the same) after a newer version ships.
    """
    name, version = split_version(ref)
    if weights is None and version is None and name in _VERSIONS and fingerprint:
        spec = release_of(name, fingerprint)
        if spec is not None:
            return _build(spec, None)
        if len(_VERSIONS[name]) > 1:  # releases that declare no fingerprint: build them to compare
            for spec in reversed(versions(name)):
                enc = _build(spec, None) if spec.fingerprint is None else None
                if enc is not None and enc.fingerprint == fingerprint:
                    return enc
    return resolve(ref, weights)


def load(name_or_path: str | os.PathLike | Encoder = DEFAULT_IMAGE_ENCODER, weights: str | None = None,
         **kwargs: Any) -> Encoder:
    """An encoder by registered name, or from an encoder file path; an Encoder passes through."""
    return resolve(name_or_path, weights, **kwargs)


def manifest_entries(encoder: Any, previous: dict | None = None) -> dict:
    """What an index records to load ``encoder`` again: ``{"encoder", "encoder_weights"}``.

    A registered encoder is recorded by name with its weights; one read from a user's
    encoder file by absolute path; anything else by its name. ``previous`` (the
    index's current entries) keeps the weights reference when the same encoder
    comes back as an object that does not carry one.
    """
    registered = getattr(encoder, "registered_as", None)
    if registered is not None:
        return {"encoder": registered[0], "encoder_weights": registered[1]}
    path = getattr(encoder, "encoder_file", None)
    if path:
        return {"encoder": str(Path(path).resolve()), "encoder_weights": None}
    same = previous is not None and previous.get("fingerprint") == encoder.fingerprint
    return {"encoder": encoder.name, "encoder_weights": previous.get("encoder_weights") if same else None}
