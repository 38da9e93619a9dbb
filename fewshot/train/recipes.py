"""Recipes on top of the one loop: :func:`finetune` an encoder of any kind, :func:`train` one from scratch.

Fine-tuning adapts a pretrained encoder (the image CNN, the stroke GRU, any
Torch encoder; a fusion encoder through its parts) to a user's labelled classes
(then never used as test classes): the data goes through the encoder's own
preprocessing, a share of the classes is held out for early stopping, early
blocks can be frozen, and :func:`fewshot.train.loop.fit` runs with one of the
losses of :mod:`fewshot.losses`. The result is a new encoder file with its own
fingerprint. The run keeps ``last.pt``/``best.pt`` in a run folder (default
``<out>.run/``), so a Ctrl-C leaves the last good checkpoint and ``resume=True``
continues where it stopped; the folder is removed once the encoder file is written.

Few examples per class (the normal few-shot case) are planned for, not refused:
queries are lowered to what the smallest class allows, a class with a single
example is trained on two augmented views of it, and validation uses as many
queries as the held-out classes allow, or is skipped when they cannot host one;
``summary["notes"]`` says which of these happened.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fewshot.data.dataset import LabelledSet
from fewshot.errors import EncoderError, FewShotError, InputError
from fewshot.train.batches import BATCHERS, make_batcher
from fewshot.train.classes import EXPANSIONS, expand_classes
from fewshot.train.devices import resolve_device
from fewshot.train.loop import LossTerm, TrainConfig, fit
from fewshot.train.prepare import freeze_blocks, load_training_data, parse_classes, split_classes, to_encoder_arrays

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


def index_finetune_base(encoder: Any) -> Any:
    """What fine-tuning an index's encoder starts from: the encoder itself, or for an ensemble (the image
    default) its Conv-4 member, the network images are fine-tuned from by default; the index then moves to it."""
    from fewshot.encoders.ensemble import ImageEnsemble

    if isinstance(encoder, ImageEnsemble):
        return next((m for m in encoder.members if m.name == "omniglot-conv4"), encoder.members[0])
    return encoder


def check_trainable(encoder: Any) -> None:
    """A Torch encoder of a kind with a batcher can be fine-tuned; a fusion encoder through its parts."""
    from fewshot.encoders.ensemble import ImageEnsemble
    from fewshot.encoders.fusion import FusionEncoder
    from fewshot.encoders.registry import kind_class

    if isinstance(encoder, ImageEnsemble):
        raise EncoderError(f"encoder {encoder.name!r} is an ensemble of {len(encoder.members)} networks; fine-tune "
                           f"one of them (--encoder {' or '.join(m.name for m in encoder.members)})")
    if isinstance(encoder, FusionEncoder):
        raise EncoderError(f"encoder {encoder.name!r} fuses two encoders; fine-tune its parts "
                           f"({encoder.sequence.name} on strokes, {encoder.image.name} on images) and fuse those")
    kind = getattr(encoder, "input_kind", None)
    if kind not in BATCHERS or not isinstance(getattr(encoder, "module", None), torch.nn.Module) \
            or getattr(encoder, "preprocess", None) is None:
        raise EncoderError(f"encoder {getattr(encoder, 'name', encoder)!r} is not a torch encoder; fine-tuning "
                           "works on torch encoders (e.g. omniglot-conv4, resnet18, omniglot-strokes-gru, text-gru, "
                           "minilm)")
    if not (isinstance(encoder, kind_class(kind)) or hasattr(encoder, "finetuned")):
        raise EncoderError(f"encoder {encoder.name!r} cannot be fine-tuned here yet; fine-tune a "
                           f"{kind_class(kind).__name__} (e.g. text-gru for text)")


def default_run_dir(out: str | os.PathLike | None) -> Path:
    if out is None:
        raise InputError("give out= (the new encoder file) or run_dir= (where checkpoints go)")
    p = Path(out)
    return p.with_name(p.name + ".run")


def auto_expand(encoder: Any) -> str:
    """Symmetry classes that suit the encoder's inputs: handwriting yes, photos and time series no."""
    pre = encoder.preprocess
    if encoder.input_kind == "image":
        return "dihedral" if pre.channels == 1 else "none"
    return "rotations" if getattr(pre, "kind", "") == "strokes" else "none"


