"""Metric-learning fine-tuning: adapt a pretrained image encoder to a user's own labelled data.

    >>> from fewshot.finetune import finetune
    >>> result = finetune("omniglot-conv4", "digits", classes="0-4", out="digits-conv4.pt")
    >>> result.encoder.fingerprint != encoders.load("omniglot-conv4").fingerprint
    True

A pretrained encoder embeds a new domain imperfectly; a short episodic
fine-tune on whatever labelled classes the user has (then never used as test
classes) makes one-shot classification of the *next* new classes better. This
module prepares the data through the encoder's own preprocessing, holds out a
share of the classes for early stopping, freezes all but the last blocks if
asked, and runs :func:`fewshot.training.fit_episodic` with one of the losses of
:mod:`fewshot.losses`. The result is a new encoder file (``state_dict`` + JSON
config, ``weights_only``-safe) with its own fingerprint, usable wherever an
encoder name is; ``into=INDEX_DIR`` then switches an index to it through
:meth:`FewShotIndex.reindex`, which is atomic.

Safety: the run keeps ``last.pt`` / ``best.pt`` in a run folder (default
``<out>.run/``), replaced atomically every ``checkpoint_every`` steps; a Ctrl-C
or a kill leaves the last good checkpoint, the previous encoder file and the
index untouched, and ``resume=True`` continues where it stopped (episode ``i``
and its augmentation depend only on ``(seed, i)``). The run folder is removed
once the encoder file is written.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fewshot.data.dataset import LabelledSet
from fewshot.errors import EncoderError, FewShotError, InputError

DEFAULTS = {"loss": "proto", "ways": 10, "shots": 1, "queries": 5, "steps": 300, "lr": 1e-3,
            "val_fraction": 0.2, "patience": 4, "val_every": 50, "val_episodes": 200, "expand": "auto"}


@dataclass
class FinetuneResult:
    """What a fine-tune produced: the new encoder (and its file), and how training went."""

    encoder: Any
    path: Path | None
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"encoder": self.encoder.name, "path": None if self.path is None else str(self.path),
                "fingerprint": self.encoder.fingerprint, **self.summary}


# --- data ---------------------------------------------------------------------------------
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


def dataset_from_index(index_dir: str | os.PathLike, size: int = 28, rgb: bool = False) -> LabelledSet:
    """The examples stored in an index (its own copies), one class per label."""
    from fewshot.data.folders import to_ink_high, to_rgb
    from fewshot.inputs import InputItem, to_pil
    from index import BlobStore, open_store

    with open_store(index_dir, readonly=True) as store:
        if store.extra.get("input_kind", "image") != "image":
            raise InputError(f"index {index_dir} holds {store.extra.get('input_kind')}s; fine-tuning needs images")
        records = list(store.records())
    blobs = BlobStore(index_dir)
    convert = to_rgb if rgb else to_ink_high
    images, labels, sources = [], [], []
    for r in records:
        key = r.metadata.get("blob")
        if not key or not blobs.exists(key):
            raise FewShotError(f"stored copy of example {r.id} ({r.metadata.get('source')}) is missing from "
                               f"{index_dir}; run `fewshot check --repair`")
        with to_pil(InputItem(blobs.path(key), r.metadata.get("source", key))) as im:
            images.append(convert(im, size))
        labels.append(r.label)
        sources.append(r.metadata.get("source", key))
    if not images:
        raise InputError(f"index {index_dir} holds no examples to fine-tune on")
    return LabelledSet(np.stack(images), labels, ["all"] * len(labels), sources)


def load_training_data(data: Any, encoder, index_dir: str | os.PathLike | None = None) -> LabelledSet:
    """An LabelledSet from ``data``: an LabelledSet, ``"digits"``, a class-per-folder
    directory, an Omniglot-style zip or folder, ``"index"`` (the examples stored in
    ``index_dir``) or an index directory. Loaded at the encoder's input size."""
    if isinstance(data, LabelledSet):
        return data
    pre = encoder.preprocess
    rgb = pre.channels == 3
    size = (pre.resize_size or pre.size) if rgb else pre.size
    spec = str(data)
    if spec == "index":
        if index_dir is None:
            raise InputError("data 'index' means the examples stored in the index given by into=/--into; give one")
        return dataset_from_index(index_dir, size, rgb)
    from index import is_index_dir

    if Path(spec).is_dir() and is_index_dir(Path(spec)):
        return dataset_from_index(spec, size, rgb)
    from fewshot.data.registry import detect_layout, load_dataset

    path = Path(spec)
    if rgb and (path.is_file() or (path.is_dir() and detect_layout(path) == "omniglot")):
        rgb = False  # Omniglot is grayscale; the encoder's preprocessing makes it RGB
    return load_dataset(spec, size=size, rgb=rgb)


