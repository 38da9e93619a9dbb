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

from fewshot.data.dataset import ImageDataset
from fewshot.episodes import EpisodeSampler
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
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 0  # 0 = torch default
    extra: dict = field(default_factory=dict)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [n,h,w] or [n,h,w,c] -> float32 [n,c,h,w] in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def expand_rotations(ds: ImageDataset) -> ImageDataset:
    """Add each class rotated by 90, 180 and 270 degrees as three new classes."""
    imgs = [ds.images] + [np.rot90(ds.images, k, axes=(1, 2)) for k in (1, 2, 3)]
    labels = list(ds.labels) + [f"{lab}@rot{90 * k}" for k in (1, 2, 3) for lab in ds.labels]
    return ImageDataset(np.ascontiguousarray(np.concatenate(imgs)), labels, list(ds.groups) * 4,
                        list(ds.sources) * 4)


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


class ProtoHead(nn.Module):
    """The learnable inverse temperature of the cosine prototype classifier."""

    def __init__(self, init_scale: float):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, support: torch.Tensor, query: torch.Tensor, ways: int, shots: int) -> torch.Tensor:
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


def episodic_accuracy(emb: np.ndarray, ds: ImageDataset, ways: int, shots: int, queries: int,
                      episodes: int, within_group: bool, seed: int) -> np.ndarray:
    """Per-episode accuracy of nearest-prototype classification on precomputed embeddings."""
    sampler = EpisodeSampler(ds.labels, ways, shots, queries, ds.groups, within_group, seed)
    accs = np.empty(episodes)
    for i, ep in enumerate(sampler(episodes)):
        sup_lab = np.repeat(np.arange(ways), shots)
        classes, protos = class_prototypes(emb[ep.support.ravel()], sup_lab)
        pred = np.asarray(classes)[prototype_scores(emb[ep.query.ravel()], protos).argmax(1)]
        accs[i] = (pred == np.repeat(np.arange(ways), queries)).mean()
    return accs


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train_episodic(model: nn.Module, train: ImageDataset, out_dir: str | os.PathLike,
                   cfg: TrainConfig, val: ImageDataset | None = None,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` in place; returns a summary. Resumes from ``out_dir/last.pt``.

    Writes ``last.pt`` (model, head, optimizer, step; for resuming), ``best.pt``
    (model state dict with the best validation accuracy, or the last one without
    validation), ``config.json`` and ``log.jsonl``.
    """
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    data = expand_rotations(train) if cfg.rotations else train
    x_all = images_to_tensor(data.images)
    head = ProtoHead(cfg.init_scale)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, -1.0
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["optimizer"])
        start, best = int(ck["step"]), float(ck["best_val"])
    sampler = EpisodeSampler(data.labels, cfg.ways, cfg.shots, cfg.queries, data.groups, False, cfg.seed)
    group_sampler = None
    if cfg.within_group_fraction > 0:
        group_sampler = EpisodeSampler(data.labels, min(cfg.ways, 20), cfg.shots, cfg.queries,
                                       data.groups, True, cfg.seed + 1)
    x_val = images_to_tensor(val.images) if val is not None else None
    logf = open(out / "log.jsonl", "a")
    model.train()
    t0, losses, accs, val_acc = time.time(), [], [], float("nan")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress,
               desc="train", dynamic_ncols=True)
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step, 7])
        use_group = group_sampler is not None and rng.random() < cfg.within_group_fraction
        ep = (group_sampler or sampler).episode(step) if use_group else sampler.episode(step)
        ways = ep.ways
        idx = np.concatenate([ep.support.ravel(), ep.query.ravel()])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x = random_affine(x_all[idx], cfg, gen)
        if transform is not None:
            x = transform(x)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        emb = model(x)
        n_sup = ways * cfg.shots
        logits = head(emb[:n_sup], emb[n_sup:], ways, cfg.shots)
        target = torch.arange(ways).repeat_interleave(cfg.queries)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        accs.append((logits.argmax(1) == target).float().mean().item())
        done = step + 1
        if x_val is not None and (done % cfg.val_every == 0 or done == cfg.steps):
            emb_val = embed_images(model, x_val, transform=transform)
            val_acc = float(episodic_accuracy(emb_val, val, cfg.val_ways, 1, 5, cfg.val_episodes,
                                              True, cfg.seed + 12345).mean())
            if val_acc > best:
                best = val_acc
                _atomic_save(model.state_dict(), out / "best.pt")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if x_val is None:
                _atomic_save(model.state_dict(), out / "best.pt")
            _atomic_save({"model": model.state_dict(), "head": head.state_dict(),
                          "optimizer": opt.state_dict(), "step": done, "best_val": best}, out / "last.pt")
            rec = {"step": done, "loss": float(np.mean(losses[-100:])), "train_acc": float(np.mean(accs[-100:])),
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


def export_image_encoder(state_dict_path: str | os.PathLike, out_path: str | os.PathLike,
                         train: ImageDataset | None, name: str, arch_kwargs: dict, size: int = 28,
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
        centre = embed_images(module, images_to_tensor(train.images)).mean(0)
    enc = TorchImageEncoder(name, module, dim, ImagePreprocess(size=size), arch, arch_kwargs,
                            weights_source=str(out_path), centre=centre,
                            temperature=None if scale is None else round(1.0 / scale, 6))
    enc.save(out_path)
    return enc