def auto_augment(encoder: Any, augment: bool | dict) -> bool | dict:
    """``augment=True`` for a photo encoder (colour images) also mirrors half the images left-right:
    a mirrored dog is a dog, a mirrored character is another character (grayscale: never)."""
    if augment is True and encoder.input_kind == "image" and encoder.preprocess.channels == 3:
        return {"hflip": True}
    return augment


def _class_counts(ds: LabelledSet) -> dict[str, int]:
    labels, counts = np.unique(ds.labels, return_counts=True)
    return {str(c): int(n) for c, n in zip(labels, counts)}


def _singletons_twice(ds: LabelledSet, augment: bool, notes: list[str]) -> LabelledSet:
    """Classes with one example get it twice: two augmented views make a support and a query."""
    counts = _class_counts(ds)
    single = [i for i, lab in enumerate(ds.labels) if counts[lab] == 1]
    if not single:
        return ds
    if not augment:
        raise InputError(f"{len(single)} training class(es) have a single example; with augmentation off there "
                         "is nothing to pair it with: turn augmentation on or give two examples per class")
    notes.append(f"{len(single)} training class(es) have one example: trained on two augmented views of it")
    return LabelledSet.concat([ds, ds.subset(single)])


def plan_split(full: LabelledSet, chosen: list[str], val_fraction: float, seed: int, notes: list[str]
               ) -> tuple[list[str], list[str], int]:
    """(train classes, validation classes, validation queries): validation only where it can be measured."""
    counts = _class_counts(full.with_classes(chosen))
    smallest = min(counts.values())
    if val_fraction > 0 and smallest < 2:
        notes.append("no validation: classes with a single example cannot be held out and still measured; "
                     "all classes train and every step runs (no early stopping)")
        return sorted(chosen), [], 0
    train_cls, val_cls = split_classes(chosen, val_fraction, seed)
    val_q = min(5, min((counts[c] for c in val_cls), default=6) - 1)
    if val_cls and val_q < 5:
        notes.append(f"validation on {len(val_cls)} held-out classes with 1 shot and {val_q} "
                     f"quer{'y' if val_q == 1 else 'ies'} per class (their smallest class has {val_q + 1} examples)")
    return train_cls, val_cls, val_q


def episode_shape(counts: dict[str, int], n_classes: int, ways: int | None, shots: int, queries: int | None,
                  batch_size: int | None, notes: list[str]) -> tuple[int, int]:
    """(ways, queries) per step: at most the classes there are, queries lowered to the smallest class."""
    w = min(ways or DEFAULTS["ways"], n_classes)
    if w < 2:
        raise InputError(f"fine-tuning needs >= 2 training classes; got {n_classes}")
    if batch_size is not None:
        if queries is not None:
            raise InputError("give queries or batch_size, not both")
        q = batch_size // w - shots
        if q < 1:
            raise InputError(f"batch_size {batch_size} is too small for {w} classes x ({shots} shots + 1 query)")
    else:
        q = queries if queries is not None else DEFAULTS["queries"]
    smallest = min(counts.values())
    if smallest - shots < 1:
        raise InputError(f"a training class has only {smallest} examples; need > shots ({shots}) per class")
    if smallest - shots < q:
        notes.append(f"{smallest - shots} quer{'y' if smallest - shots == 1 else 'ies'} per class per step "
                     f"(the smallest training class has {smallest} examples)")
    return int(w), int(min(q, smallest - shots))


def loss_terms(loss: str, loss_kwargs: dict | None, base: Any, classes: list[str] | None = None) -> list[LossTerm]:
    """The metric loss, a prototypical one starting from the scale the encoder was trained with;
    cross-entropy (``"ce"``) gets a head over the training ``classes``."""
    from fewshot.losses import make_loss

    kwargs = dict(loss_kwargs or {})
    if loss == "ce":
        kwargs.update(dim=base.dim, classes=list(classes or ()))
    fn = make_loss(loss, **kwargs)
    if loss == "proto" and base.temperature and "init_scale" not in (loss_kwargs or {}):
        with torch.no_grad():
            fn.log_scale.fill_(float(np.log(1.0 / base.temperature)))
    return [LossTerm(loss, fn)]