def to_encoder_arrays(ds: LabelledSet, preprocess) -> LabelledSet:
    """Each image through the encoder's ``to_array`` (its resize, padding, inversion), once."""
    from PIL import Image

    arrays = np.stack([preprocess.to_array(Image.fromarray(img)) for img in ds.items])
    return LabelledSet(arrays, list(ds.labels), list(ds.groups), list(ds.sources))


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


def _subset_classes(ds: LabelledSet, classes: Sequence[str]) -> LabelledSet:
    keep = set(classes)
    return ds.subset([i for i, lab in enumerate(ds.labels) if lab in keep])


# --- the model ----------------------------------------------------------------------------
def encoder_blocks(module) -> list[list]:
    """The encoder's blocks, input to output, each a list of sub-modules.

    Conv-N: its conv blocks; ResNets: stem, layer1..layer4; MobileNet and
    EfficientNet: the stages of ``features``; otherwise the top-level children.
    """
    from torch import nn

    if all(hasattr(module, a) for a in ("conv1", "bn1", "layer1", "layer4")):
        return [[module.conv1, module.bn1]] + [[getattr(module, f"layer{i}")] for i in range(1, 5)]
    feats = getattr(module, "features", None)
    if isinstance(feats, nn.Sequential):
        return [[m] for m in feats.children() if any(True for _ in m.parameters())]
    return [[m] for m in module.children() if any(True for _ in m.parameters())]


