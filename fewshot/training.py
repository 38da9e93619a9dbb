"""Episodic prototypical training (Snell et al., 2017) with a learnable temperature.

Each step draws an N-way K-shot episode, embeds support and query images,
builds class prototypes from the support set and minimises the cross-entropy of
the queries' softmax over ``scale * cos(query, prototype)``. The scale (inverse
temperature) is learned. Handwriting augmentation is a small random affine warp
per image; rotations by 90/180/270 degrees can be added as new classes (the
standard Omniglot trick that quadruples the number of training classes).

Checkpoints are plain state dicts (loadable with ``weights_only=True``), written
atomically; a run resumes from ``last.pt`` in its output folder. Episode ``i`` and
its augmentation depend only on ``(seed, i)``, so a resumed run is identical.

The loop itself is :func:`fit_episodic`: any :class:`fewshot.losses.MetricLoss`
(prototypical, batch-hard triplet, supervised contrastive), an optional subset
of trainable parameters (frozen blocks stay in eval mode), optional early
stopping on validation episodes. :func:`train_episodic` (training an encoder from
scratch) and :func:`fewshot.finetune.finetune` (adapting one) both call it.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data.dataset import LabelledSet
from fewshot.episodes import EpisodeSampler
from fewshot.evaluation.kernel import episode_accuracies
from fewshot.losses import MetricLoss, PrototypicalLoss, episode_accuracy
from fewshot.prototypes import class_prototypes, prototype_scores


@dataclass
class TrainConfig:
    ways: int = 60
    shots: int = 1
    queries: int = 5
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    init_scale: float = 10.0
    rotations: bool = True  # add 90/180/270-degree rotations as new classes
    max_rotate: float = 10.0  # degrees
    max_shear: float = 0.15
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_translate: float = 0.1  # fraction of the image
    within_group_fraction: float = 0.0  # share of episodes drawn within one alphabet
    val_every: int = 250
    val_episodes: int = 300
    val_ways: int = 20
    val_shots: int = 1
    val_queries: int = 5
    val_within_group: bool = True  # validation episodes drawn within one group (alphabet)
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    min_delta: float = 0.0  # an improvement must exceed this to reset the patience
    augment: bool = True  # random affine warp of every training image
    val_at_start: bool = False  # validate the starting weights too (fine-tuning: never end worse than the start)
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 0  # 0 = torch default
    extra: dict = field(default_factory=dict)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [n,h,w] or [n,h,w,c] -> float32 [n,c,h,w] in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def expand_rotations(ds: LabelledSet) -> LabelledSet:
    """Add each class rotated by 90, 180 and 270 degrees as three new classes."""
    imgs = [ds.items] + [np.rot90(ds.items, k, axes=(1, 2)) for k in (1, 2, 3)]
    labels = list(ds.labels) + [f"{lab}@rot{90 * k}" for k in (1, 2, 3) for lab in ds.labels]
    return LabelledSet(np.ascontiguousarray(np.concatenate(imgs)), labels, list(ds.groups) * 4,
                        list(ds.sources) * 4)


def expand_dihedral(ds: LabelledSet) -> LabelledSet:
    """Each class in its 8 dihedral versions (4 rotations x mirror), each a new class.

    For handwriting and symbols a mirrored or rotated character is a different
    character, so a handful of labelled classes becomes eight times as many: the
    Omniglot rotation trick, extended. Not for photos, where a mirrored cat is a cat.
    """
    mirror = LabelledSet(np.ascontiguousarray(ds.items[:, :, ::-1]), [f"{lab}@flip" for lab in ds.labels],
                          list(ds.groups), list(ds.sources))
    both = LabelledSet(np.concatenate([ds.items, mirror.items]), list(ds.labels) + mirror.labels,
                        list(ds.groups) * 2, list(ds.sources) * 2)
    return expand_rotations(both)


EXPANSIONS = ("none", "rotations", "dihedral")


def expand_classes(ds: LabelledSet, mode: str) -> LabelledSet:
    """``"none"``, ``"rotations"`` (x4 classes) or ``"dihedral"`` (x8 classes)."""
    if mode == "none":
        return ds
    if mode == "rotations":
        return expand_rotations(ds)
    if mode == "dihedral":
        return expand_dihedral(ds)
    raise ValueError(f"unknown class expansion {mode!r}; choose one of {', '.join(EXPANSIONS)}")


def random_affine(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """A small random rotation, shear, scale and translation per image (one grid_sample)."""
    n = x.shape[0]
    u = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
    ang = torch.deg2rad(u(-cfg.max_rotate, cfg.max_rotate))
    shear = u(-cfg.max_shear, cfg.max_shear)
    s = u(*cfg.scale_range)
    tx, ty = u(-cfg.max_translate, cfg.max_translate) * 2, u(-cfg.max_translate, cfg.max_translate) * 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos / s, (-sin + shear) / s, tx], 1),
                         torch.stack([sin / s, cos / s, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class ProtoHead(PrototypicalLoss):
    """The learnable inverse temperature of the cosine prototype classifier.

    Kept for callers of the episode-layout form ``head(support, query, ways, shots)
    -> logits``; it is a :class:`fewshot.losses.PrototypicalLoss` (same ``log_scale``
    state dict), which is what the training loop now uses.
    """

    def __init__(self, init_scale: float):
        super().__init__(init_scale)

    def forward(self, support: torch.Tensor, query: torch.Tensor,  # type: ignore[override]
                ways: int, shots: int) -> torch.Tensor:
        s = F.normalize(support, dim=-1).view(ways, shots, -1).mean(1)
        return self.log_scale.exp() * F.normalize(query, dim=-1) @ F.normalize(s, dim=-1).T


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def embed_images(model: nn.Module, x: torch.Tensor, batch: int = 512,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    was = model.training
    model.eval()
    out = [model(transform(x[i:i + batch]) if transform else x[i:i + batch]) for i in range(0, len(x), batch)]
    model.train(was)
    return torch.cat(out).numpy()


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def validation_sampler(val: LabelledSet, cfg: TrainConfig) -> EpisodeSampler:
    """Validation episodes: ``val_ways`` (at most the number of usable classes), fixed seed."""
    need = cfg.val_shots + cfg.val_queries
    counts: dict[str, int] = {}
    for lab in val.labels:
        counts[lab] = counts.get(lab, 0) + 1
    usable = sum(1 for n in counts.values() if n >= need)
    ways = min(cfg.val_ways, usable)
    within = cfg.val_within_group and len(set(val.groups)) > 1
    if within:  # as many ways as the smallest group that can still host an episode allows
        per_group: dict[str, set] = {}
        for lab, g in zip(val.labels, val.groups):
            if counts[lab] >= need:
                per_group.setdefault(g, set()).add(lab)
        ways = min(ways, max(len(s) for s in per_group.values()))
    if ways < 2:
        raise ValueError(f"validation needs >= 2 classes with >= {need} examples each; it has {usable}")
    return EpisodeSampler(val.labels, ways, cfg.val_shots, cfg.val_queries, val.groups, within, cfg.seed + 12345)


def episode_batch(x_all: torch.Tensor, ep, cfg: TrainConfig, step: int, shots: int
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The images of one episode (support first, class-major), augmented; labels ``0..ways-1``."""
    idx = np.concatenate([ep.support.ravel(), ep.query.ravel()])
    x = x_all[idx]
    if cfg.augment:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x = random_affine(x, cfg, gen)
    ways, queries = ep.ways, ep.query.shape[1]
    labels = torch.cat([torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat_interleave(queries)])
    return x, labels, ways * shots