def kind_batcher(data: LabelledSet, cfg: TrainConfig, encoder: Any) -> Any:
    """The data kind's batcher fed with the encoder's own preprocessing (tokeniser, for text)."""
    if data.kind == "image":
        return make_batcher(data, cfg, to_tensor=encoder.preprocess.normalize)
    if data.kind == "text":
        return make_batcher(data, cfg, tokenize=encoder.tokenize)
    return make_batcher(data, cfg, pre=encoder.preprocess)


def new_encoder(base: Any, module: torch.nn.Module, name: str, centre: str, data: LabelledSet,
                temperature: float | None) -> Any:
    """An encoder of ``base``'s kind around the fine-tuned module (its fingerprint follows the weights).

    An encoder that is not an encoder file of its kind (a sentence transformer) makes its own
    (``base.finetuned``): it has no centre or temperature of fewshot's to carry."""
    from fewshot.train.export import encoder_from_module

    if hasattr(base, "finetuned"):
        return base.finetuned(module, name)

    extra = {**type(base)._config_kwargs(base.config()), "threads": getattr(base, "threads", 0)}
    make = lambda c, **kw: encoder_from_module(base.input_kind, name, module, base.dim, base.preprocess,  # noqa: E731
                                               base.arch, base.arch_kwargs, centre=c, **extra, **kw)
    c = base.centre if centre == "keep" else None
    if centre == "recompute":
        plain = make(None)
        if data.kind == "image":
            x = base.preprocess.normalize(data.items)
            c = np.concatenate([plain.embed_tensor(x[i:i + 256]) for i in range(0, len(x), 256)]).mean(0)
        else:
            c = plain.embed(list(data.items), batch_size=256).mean(0)
    enc = make(c, weights_source="finetune", temperature=temperature if temperature else base.temperature)
    enc.invalidate()
    return enc


def _run_folder(out: Any, run_dir: Any, resume: bool, fresh: bool) -> Path:
    """The checkpoint folder; an unfinished run there is resumed, discarded, or an error."""
    run = Path(run_dir) if run_dir is not None else default_run_dir(out)
    if resume and fresh:
        raise InputError("give resume or fresh, not both")
    if (run / "last.pt").exists() and not resume:
        if not fresh:
            raise FewShotError(f"an unfinished fine-tune is in {run}; pass resume (--resume) to continue it "
                               "or fresh (--fresh) to start over")
        shutil.rmtree(run)
    return run


def _check_resume(last: Path, meta: dict) -> None:
    ck = torch.load(last, map_location="cpu", weights_only=True)
    old = ck.get("meta") or {}
    diff = [k for k in meta if k in old and old[k] != meta[k]]
    if diff:
        raise FewShotError(f"cannot resume {last.parent}: it was started with different "
                           f"{', '.join(diff)} ({', '.join(f'{k}={old[k]!r}' for k in diff[:3])}); "
                           "use the same options, or --fresh to start over")


@dataclass
class _Data:
    """The prepared fine-tuning data."""

    selected: LabelledSet  # the chosen classes, through the encoder's preprocessing
    train: LabelledSet  # training classes, expanded, single examples doubled
    val: LabelledSet | None
    train_cls: list[str]
    val_cls: list[str]
    val_queries: int
    counts: dict[str, int]  # examples per training class (before expansion)


def _prepare_data(base: Any, data: Any, index_dir: Any, classes: Any, val_fraction: float, seed: int,
                  expand: str, augment: bool, notes: list[str]) -> _Data:
    full = load_training_data(data, base, index_dir)
    chosen = parse_classes(classes, full.classes)
    train_cls, val_cls, val_q = plan_split(full, chosen, val_fraction, seed, notes)
    selected = to_encoder_arrays(full.with_classes(chosen), base.preprocess)
    train = _singletons_twice(selected.with_classes(train_cls), augment, notes)
    counts = _class_counts(train)
    val = expand_classes(selected.with_classes(val_cls), expand) if val_cls else None
    return _Data(selected, expand_classes(train, expand), val, train_cls, val_cls, val_q, counts)