def freeze_blocks(module, train_last: int | None = None, freeze_until: int | None = None
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


def _check_encoder(encoder) -> None:
    if getattr(encoder, "input_kind", None) != "image" or not hasattr(encoder, "module") \
            or not hasattr(encoder, "preprocess"):
        raise EncoderError(f"encoder {getattr(encoder, 'name', encoder)!r} is not a torch image encoder; "
                           "fine-tuning works on image encoders (e.g. omniglot-conv4, resnet18)")


# --- the run ------------------------------------------------------------------------------
def default_run_dir(out: str | os.PathLike | None) -> Path:
    if out is None:
        raise InputError("give out= (the new encoder file) or run_dir= (where checkpoints go)")
    p = Path(out)
    return p.with_name(p.name + ".run")


def finetune(encoder: Any = "omniglot-conv4", data: Any = "digits", *, classes: Any = None,
             loss: str = "proto", loss_kwargs: dict | None = None,
             ways: int | None = None, shots: int = 1, queries: int | None = None, batch_size: int | None = None,
             steps: int = DEFAULTS["steps"], lr: float = DEFAULTS["lr"], weight_decay: float = 0.0,
             warmup: int | None = None, train_last: int | None = None, freeze_until: int | None = None,
             augment: bool = True, expand: str = DEFAULTS["expand"], val_fraction: float = DEFAULTS["val_fraction"],
             patience: int = DEFAULTS["patience"], val_every: int = DEFAULTS["val_every"],
             val_episodes: int = DEFAULTS["val_episodes"], val_ways: int = 5, checkpoint_every: int = 25,
             seed: int = 0, centre: str = "keep", out: str | os.PathLike | None = None,
             name: str | None = None, run_dir: str | os.PathLike | None = None, resume: bool = False,
             fresh: bool = False, keep_run: bool = False, into: str | os.PathLike | None = None,
             threads: int = 0, progress: bool = True, log: Callable[[str], None] | None = None,
             index_dir: str | os.PathLike | None = None) -> FinetuneResult:
    """Fine-tune ``encoder`` on labelled ``data`` with a metric-learning loss; return the new encoder.

    Parameters (the CLI options mirror them):

    * ``encoder``: a registered name, an encoder file, or an Encoder object (left unchanged).
    * ``data``: an :class:`LabelledSet`, ``"digits"``, a class-per-folder directory,
      an Omniglot-style zip, ``"index"`` (the examples stored in ``into``) or an index directory.
    * ``classes``: the classes to train on (``"0-4"``, ``"a,b"``, ``"Greek/*"``); default all.
    * ``loss``: ``"proto"`` (episodic prototypical, default), ``"triplet"`` (batch-hard)
      or ``"supcon"`` (supervised contrastive); ``loss_kwargs`` go to its constructor.
    * episode shape: ``ways`` classes x (``shots`` + ``queries``) images per step; or
      ``batch_size`` images per step, split evenly over ``ways`` classes.
    * ``expand``: turn each class into new classes by transforming it: ``"dihedral"``
      (4 rotations x mirror: 8x the classes), ``"rotations"`` (4x) or ``"none"``;
      ``"auto"`` is dihedral for grayscale encoders (handwriting, symbols: a
      mirrored character is another character) and none for RGB ones (photos).
      With only a few labelled classes this is what keeps the encoder general
      instead of learning to tell just those classes apart. Applies to the
      validation classes too (they stay disjoint from the training ones).
    * ``train_last`` / ``freeze_until``: train only the last blocks.
    * ``val_fraction`` of the classes is held out of training; their ``val_ways``-way
      1-shot accuracy, measured before training and every ``val_every`` steps, picks
      the best weights (so the result is never worse than the start on them:
      ``summary["improved"]`` is False when no step beat the starting weights), and
      ``patience`` validations without improvement stop the run (0: never).
    * ``centre``: ``"keep"`` the encoder's CL2N centre (default; the shipped encoder
      has none), ``"recompute"`` it as the mean embedding of the fine-tuning images
      (measured on digits: 3 points worse than keeping none), or ``"none"``.
    * ``out``: the new encoder file; ``into``: an index to switch to it (re-embeds all examples).
    * ``resume``: continue the unfinished run in ``run_dir`` (default ``<out>.run``);
      ``fresh`` discards one. Without either an unfinished run is an error.
    """
    import torch

    from fewshot import encoders as reg
    from fewshot.losses import make_loss
    from fewshot.training import EXPANSIONS, TrainConfig, expand_classes, fit_episodic

    t_start = time.time()
    base = reg.load(encoder) if isinstance(encoder, (str, os.PathLike)) else encoder
    _check_encoder(base)
    if expand == "auto":
        expand = "dihedral" if base.preprocess.channels == 1 else "none"
    if expand not in EXPANSIONS:
        raise InputError(f"expand must be auto or one of {', '.join(EXPANSIONS)}")
    if centre not in ("recompute", "keep", "none"):
        raise InputError("centre must be 'recompute', 'keep' or 'none'")
    if steps < 1 or lr <= 0 or shots < 1:
        raise InputError("need steps >= 1, lr > 0 and shots >= 1")
    run = Path(run_dir) if run_dir is not None else default_run_dir(out)
    if resume and fresh:
        raise InputError("give resume or fresh, not both")
    if (run / "last.pt").exists() and not resume:
        if not fresh:
            raise FewShotError(f"an unfinished fine-tune is in {run}; pass resume (--resume) to continue it "
                               "or fresh (--fresh) to start over")
        shutil.rmtree(run)

    # data: selected classes -> (train, val) by class, through the encoder's preprocessing
    full = load_training_data(data, base, index_dir if index_dir is not None else into)
    chosen = parse_classes(classes, full.classes)
    train_cls, val_cls = split_classes(chosen, val_fraction, seed)
    pre = base.preprocess
    selected = to_encoder_arrays(_subset_classes(full, chosen), pre)
    train_ds, val_ds = _subset_classes(selected, train_cls), _subset_classes(selected, val_cls) if val_cls else None
    counts = {c: n for c, n in zip(*np.unique(train_ds.labels, return_counts=True))}
    train_ds = expand_classes(train_ds, expand)
    val_ds = expand_classes(val_ds, expand) if val_ds is not None else None
    n_train_classes = len(train_ds.classes)
    w = min(ways or DEFAULTS["ways"], n_train_classes)
    if w < 2:
        raise InputError(f"fine-tuning needs >= 2 training classes; got {n_train_classes}")
    if batch_size is not None:
        if queries is not None:
            raise InputError("give queries or batch_size, not both")
        q = batch_size // w - shots
        if q < 1:
            raise InputError(f"batch_size {batch_size} is too small for {w} classes x ({shots} shots + 1 query)")
    else:
        q = queries if queries is not None else DEFAULTS["queries"]
    q = min(q, min(counts.values()) - shots)
    if q < 1:
        raise InputError(f"a training class has only {min(counts.values())} examples; "
                         f"need > shots ({shots}) per class")

    loss_fn = make_loss(loss, **(loss_kwargs or {}))
    if loss == "proto" and base.temperature and "init_scale" not in (loss_kwargs or {}):
        with torch.no_grad():  # start from the scale the encoder was trained with
            loss_fn.log_scale.fill_(float(np.log(1.0 / base.temperature)))
    cfg = TrainConfig(ways=w, shots=shots, queries=q, steps=steps, lr=lr, weight_decay=weight_decay,
                      warmup=warmup if warmup is not None else min(20, steps // 10),
                      rotations=False, augment=augment, val_every=val_every, val_episodes=val_episodes,
                      val_ways=val_ways, val_within_group=False, val_at_start=True,
                      patience=patience if val_ds is not None else 0,
                      checkpoint_every=checkpoint_every, seed=seed, threads=threads,
                      extra={"loss": loss, "loss_kwargs": dict(loss_kwargs or {})})
    module = copy.deepcopy(base.module)
    params, frozen, n_blocks, n_frozen = freeze_blocks(module, train_last, freeze_until)
    meta = {"base": base.name, "base_fingerprint": base.fingerprint, "loss": loss,
            "loss_kwargs": dict(loss_kwargs or {}), "train_classes": train_cls, "val_classes": val_cls,
            "trainable_blocks": n_blocks - n_frozen,
            "ways": w, "shots": shots, "queries": q, "lr": lr, "seed": seed, "augment": augment,
            "expand": expand}
    if resume and (run / "last.pt").exists():
        _check_resume(run / "last.pt", meta)
    summary = fit_episodic(module, loss_fn, train_ds, run, cfg, val=val_ds, to_tensor=pre.normalize,
                           params=params, frozen=frozen, progress=progress, log=log, desc=f"finetune ({loss})",
                           checkpoint_meta=meta)
    best = run / "best.pt"
    improved = None
    if val_ds is not None and best.exists():
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
        # val_at_start: best.pt holds the starting weights until a validation beats them
        improved = bool(summary["best_val_acc"] > summary["val_acc_start"])
    module.eval()
    for p in module.parameters():
        p.requires_grad_(True)

    new = _make_encoder(base, module, name or (Path(out).stem if out is not None else f"{base.name}-ft"),
                        centre, selected, loss_fn.temperature() if improved is not False else None)
    path = None
    if out is not None:
        path = Path(out)
        new.save(path)
        new = reg.from_file(path)  # so indexes record it by path, exactly as it will load again
    summary.update({"base": base.name, "base_fingerprint": base.fingerprint, "train_classes": train_cls,
                    "val_classes": val_cls, "n_train_images": len(train_ds), "ways": w, "shots": shots,
                    "queries": q, "expand": expand, "trainable_blocks": meta["trainable_blocks"],
                    "blocks": n_blocks,
                    "centre": centre, "improved": improved, "seconds_total": round(time.time() - t_start, 1),
                    "run_dir": str(run)})
    if path is not None and not keep_run:
        shutil.rmtree(run, ignore_errors=True)
        summary["run_dir"] = None
    if into is not None:
        try:
            summary["into"] = switch_index(into, new, progress=progress)
        except Exception as exc:  # the index is intact; say how to retry without training again
            retry = f"; retry with `fewshot reindex {into} --encoder {path}`" if path is not None else ""
            raise FewShotError(f"could not switch {into} to the new encoder ({type(exc).__name__}: {exc}); "
                               f"the index is unchanged{retry}") from exc
    return FinetuneResult(new, path, summary)


def _check_resume(last: Path, meta: dict) -> None:
    import torch

    ck = torch.load(last, map_location="cpu", weights_only=True)
    old = ck.get("meta") or {}
    diff = [k for k in meta if k in old and old[k] != meta[k]]
    if diff:
        raise FewShotError(f"cannot resume {last.parent}: it was started with different "
                           f"{', '.join(diff)} ({', '.join(f'{k}={old[k]!r}' for k in diff[:3])}); "
                           "use the same options, or --fresh to start over")


def _make_encoder(base, module, name: str, centre: str, data: LabelledSet, temperature: float | None):
    """A new TorchImageEncoder with the fine-tuned module (fingerprint follows the weights)."""
    from fewshot.encoders.base import TorchImageEncoder

    tta = int(getattr(base, "tta_shift", 0) or 0)
    c = base.centre if centre == "keep" else None
    if centre == "recompute":
        plain = TorchImageEncoder(name, module, base.dim, base.preprocess, base.arch, base.arch_kwargs,
                                  tta_shift=tta)
        x = base.preprocess.normalize(data.items)
        c = np.concatenate([plain.embed_tensor(x[i:i + 256]) for i in range(0, len(x), 256)]).mean(0)
    enc = TorchImageEncoder(name, module, base.dim, base.preprocess, base.arch, base.arch_kwargs,
                            weights_source="finetune", centre=c,
                            temperature=temperature if temperature else base.temperature,
                            threads=getattr(base, "threads", 0), tta_shift=tta)
    enc.invalidate()
    return enc


def switch_index(index_dir: str | os.PathLike, encoder, progress: bool = False) -> dict:
    """Switch an index to ``encoder``: re-embed every stored example in one atomic commit.

    The old encoder need not load (only the stored copies matter). If anything
    fails before the commit, the index stays on its old encoder, unchanged.
    """
    from fewshot.fewshot_index import FewShotIndex
    from index import open_store

    with FewShotIndex(open_store(index_dir), encoder) as idx:
        old = idx.store.extra.get("fingerprint")
        out = idx.reindex(encoder, progress=progress)
    return {"index": str(index_dir), "old_fingerprint": old, **out}


def summary_json(result: FinetuneResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str)


__all__ = ["finetune", "FinetuneResult", "parse_classes", "split_classes", "freeze_blocks", "encoder_blocks",
           "load_training_data", "dataset_from_index", "switch_index", "DEFAULTS"]