def set_train_mode(model: nn.Module, frozen: tuple[nn.Module, ...] = ()) -> None:
    """Training mode, except frozen sub-modules (their BatchNorm statistics stay put)."""
    model.train()
    for m in frozen:
        m.eval()


def fit_episodic(model: nn.Module, loss_fn: MetricLoss, train: LabelledSet, out_dir: str | os.PathLike,
                 cfg: TrainConfig, val: LabelledSet | None = None,
                 to_tensor: Callable[[np.ndarray], torch.Tensor] = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 params: list[nn.Parameter] | None = None, frozen: tuple[nn.Module, ...] = (),
                 progress: bool = True, log: Callable[[str], None] | None = None,
                 desc: str = "train", checkpoint_meta: dict | None = None) -> dict:
    """Episodic metric learning of ``model`` in place with ``loss_fn``; resumes from ``out_dir/last.pt``.

    Every step draws an episode (``cfg.ways`` classes x ``shots + queries``),
    optionally augments it, and takes one Adam step on ``loss_fn`` over the
    trainable ``params`` (default: all of the model) plus the loss's own
    parameters. ``to_tensor`` turns uint8 images into the model's input
    (default :func:`images_to_tensor`). Every ``cfg.val_every`` steps the
    nearest-prototype accuracy on ``val`` episodes decides ``best.pt``; with
    ``cfg.patience`` it also stops the run early.

    Writes ``last.pt`` (model, head = loss state, optimizer, step, best_val, ...;
    for resuming), ``best.pt`` (model state dict of the best validation, or the
    last one without validation), ``config.json`` and ``log.jsonl``. All files
    are replaced atomically, so a kill at any moment leaves the previous ones.
    ``checkpoint_meta`` (JSON-able) is stored in ``last.pt`` as ``meta``.
    """
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    to_tensor = to_tensor or images_to_tensor
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    x_all = to_tensor(train.items)
    trainable = list(model.parameters()) if params is None else list(params)
    opt = torch.optim.Adam(trainable + list(loss_fn.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best, bad_evals, stopped, val_acc = 0, -1.0, 0, False, float("nan")
    val_start = float("nan")
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        loss_fn.load_state_dict(ck["head"])
        opt.load_state_dict(ck["optimizer"])
        start, best = int(ck["step"]), float(ck["best_val"])
        bad_evals, stopped = int(ck.get("bad_evals", 0)), bool(ck.get("stopped", False))
        val_acc = float(ck.get("val_acc", float("nan")))
        val_start = float(ck.get("val_start", float("nan")))
    sampler = EpisodeSampler(train.labels, cfg.ways, cfg.shots, cfg.queries, train.groups, False, cfg.seed)
    group_sampler = None
    if cfg.within_group_fraction > 0:
        group_sampler = EpisodeSampler(train.labels, min(cfg.ways, 20), cfg.shots, cfg.queries,
                                       train.groups, True, cfg.seed + 1)
    x_val = to_tensor(val.items) if val is not None else None
    val_sampler = validation_sampler(val, cfg) if val is not None else None

    def save_last(done: int) -> None:
        if x_val is None:
            _atomic_save(model.state_dict(), out / "best.pt")
        _atomic_save({"model": model.state_dict(), "head": loss_fn.state_dict(), "optimizer": opt.state_dict(),
                      "step": done, "best_val": best, "bad_evals": bad_evals, "stopped": stopped,
                      "val_acc": val_acc, "val_start": val_start, "loss": loss_fn.name,
                      "meta": dict(checkpoint_meta or {})},
                     out / "last.pt")

    if val_sampler is not None and cfg.val_at_start and start == 0:
        emb_val = embed_images(model, x_val, transform=transform)
        val_acc = best = val_start = float(episode_accuracies(emb_val, val_sampler, cfg.val_episodes).mean())
        _atomic_save(model.state_dict(), out / "best.pt")
    logf = open(out / "log.jsonl", "a")
    set_train_mode(model, frozen)
    t0, losses, accs, done = time.time(), [], [], start
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress or stopped,
               desc=desc, dynamic_ncols=True)
    try:
        for step in bar:
            if stopped:
                break
            rng = np.random.default_rng([cfg.seed, step, 7])
            use_group = group_sampler is not None and rng.random() < cfg.within_group_fraction
            ep = group_sampler.episode(step) if use_group else sampler.episode(step)
            x, target, n_sup = episode_batch(x_all, ep, cfg, step, cfg.shots)
            if transform is not None:
                x = transform(x)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            emb = model(x)
            loss = loss_fn(emb, target, n_sup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            accs.append(episode_accuracy(emb.detach(), target, n_sup))
            done = step + 1
            if val_sampler is not None and (done % cfg.val_every == 0 or done == cfg.steps):
                emb_val = embed_images(model, x_val, transform=transform)
                set_train_mode(model, frozen)
                val_acc = float(episode_accuracies(emb_val, val_sampler, cfg.val_episodes).mean())
                if val_acc > best + cfg.min_delta or best < 0:
                    best, bad_evals = max(val_acc, best), 0
                    _atomic_save(model.state_dict(), out / "best.pt")
                else:
                    bad_evals += 1
                    stopped = cfg.patience > 0 and bad_evals >= cfg.patience
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or stopped:
                save_last(done)
                rec = {"step": done, "loss": float(np.mean(losses[-100:])),
                       "train_acc": float(np.nanmean(accs[-100:])), "val_acc": val_acc,
                       "lr": lr_at(step, cfg), "elapsed_s": round(time.time() - t0, 1)}
                if isinstance(loss_fn, PrototypicalLoss):
                    rec["scale"] = loss_fn.scale.item()
                if stopped:
                    rec["stopped_early"] = True
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                if log:
                    log(json.dumps(rec))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", val=f"{val_acc:.3f}")
    finally:
        bar.close()
        logf.close()
    summary = {"steps": cfg.steps, "step": done, "best_val_acc": best, "val_acc": val_acc,
               "val_acc_start": val_start, "stopped_early": stopped, "loss": loss_fn.name,
               "seconds": round(time.time() - t0, 1), "out_dir": str(out)}
    if isinstance(loss_fn, PrototypicalLoss):
        summary["scale"] = loss_fn.scale.item()
    return summary


def train_episodic(model: nn.Module, train: LabelledSet, out_dir: str | os.PathLike,
                   cfg: TrainConfig, val: LabelledSet | None = None,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` in place with the prototypical loss; returns a summary. Resumes from ``out_dir/last.pt``.

    Writes ``last.pt`` (model, head, optimizer, step; for resuming), ``best.pt``
    (model state dict with the best validation accuracy, or the last one without
    validation), ``config.json`` and ``log.jsonl``.
    """
    data = expand_rotations(train) if cfg.rotations else train
    return fit_episodic(model, PrototypicalLoss(cfg.init_scale), data, out_dir, cfg, val=val,
                        transform=transform, progress=progress, log=log)


def export_image_encoder(state_dict_path: str | os.PathLike, out_path: str | os.PathLike,
                         train: LabelledSet | None, name: str, arch_kwargs: dict, size: int = 28,
                         scale: float | None = None, arch: str = "conv"):
    """Turn a training checkpoint into an encoder file (see ``Encoder.save``).

    The encoder's ``centre`` is the mean embedding of the training images (CL2N
    centring, computed once here) and its temperature is the inverse of the
    learned scale, which the index then uses for its softmax probabilities.
    """
    from fewshot.encoders.archs import build_arch
    from fewshot.encoders.base import TorchImageEncoder
    from fewshot.encoders.preprocess import ImagePreprocess

    module, dim = build_arch(arch, **arch_kwargs)
    module.load_state_dict(torch.load(state_dict_path, map_location="cpu", weights_only=True))
    centre = None
    if train is not None:
        centre = embed_images(module, images_to_tensor(train.items)).mean(0)
    enc = TorchImageEncoder(name, module, dim, ImagePreprocess(size=size), arch, arch_kwargs,
                            weights_source=str(out_path), centre=centre,
                            temperature=None if scale is None else round(1.0 / scale, 6))
    enc.save(out_path)
    return enc