def _finish(base: Any, module: torch.nn.Module, run: Path, summary: dict, has_val: bool) -> bool | None:
    """Load the best weights (the starting ones unless a validation beat them); whether training improved."""
    improved = None
    if has_val and (run / "best.pt").exists():
        module.load_state_dict(torch.load(run / "best.pt", map_location="cpu", weights_only=True))
        improved = bool(summary["best_val_acc"] > summary["val_acc_start"])
    module.eval()
    for p in module.parameters():
        p.requires_grad_(True)
    return improved


def finetune(encoder: Any = "omniglot-conv4", data: Any = "digits", *, classes: Any = None,
             loss: str = "proto", loss_kwargs: dict | None = None,
             ways: int | None = None, shots: int = 1, queries: int | None = None, batch_size: int | None = None,
             steps: int = DEFAULTS["steps"], lr: float | None = None, weight_decay: float = 0.0,
             warmup: int | None = None, train_last: int | None = None, freeze_until: int | None = None,
             augment: bool | dict = True, expand: str = DEFAULTS["expand"], val_fraction: float = DEFAULTS["val_fraction"],
             patience: int = DEFAULTS["patience"], val_every: int = DEFAULTS["val_every"],
             val_episodes: int = DEFAULTS["val_episodes"], val_ways: int = 5, checkpoint_every: int = 25,
             seed: int = 0, centre: str = "keep", out: str | os.PathLike | None = None,
             name: str | None = None, run_dir: str | os.PathLike | None = None, resume: bool = False,
             fresh: bool = False, keep_run: bool = False, threads: int = 0, device: str = "cpu",
             progress: bool = True, log: Callable[[str], None] | None = None,
             index_dir: str | os.PathLike | None = None) -> FinetuneResult:
    """Fine-tune ``encoder`` on labelled ``data`` with a metric-learning loss; return the new encoder.

    See :func:`fewshot.finetune.finetune` for the parameters (it adds ``into=``, switching an index).
    """
    from fewshot import encoders as reg

    t_start, notes = time.time(), []
    base = reg.load(encoder) if isinstance(encoder, (str, os.PathLike)) else encoder
    check_trainable(base)
    lr = lr if lr is not None else getattr(base, "finetune_lr", DEFAULTS["lr"])
    expand = auto_expand(base) if expand == "auto" else expand
    augment = auto_augment(base, augment)
    if expand not in EXPANSIONS:
        raise InputError(f"expand must be auto or one of {', '.join(EXPANSIONS)}")
    if centre not in ("recompute", "keep", "none"):
        raise InputError("centre must be 'recompute', 'keep' or 'none'")
    if steps < 1 or lr <= 0 or shots < 1:
        raise InputError("need steps >= 1, lr > 0 and shots >= 1")
    resolve_device(device)  # an unknown or absent device fails before any data is read
    run = _run_folder(out, run_dir, resume, fresh)
    d = _prepare_data(base, data, index_dir, classes, val_fraction, seed, expand, augment, notes)
    w, q = episode_shape(d.counts, len(d.train.classes), ways, shots, queries, batch_size, notes)
    terms = loss_terms(loss, loss_kwargs, base, d.train.classes)
    cfg = TrainConfig(ways=w, shots=shots, queries=q, steps=steps, lr=lr, weight_decay=weight_decay,
                      warmup=warmup if warmup is not None else min(20, steps // 10), rotations=False,
                      symmetries=1, augment=augment, val_every=val_every, val_episodes=val_episodes,
                      val_ways=val_ways, val_queries=max(d.val_queries, 1), val_within_group=False,
                      val_at_start=True, patience=patience if d.val is not None else 0,
                      checkpoint_every=checkpoint_every, seed=seed, threads=threads, device=device,
                      extra={"loss": loss, "loss_kwargs": dict(loss_kwargs or {})})
    module = copy.deepcopy(base.training_module())
    params, frozen, n_blocks, n_frozen = freeze_blocks(module, train_last, freeze_until)
    meta = {"base": base.name, "base_fingerprint": base.fingerprint, "loss": loss,
            "loss_kwargs": dict(loss_kwargs or {}), "train_classes": d.train_cls, "val_classes": d.val_cls,
            "trainable_blocks": n_blocks - n_frozen, "ways": w, "shots": shots, "queries": q, "lr": lr,
            "seed": seed, "augment": augment, "expand": expand}
    if resume and (run / "last.pt").exists():
        _check_resume(run / "last.pt", meta)
    summary = fit(module, terms, kind_batcher(d.train, cfg, base), d.train, run, cfg, val=d.val,
                  params=params, frozen=frozen, progress=progress, log=log, desc=f"finetune ({loss})",
                  checkpoint_meta=meta)
    improved = _finish(base, module, run, summary, d.val is not None)
    new = new_encoder(base, module, name or (Path(out).stem if out is not None else f"{base.name}-ft"), centre,
                      d.selected, terms[0].loss.temperature() if improved is not False else None)
    path = None
    if out is not None:
        path = Path(out)
        new.save(path)
        # reloaded, so indexes record it by path, exactly as it will load again
        new = reg.from_file(path) if path.is_file() else reg.resolve(str(path.resolve()))
    summary.update({"base": base.name, "base_fingerprint": base.fingerprint, "input_kind": base.input_kind,
                    "train_classes": d.train_cls, "val_classes": d.val_cls, "n_train_images": len(d.train),
                    "ways": w, "shots": shots, "queries": q, "expand": expand, "trainable_blocks": n_blocks - n_frozen,
                    "blocks": n_blocks, "centre": centre, "improved": improved, "notes": notes,
                    "seconds_total": round(time.time() - t_start, 1), "run_dir": str(run)})
    if path is not None and not keep_run:
        shutil.rmtree(run, ignore_errors=True)
        summary["run_dir"] = None
    return FinetuneResult(new, path, summary)


# --- training from scratch --------------------------------------------------------------------
def train_model(model: torch.nn.Module, train: LabelledSet, out_dir: str | os.PathLike, cfg: TrainConfig,
                val: LabelledSet | None = None, pre: Any = None, teacher: Any = None, progress: bool = True,
                log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` in place with the prototypical loss on ``train``'s kind; resumes from ``out_dir``.

    Images get ``cfg.rotations`` (x4 classes); pen strokes ``cfg.symmetries``
    classes (``pre`` is the sequence preprocessing); a ``teacher`` image encoder
    adds the distillation term (``cfg.distill_weight``) on ``cfg.teacher_views``
    rendered views of every training sequence.
    """
    from fewshot.losses import DistillationLoss, PrototypicalLoss
    from fewshot.train.classes import expand_symmetries

    if train.kind == "image":
        sym = 4 if cfg.rotations else 1
    else:
        sym = cfg.symmetries if pre.kind == "strokes" else 1
    data = expand_symmetries(train, sym)
    terms = [LossTerm("proto", PrototypicalLoss(cfg.init_scale))]
    kwargs: dict = {} if train.kind == "image" else {"pre": pre}
    if teacher is not None and cfg.distill_weight > 0:
        from fewshot.train.distill import teacher_views

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        views, targets = teacher_views(teacher, data, cfg, Path(out_dir), log)
        kwargs.update(views=views, targets=targets)
        terms.append(LossTerm("distill", DistillationLoss(model.out_dim, targets.shape[-1]), cfg.distill_weight))
    return fit(model, terms, make_batcher(data, cfg, **kwargs), data, out_dir, cfg, val=val, progress=progress,
               log=log)


def _train_config(o: Any, pre: Any, train: LabelledSet, need: int, log: Callable[[str], None]) -> TrainConfig:
    """The loop's config for ``fewshot train`` options (the family's recipe)."""
    from fewshot.train.loop import SequenceTrainConfig
    from fewshot.train.scratch import group_ways

    extra = {"data": str(o.data), "held_out": o.held_out, "arch": o.arch}
    wgf = o.within_group_fraction
    if o.family == "conv":
        return TrainConfig(ways=o.ways, shots=o.shots, queries=o.queries, steps=o.steps, lr=o.lr, seed=o.seed,
                           rotations=o.rotations, within_group_fraction=wgf, threads=o.threads, device=o.device,
                           extra={**extra, "width": o.width, "depth": o.depth, "size": o.size})
    gw = min(o.ways, 20)  # what the loop draws within one group
    if wgf > 0 and group_ways(train, need) < gw:
        msg = f"no training group (alphabet) has {gw} classes with >= {need} examples"
        if o.wgf_given:
            raise InputError(f"--within-group-fraction: {msg}; pass --within-group-fraction 0")
        log(f"note: {msg}; training on episodes across groups only")
        wgf = 0.0
    return SequenceTrainConfig(ways=o.ways, shots=o.shots, queries=o.queries, steps=o.steps, lr=o.lr, seed=o.seed,
                               symmetries=4 if o.rotations else 1, within_group_fraction=wgf, threads=o.threads,
                               device=o.device, extra={**extra, "teacher": o.teacher, "preprocess": pre.to_dict()})


def train(options: Any, progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Train an encoder from scratch (:class:`~fewshot.train.scratch.TrainOptions`) and export
    ``OUT/encoder.pt``; resumes a run in ``OUT``. Returns the ``fewshot train --json`` dict."""
    from fewshot.data.registry import describe_dataset
    from fewshot.train import scratch
    from fewshot.train.export import export_image_encoder, export_sequence_encoder

    log = log or (lambda line: None)
    o = options.resolved()
    o.wgf_given = options.within_group_fraction is not None
    out = Path(o.out_dir)
    resolve_device(o.device)  # an unknown or absent device fails before any data is read
    scratch.check_same_shape(o, out)
    if o.threads:
        torch.set_num_threads(o.threads)
    t0 = time.time()
    ds, train_ds, val = scratch.load_split(o)
    model, arch, arch_kwargs, pre = scratch.build_model(train_ds, o)
    resumed_from = scratch.resumed_step(out / "last.pt", model, scratch.shape_text(o))
    need = o.shots + o.queries
    rotated = o.rotations and (pre is None or pre.kind == "strokes")  # series get no rotations
    n_train = scratch.usable_classes(train_ds.labels, need) * (4 if rotated else 1)
    if n_train < o.ways:
        raise InputError(f"--ways {o.ways} needs {o.ways} training classes with >= {need} examples (shots + "
                         f"queries); {o.data} has {n_train}{' counting rotations' if rotated else ''}; lower --ways, "
                         "--shots or --queries")
    cfg = _train_config(o, pre, train_ds, need, log)
    if val is not None:
        vw = scratch.group_ways(val, 6)
        if vw < 2:
            raise InputError("the --held-out groups need 2 or more classes with >= 6 examples (1 shot + 5 queries) "
                             "in one group to validate on")
        cfg.val_ways = min(cfg.val_ways, vw)
    teacher = scratch.load_teacher(o.teacher)
    if teacher is not None:
        cfg.extra["teacher_fingerprint"] = teacher.fingerprint
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_args.json").write_text(json.dumps(o.args(), indent=2) + "\n")
    log(f"data: {describe_dataset(ds)} loaded in {time.time() - t0:.1f}s; train {len(train_ds.classes)} classes"
        + (f", validation {len(val.classes)} classes ({cfg.val_ways}-way within-group)" if val is not None else "")
        + (f"; resuming from step {resumed_from}" if resumed_from else ""))
    summary = train_model(model, train_ds, out, cfg, val=val, pre=pre, teacher=teacher, progress=progress, log=log)
    name = o.name or out.resolve().name
    if o.family == "conv":
        enc = export_image_encoder(out / "best.pt", out / "encoder.pt", train_ds, name, arch_kwargs, o.size,
                                   summary["scale"], arch)
    else:
        enc = export_sequence_encoder(out / "best.pt", out / "encoder.pt", pre, arch_kwargs, name, train_ds,
                                      summary["scale"])
    best = summary["best_val_acc"]
    return {"out_dir": str(out), "encoder": str(out / "encoder.pt"), "name": enc.name,
            "fingerprint": enc.fingerprint, "steps": o.steps, "resumed_from": resumed_from,
            "best_val_acc": best if val is not None and best >= 0 else None, "scale": summary["scale"],
            "seconds": summary["seconds"], "train_classes": len(train_ds.classes),
            "val_classes": len(val.classes) if val is not None else 0,
            "held_out": [h.strip() for h in o.held_out.split(",") if h.strip()], "arch": o.arch,
            "input_kind": enc.input_kind, "val_ways": cfg.val_ways}
