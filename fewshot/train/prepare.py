"""Fine-tuning data and model preparation: which classes, which examples, which blocks train.

The user's labelled data (a dataset, a folder, an Omniglot zip, or the examples
an index stores) is loaded as the encoder reads it (images at its input size,
or raw sequences), split by class into training and held-out validation
classes, and the encoder's early blocks can be frozen.
"""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fewshot.data.dataset import LabelledSet
from fewshot.errors import FewShotError, InputError


def parse_classes(spec: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Select classes: ``"0-4"`` (a numeric range), ``"a,b,c"``, glob patterns (``"Greek/*"``), or a list.

    A token that is itself a class name is taken literally; unknown names are an
    error that lists some of the available ones.
    """
    avail = sorted(set(available))
    if spec is None or spec == "" or spec == "all":
        return avail
    tokens = [t.strip() for t in spec.split(",")] if isinstance(spec, str) else [str(t) for t in spec]
    have, chosen = set(avail), []
    for tok in filter(None, tokens):
        if tok in have:
            picked = [tok]
        elif m := re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", tok):
            lo, hi = int(m.group(1)), int(m.group(2))
            picked = [c for c in avail if re.fullmatch(r"-?\d+", c) and lo <= int(c) <= hi]
        elif any(ch in tok for ch in "*?["):
            picked = [c for c in avail if fnmatch.fnmatchcase(c, tok)]
        else:
            picked = []
        if not picked:
            raise InputError(f"no class matches {tok!r}; classes are e.g. {', '.join(avail[:8])}"
                             f"{' ...' if len(avail) > 8 else ''} ({len(avail)} in all)")
        chosen += [c for c in picked if c not in chosen]
    return sorted(chosen)


def _read_stored(index_dir: str | os.PathLike, kind: str, size: int, rgb: bool) -> Any:
    """A reader of one stored copy: an image at ``size`` (ink-high or RGB), a raw sequence, or a text."""
    from fewshot.inputs import InputItem

    if kind == "text":
        from fewshot.text_inputs import read_item_text

        return lambda path, source: read_item_text(InputItem(path, source))
    if kind == "sequence":
        from fewshot.sequences import load_sequence

        return lambda path, source: load_sequence(InputItem(path, source))
    from fewshot.data.folders import to_ink_high, to_rgb
    from fewshot.inputs import to_pil

    convert = to_rgb if rgb else to_ink_high

    def read(path, source):
        with to_pil(InputItem(path, source)) as im:
            return convert(im, size)
    return read


def dataset_from_index(index_dir: str | os.PathLike, size: int = 28, rgb: bool = False,
                       kind: str = "image") -> LabelledSet:
    """The examples stored in an index (its own copies), one class per label, of the index's kind."""
    from index import BlobStore, open_store

    with open_store(index_dir, readonly=True) as store:
        stored = store.extra.get("input_kind", "image")
        if stored != kind:
            raise InputError(f"index {index_dir} holds {stored}s; this encoder fine-tunes on {kind}s")
        records = list(store.records())
    blobs = BlobStore(index_dir)
    read = _read_stored(index_dir, kind, size, rgb)
    items, labels, sources = [], [], []
    for r in records:
        key = r.metadata.get("blob")
        if not key or not blobs.exists(key):
            raise FewShotError(f"stored copy of example {r.id} ({r.metadata.get('source')}) is missing from "
                               f"{index_dir}; run `fewshot check --repair`")
        items.append(read(blobs.path(key), r.metadata.get("source", key)))
        labels.append(r.label)
        sources.append(r.metadata.get("source", key))
    if not items:
        raise InputError(f"index {index_dir} holds no examples to fine-tune on")
    return LabelledSet(np.stack(items) if kind == "image" else items, labels, ["all"] * len(labels), sources, kind)


def load_training_data(data: Any, encoder: Any, index_dir: str | os.PathLike | None = None) -> LabelledSet:
    """A LabelledSet from ``data``, as ``encoder`` reads it: a LabelledSet, ``"digits"``, a class-per-folder
    directory, an Omniglot-style zip or folder (images or strokes), ``"index"`` (the examples stored in
    ``index_dir``) or an index directory. Images are loaded at the encoder's input size."""
    from index import is_index_dir

    if isinstance(data, LabelledSet):
        return data
    kind = encoder.input_kind
    pre = encoder.preprocess
    rgb = kind == "image" and pre.channels == 3
    size = ((pre.resize_size or pre.size) if rgb else pre.size) if kind == "image" else 0
    spec = str(data)
    if spec == "index":
        if index_dir is None:
            raise InputError("data 'index' means the examples stored in the index given by into=/--into; give one")
        return dataset_from_index(index_dir, size, rgb, kind)
    if Path(spec).is_dir() and is_index_dir(Path(spec)):
        return dataset_from_index(spec, size, rgb, kind)
    from fewshot.data.registry import dataset_kind, detect_layout, load_dataset, zip_layout
    from fewshot.evaluation.embedding import check_kinds

    check_kinds(encoder, dataset_kind(spec), spec)
    if kind == "sequence":
        from fewshot.data.registry import load_sequence_dataset

        return load_sequence_dataset(spec)
    if kind == "text":
        from fewshot.data.text import load_text_dataset

        return load_text_dataset(spec, None, None)
    path = Path(spec)
    if rgb and (zip_layout(path) if path.is_file() else detect_layout(path)) == "omniglot":
        rgb = False  # Omniglot is grayscale; the encoder's preprocessing makes it RGB
    return load_dataset(spec, size=size, rgb=rgb)


def to_encoder_arrays(ds: LabelledSet, preprocess: Any) -> LabelledSet:
    """Images: each through the encoder's ``to_array`` (its resize, padding, inversion), once.
    Sequences stay raw (they are augmented, then preprocessed, at every step)."""
    if ds.kind != "image":
        return ds
    from PIL import Image

    arrays = np.stack([preprocess.to_array(Image.fromarray(img)) for img in ds.items])
    return LabelledSet(arrays, list(ds.labels), list(ds.groups), list(ds.sources), "image")


def split_classes(classes: Sequence[str], val_fraction: float, seed: int, min_train: int = 2
                  ) -> tuple[list[str], list[str]]:
    """(train classes, validation classes): a seeded random ``val_fraction`` held out, at least 2."""
    classes = sorted(classes)
    if not 0 <= val_fraction < 1:
        raise InputError("val_fraction must be in [0, 1)")
    if val_fraction == 0:
        return classes, []
    n_val = max(2, int(round(val_fraction * len(classes))))
    if len(classes) - n_val < min_train:
        raise InputError(f"{len(classes)} classes are too few to hold out {n_val} for validation and train on "
                         f">= {min_train}; use more classes or val_fraction=0 (no early stopping)")
    order = np.random.default_rng([seed, 99]).permutation(len(classes))
    val = sorted(classes[i] for i in order[:n_val])
    return [c for c in classes if c not in val], val


# --- the model ----------------------------------------------------------------------------
def encoder_blocks(module: Any) -> list[list]:
    """The encoder's blocks, input to output, each a list of sub-modules.

    Conv-N: its conv blocks; ResNets: stem, layer1..layer4; MobileNet and
    EfficientNet: the stages of ``features``; a module that names its own blocks
    (``fewshot_blocks()``: a sentence transformer's embeddings and layers) those;
    otherwise the top-level children.
    """
    from torch import nn

    if hasattr(module, "fewshot_blocks"):
        return module.fewshot_blocks()
    if all(hasattr(module, a) for a in ("conv1", "bn1", "layer1", "layer4")):
        return [[module.conv1, module.bn1]] + [[getattr(module, f"layer{i}")] for i in range(1, 5)]
    feats = getattr(module, "features", None)
    if isinstance(feats, nn.Sequential):
        return [[m] for m in feats.children() if any(True for _ in m.parameters())]
    return [[m] for m in module.children() if any(True for _ in m.parameters())]


def freeze_blocks(module: Any, train_last: int | None = None, freeze_until: int | None = None
                  ) -> tuple[list, tuple, int, int]:
    """Freeze early blocks: (trainable parameters, frozen modules, blocks, frozen blocks).

    ``train_last=N`` trains the last N blocks; ``freeze_until=K`` freezes blocks
    0..K-1; neither trains everything. Frozen parameters stop needing gradients and
    frozen modules stay in eval mode (their BatchNorm statistics do not drift).
    """
    blocks = encoder_blocks(module)
    n = len(blocks)
    if train_last is not None and freeze_until is not None:
        raise InputError("give train_last or freeze_until, not both")
    if train_last is not None:
        if not 1 <= train_last <= n:
            raise InputError(f"train_last must be between 1 and {n} (the encoder has {n} blocks)")
        k = n - train_last
    elif freeze_until is not None:
        if not 0 <= freeze_until < n:
            raise InputError(f"freeze_until must be between 0 and {n - 1} (the encoder has {n} blocks)")
        k = freeze_until
    else:
        k = 0
    frozen = tuple(m for blk in blocks[:k] for m in blk)
    frozen_ids = {id(p) for m in frozen for p in m.parameters()}
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return [p for p in module.parameters() if id(p) not in frozen_ids], frozen, n, k
