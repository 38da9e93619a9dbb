"""Episodic prototypical training and evaluation for sequence (RNN) encoders.

The same recipe as :mod:`fewshot.training` for images, whose pieces are reused
(:class:`~fewshot.training.ProtoHead`, :func:`~fewshot.training.lr_at`,
:func:`~fewshot.training.episodic_accuracy`, the checkpoint format): each step
draws an N-way K-shot episode, augments every sequence (affine warp of the
trajectory, jitter, time-stretch), packs the batch and minimises the
cross-entropy of ``scale * cos(query, prototype)``.

Two levers specific to pen strokes:

* symmetry classes: each character rotated by 90/180/270 degrees (and, with
  ``symmetries=8``, mirrored) is a new class, as for the CNN;
* distillation from an image encoder (``teacher``): the stroke trajectory is
  rendered to an image, the shipped CNN embeds it, and a linear head on the RNN
  embedding is trained towards it (cosine), so the RNN inherits what the CNN
  learned on 25 background alphabets of images. Teacher views are rendered once
  per run (``teacher_views`` augmented views per training sequence) and reused.

Episode ``i`` and its augmentation depend only on ``(seed, i)``; a run resumes
from ``out_dir/last.pt``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data.dataset import LabelledSet
from fewshot.encoders.fusion import fuse_embeddings  # noqa: F401  (moved; re-exported for callers)
from fewshot.encoders.sequence import TorchSequenceEncoder, build_sequence_arch, pack_batch
from fewshot.episodes import EpisodeSampler
from fewshot.evaluation.fusion import (choose_fusion_weight, evaluate_fusion, evaluate_sequences,  # noqa: F401
                                       fusion_parts)
from fewshot.evaluation.kernel import episode_accuracies
from fewshot.sequences import SequenceAugment, SequencePreprocess, augment_and_preprocess
from fewshot.training import ProtoHead, _atomic_save, lr_at


@dataclass
class SequenceTrainConfig:
    ways: int = 40
    shots: int = 1
    queries: int = 4
    steps: int = 1500
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 50
    init_scale: float = 10.0
    symmetries: int = 4  # strokes: 1 (none), 4 (90-degree rotations) or 8 (rotations and mirror images)
    within_group_fraction: float = 0.25
    distill_weight: float = 1.0  # used only with a teacher
    teacher_views: int = 6  # augmented views per sequence rendered for the teacher (view 0 = unaugmented)
    grad_clip: float = 5.0
    augment: dict = field(default_factory=dict)  # SequenceAugment fields
    reverse_prob: float = 0.0  # per stroke and step: draw it backwards (drawers differ in direction)
    shuffle_prob: float = 0.0  # per sequence and step: draw the strokes in another order
    val_every: int = 100
    val_episodes: int = 300
    val_ways: int = 20
    checkpoint_every: int = 50
    seed: int = 0
    threads: int = 0
    extra: dict = field(default_factory=dict)


# --- symmetry classes ---------------------------------------------------------------------------
_SYMS = [(k, False) for k in range(4)] + [(k, True) for k in range(4)]


def _transform_strokes(a: np.ndarray, k: int, mirror: bool, centre: tuple[float, float]) -> np.ndarray:
    """Rotate (x, y) by 90*k degrees about ``centre`` (and mirror x); the end-of-stroke column is kept."""
    out = a.copy()
    x, y = a[:, 0] - centre[0], a[:, 1] - centre[1]
    if mirror:
        x = -x
    for _ in range(k):
        x, y = -y, x
    out[:, 0], out[:, 1] = x + centre[0], y + centre[1]
    return out


def expand_symmetries(ds: LabelledSet, n: int, centre: tuple[float, float] = (52.5, -52.5)
                      ) -> LabelledSet:
    """Add rotated (and mirrored) copies of every class as new classes (``n`` in 1, 4, 8).

    The rotation centre defaults to the middle of Omniglot's 105-pixel canvas, so
    rotated characters stay where a renderer draws Omniglot coordinates.
    """
    if n not in (1, 4, 8):
        raise ValueError("symmetries must be 1, 4 or 8")
    seqs, labels, groups, sources = [], [], [], []
    for k, mirror in _SYMS[:n]:
        tag = "" if (k, mirror) == (0, False) else f"@{'m' if mirror else ''}rot{90 * k}"
        seqs += [_transform_strokes(s, k, mirror, centre) if tag else s for s in ds.items]
        labels += [lab + tag for lab in ds.labels]
        groups += [g + tag for g in ds.groups]  # a rotated alphabet is its own group
        sources += list(ds.sources)
    return LabelledSet(seqs, labels, groups, sources)


# --- embedding and evaluation ------------------------------------------------------------------
@torch.no_grad()
def embed_prepared(module: nn.Module, arrays: list[np.ndarray], batch: int = 256) -> np.ndarray:
    """Embeddings of already preprocessed arrays (eval mode, packed batches)."""
    was = module.training
    module.eval()
    out = [module(pack_batch(arrays[i:i + batch])) for i in range(0, len(arrays), batch)]
    module.train(was)
    return torch.cat(out).numpy()


# --- teacher -----------------------------------------------------------------------------------
@torch.no_grad()
def teacher_targets(teacher, raws: list[np.ndarray], batch: int = 512) -> torch.Tensor:
    """Teacher embeddings of stroke arrays rendered as Omniglot images, centred on their mean and
    L2-normalised (CL2N, as the image encoders are used)."""
    from fewshot.sequences import render_strokes

    out = []
    for i in range(0, len(raws), batch):
        arr = np.stack([teacher.preprocess.to_array(render_strokes(r)) for r in raws[i:i + batch]])
        out.append(torch.from_numpy(teacher.embed_tensor(teacher.preprocess.normalize(arr))))
    t = torch.cat(out)
    return F.normalize(t - t.mean(0), dim=-1)


# --- training ----------------------------------------------------------------------------------
def train_sequence_episodic(model: nn.Module, pre: SequencePreprocess, train: LabelledSet,
                            out_dir: str | os.PathLike, cfg: SequenceTrainConfig,
                            val: LabelledSet | None = None, teacher=None, progress: bool = True,
                            log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` (a :class:`~fewshot.encoders.sequence.SequenceRNN`) in place; returns a summary.

    Writes ``last.pt`` (model, head, optimizer, step; for resuming), ``best.pt``
    (the model state dict with the best validation accuracy, or the last one),
    ``config.json`` and ``log.jsonl`` in ``out_dir``, as :func:`fewshot.training.train_episodic`.
    """
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "preprocess": pre.to_dict()}, indent=2))
    torch.manual_seed(cfg.seed)
    sym = cfg.symmetries if pre.kind == "strokes" else 1
    data = expand_symmetries(train, sym) if sym > 1 else train
    aug = SequenceAugment(**cfg.augment)
    order_aug = {"reverse_prob": cfg.reverse_prob, "shuffle_prob": cfg.shuffle_prob} \
        if cfg.reverse_prob or cfg.shuffle_prob else {}
    head = ProtoHead(cfg.init_scale)
    modules: list[nn.Module] = [model, head]
    views = targets = None
    distill = None
    if teacher is not None and cfg.distill_weight > 0:
        t0 = time.time()
        views = [list(data.items)]
        for v in range(1, cfg.teacher_views):
            rng = np.random.default_rng([cfg.seed, v, 99])
            views.append([_augment_raw(s, aug, rng) for s in data.items])
        flat = [s for vs in views for s in vs]
        cache = out / "teacher_targets.pt"  # rendering is the slow part: keep it for resumed runs
        key = f"{teacher.fingerprint}:{len(flat)}:{cfg.seed}:{cfg.symmetries}:{json.dumps(cfg.augment, sort_keys=True)}"
        cached = torch.load(cache, weights_only=True) if cache.exists() else None
        if cached is not None and cached.get("key") == key:
            targets = cached["targets"]
        else:
            targets = teacher_targets(teacher, flat).view(len(views), len(data), -1)
            _atomic_save({"key": key, "targets": targets}, cache)
        distill = nn.Linear(model.out_dim, targets.shape[-1])
        modules.append(distill)
        if log:
            log(json.dumps({"teacher_views": len(flat), "seconds": round(time.time() - t0, 1)}))
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, -1.0
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        head.load_state_dict(ck["head"])
        if distill is not None and "distill" in ck:
            distill.load_state_dict(ck["distill"])
        opt.load_state_dict(ck["optimizer"])
        start, best = int(ck["step"]), float(ck["best_val"])
    sampler = EpisodeSampler(data.labels, cfg.ways, cfg.shots, cfg.queries, data.groups, False, cfg.seed)
    group_sampler = None
    if cfg.within_group_fraction > 0:
        group_sampler = EpisodeSampler(data.labels, min(cfg.ways, 20), cfg.shots, cfg.queries, data.groups,
                                       True, cfg.seed + 1)
    val_arrays = [pre.apply(s, src) for s, src in zip(val.items, val.sources)] if val is not None else None
    logf = open(out / "log.jsonl", "a")
    model.train()
    t0, losses, accs, val_acc = time.time(), [], [], float("nan")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress,
               desc="train", dynamic_ncols=True)
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step, 7])
        use_group = group_sampler is not None and rng.random() < cfg.within_group_fraction
        ep = group_sampler.episode(step) if use_group else sampler.episode(step)
        ways = ep.ways
        idx = np.concatenate([ep.support.ravel(), ep.query.ravel()])
        if views is not None:
            vi = rng.integers(len(views), size=len(idx))
            raws = [views[v][i] for v, i in zip(vi, idx)]
            # the teacher views already carry the affine warp; add only time-stretch and jitter here
            light = SequenceAugment(max_rotate=0, max_shear=0, scale_range=(1.0, 1.0), jitter=aug.jitter / 2,
                                    stretch_range=aug.stretch_range, **order_aug)
            arrays = [augment_and_preprocess(r, pre, light, rng) for r in raws]
        else:
            step_aug = SequenceAugment(**{**cfg.augment, **order_aug})
            arrays = [augment_and_preprocess(data.items[i], pre, step_aug, rng) for i in idx]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        emb = model(pack_batch(arrays))
        n_sup = ways * cfg.shots
        logits = head(emb[:n_sup], emb[n_sup:], ways, cfg.shots)
        target = torch.arange(ways).repeat_interleave(cfg.queries)
        loss = F.cross_entropy(logits, target)
        if distill is not None:
            tgt = targets[torch.from_numpy(vi), torch.from_numpy(idx)]
            loss = loss + cfg.distill_weight * (1 - F.cosine_similarity(distill(emb), tgt, dim=-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        accs.append((logits.argmax(1) == target).float().mean().item())
        done = step + 1
        if val_arrays is not None and (done % cfg.val_every == 0 or done == cfg.steps):
            emb_val = embed_prepared(model, val_arrays)
            val_acc = float(episode_accuracies(emb_val, EpisodeSampler(val.labels, cfg.val_ways, 1, 5, val.groups,
                                                                       True, cfg.seed + 12345), cfg.val_episodes).mean())
            if val_acc > best:
                best = val_acc
                _atomic_save(model.state_dict(), out / "best.pt")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if val_arrays is None:
                _atomic_save(model.state_dict(), out / "best.pt")
            ck = {"model": model.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                  "step": done, "best_val": best}
            if distill is not None:
                ck["distill"] = distill.state_dict()
            _atomic_save(ck, out / "last.pt")
            rec = {"step": done, "loss": float(np.mean(losses[-50:])), "train_acc": float(np.mean(accs[-50:])),
                   "val_acc": val_acc, "scale": head.log_scale.exp().item(), "lr": lr_at(step, cfg),
                   "elapsed_s": round(time.time() - t0, 1)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            if log:
                log(json.dumps(rec))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", val=f"{val_acc:.3f}")
    logf.close()
    return {"steps": cfg.steps, "best_val_acc": best, "scale": head.log_scale.exp().item(),
            "seconds": round(time.time() - t0, 1), "out_dir": str(out)}


def _augment_raw(raw: np.ndarray, aug: SequenceAugment, rng: np.random.Generator) -> np.ndarray:
    """An affine-warped, jittered copy of a raw stroke array (same layout, for rendering and training)."""
    from fewshot.sequences import array_to_strokes, strokes_to_array

    ss = array_to_strokes(raw)
    centre = np.concatenate(ss).mean(0)
    warped = aug.strokes([s - centre for s in ss], rng)
    return strokes_to_array([w + centre for w in warped])


def export_sequence_encoder(state_dict_path: str | os.PathLike, out_path: str | os.PathLike,
                            pre: SequencePreprocess, arch_kwargs: dict, name: str,
                            train: LabelledSet | None = None, scale: float | None = None
                            ) -> TorchSequenceEncoder:
    """Turn a training checkpoint into an encoder file (``TorchSequenceEncoder.save``).

    ``centre`` is the mean embedding of the training sequences (CL2N centring, as
    for the CNN) and the temperature is the inverse of the learned scale.
    """
    module, dim = build_sequence_arch("rnn", **arch_kwargs)
    module.load_state_dict(torch.load(state_dict_path, map_location="cpu", weights_only=True))
    centre = None
    if train is not None:
        centre = embed_prepared(module, [pre.apply(s) for s in train.items]).mean(0)
    enc = TorchSequenceEncoder(name, module, dim, pre, "rnn", arch_kwargs, weights_source=str(out_path),
                               centre=centre, temperature=None if scale is None else round(1.0 / scale, 6))
    enc.save(out_path)
    return enc
