"""The one episodic training loop: any input kind, any sum of loss terms, resumable.

Each step draws an N-way K-shot episode (a share of them within one group),
asks the kind's batcher (:mod:`fewshot.train.batches`) for the model input,
and takes one Adam step on the weighted sum of the loss terms
(:mod:`fewshot.losses`: prototypical, batch-hard triplet, SupCon, distillation),
with a warm-up + cosine learning-rate schedule and optional gradient clipping.
Frozen sub-modules stay in eval mode. Every ``val_every`` steps the
nearest-prototype accuracy on held-out classes (the one evaluation kernel)
chooses ``best.pt`` and, with ``patience``, stops the run early.

Files in ``out_dir``, each replaced atomically (a kill at any moment leaves the
previous ones): ``last.pt`` (model, loss terms, optimizer, step, validation
state; for resuming), ``best.pt`` (the model state dict of the best
validation, or the last one without validation), ``config.json``, ``log.jsonl``.
Episode ``i`` and its augmentation depend only on ``(seed, i)``, so a resumed
run is the run that was not interrupted.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fewshot.data.dataset import LabelledSet
from fewshot.encoders.files import atomic_torch_save
from fewshot.episodes import EpisodeSampler
from fewshot.evaluation.kernel import episode_accuracies
from fewshot.losses import MetricLoss, PrototypicalLoss, episode_accuracy
from fewshot.metrics import json_safe
from fewshot.train.batches import episode_batch
from fewshot.train.devices import cpu_state, resolve_device, to_device


@dataclass
class TrainConfig:
    """Every knob of a run; the defaults are the image CNN's recipe (see :class:`SequenceTrainConfig`)."""

    ways: int = 60
    shots: int = 1
    queries: int = 5
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    init_scale: float = 10.0
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    rotations: bool = True  # images: add 90/180/270-degree rotations as new classes (train())
    symmetries: int = 4  # strokes: 1 (none), 4 (rotations) or 8 (rotations and mirror images)
    augment: bool | dict = True  # images: random affine warp; sequences: a dict of SequenceAugment fields
    max_rotate: float = 10.0  # images, degrees
    max_shear: float = 0.15
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_translate: float = 0.1  # fraction of the image
    hflip: bool = False  # images: mirror half the images left-right (photos; never characters)
    reverse_prob: float = 0.0  # strokes: per stroke and step, draw it backwards
    shuffle_prob: float = 0.0  # strokes: per sequence and step, draw the strokes in another order
    distill_weight: float = 1.0  # weight of the distillation term (with a teacher only)
    teacher_views: int = 6  # augmented views per sequence rendered for the teacher (view 0 = unaugmented)
    within_group_fraction: float = 0.0  # share of episodes drawn within one alphabet
    val_every: int = 250
    val_episodes: int = 300
    val_ways: int = 20
    val_shots: int = 1
    val_queries: int = 5
    val_within_group: bool = True  # validation episodes drawn within one group (alphabet)
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    min_delta: float = 0.0  # an improvement must exceed this to reset the patience
    val_at_start: bool = False  # validate the starting weights too (fine-tuning: never end worse than the start)
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 0  # 0 = torch default
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (fewshot.train.devices); checkpoints stay CPU tensors
    extra: dict = field(default_factory=dict)


#: The stroke GRU's recipe: the same knobs as :class:`TrainConfig`, other defaults.
SEQUENCE_DEFAULTS = {"ways": 40, "queries": 4, "steps": 1500, "lr": 2e-3, "warmup": 50, "grad_clip": 5.0,
                     "augment": {}, "within_group_fraction": 0.25, "val_every": 100, "checkpoint_every": 50}


def SequenceTrainConfig(**kwargs: Any) -> TrainConfig:  # noqa: N802 - reads as the config it makes
    """A :class:`TrainConfig` with the sequence defaults (:data:`SEQUENCE_DEFAULTS`) under ``kwargs``."""
    return TrainConfig(**{**SEQUENCE_DEFAULTS, **kwargs})


@dataclass
class LossTerm:
    """One weighted term of the training loss; ``name`` keys its state in ``last.pt``."""

    name: str
    loss: MetricLoss
    weight: float = 1.0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_train_mode(model: nn.Module, frozen: tuple[nn.Module, ...] = ()) -> None:
    """Training mode, except frozen sub-modules (their BatchNorm statistics stay put)."""
    model.train()
    for m in frozen:
        m.eval()


def usable_ways(labels: list[str], groups: list[str], need: int, within: bool) -> int:
    """How many classes with >= ``need`` examples one episode can have (within one group if asked)."""
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    if not within:
        return sum(1 for n in counts.values() if n >= need)
    per_group: dict[str, set] = {}
    for lab, g in zip(labels, groups):
        if counts[lab] >= need:
            per_group.setdefault(g, set()).add(lab)
    return max((len(s) for s in per_group.values()), default=0)


def validation_sampler(val: LabelledSet, cfg: TrainConfig) -> EpisodeSampler:
    """Validation episodes: ``val_ways`` (at most the number of usable classes), fixed seed."""
    need = cfg.val_shots + cfg.val_queries
    within = cfg.val_within_group and len(set(val.groups)) > 1
    ways = min(cfg.val_ways, usable_ways(val.labels, val.groups, need, False))
    if within:  # as many ways as the largest group that can still host an episode allows
        ways = min(ways, usable_ways(val.labels, val.groups, need, True))
    if ways < 2:
        raise ValueError(f"validation needs >= 2 classes with >= {need} examples each; it has "
                         f"{usable_ways(val.labels, val.groups, need, False)}")
    return EpisodeSampler(val.labels, ways, cfg.val_shots, cfg.val_queries, val.groups, within, cfg.seed + 12345)


@dataclass
class _State:
    """What a checkpoint restores besides the weights."""

    step: int = 0
    best: float = -1.0
    bad_evals: int = 0
    stopped: bool = False
    val_acc: float = float("nan")
    val_start: float = float("nan")


class Trainer:
    """One run: the model, its loss terms and optimizer, the batcher, samplers and run folder."""

    def __init__(self, model: nn.Module, terms: list[LossTerm], batcher: Any, train: LabelledSet,
                 out_dir: str | os.PathLike, cfg: TrainConfig, val: LabelledSet | None = None,
                 params: list[nn.Parameter] | None = None, frozen: tuple[nn.Module, ...] = (),
                 checkpoint_meta: dict | None = None):
        self.model, self.terms, self.batcher, self.cfg, self.val = model, terms, batcher, cfg, val
        self.frozen, self.meta = frozen, dict(checkpoint_meta or {})
        self.out = Path(out_dir)
        self.device = resolve_device(cfg.device)
        model.to(self.device)
        for t in terms:
            t.loss.to(self.device)
        trainable = list(model.parameters()) if params is None else list(params)
        self.params = trainable + [p for t in terms for p in t.loss.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sampler = EpisodeSampler(train.labels, cfg.ways, cfg.shots, cfg.queries, train.groups, False, cfg.seed)
        self.group_sampler = None
        if cfg.within_group_fraction > 0:
            self.group_sampler = EpisodeSampler(train.labels, min(cfg.ways, 20), cfg.shots, cfg.queries,
                                                train.groups, True, cfg.seed + 1)
        self.val_sampler = validation_sampler(val, cfg) if val is not None else None
        self.state = _State()

    @property
    def head(self) -> MetricLoss:
        return self.terms[0].loss

    def resume(self) -> None:
        """Continue from ``last.pt`` if the run folder has one."""
        if not (self.out / "last.pt").exists():
            return
        ck = torch.load(self.out / "last.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(ck["model"])
        self.head.load_state_dict(ck["head"])
        for t in self.terms[1:]:
            if t.name in ck:
                t.loss.load_state_dict(ck[t.name])
        self.opt.load_state_dict(ck["optimizer"])
        self.state = _State(int(ck["step"]), float(ck["best_val"]), int(ck.get("bad_evals", 0)),
                            bool(ck.get("stopped", False)), float(ck.get("val_acc", float("nan"))),
                            float(ck.get("val_start", float("nan"))))

    def release(self) -> None:
        """The model and loss terms back on the CPU, where the caller embeds and exports them."""
        self.model.to("cpu")
        for t in self.terms:
            t.loss.to("cpu")

    def validate(self) -> float:
        emb = self.batcher.embed(self.model, self.val)
        set_train_mode(self.model, self.frozen)
        return float(episode_accuracies(emb, self.val_sampler, self.cfg.val_episodes).mean())

    def after_validation(self, acc: float) -> None:
        """Keep the best weights; count validations without improvement (early stopping)."""
        s = self.state
        s.val_acc = acc
        if acc > s.best + self.cfg.min_delta or s.best < 0:
            s.best, s.bad_evals = max(acc, s.best), 0
            atomic_torch_save(cpu_state(self.model.state_dict()), self.out / "best.pt")
        else:
            s.bad_evals += 1
            s.stopped = self.cfg.patience > 0 and s.bad_evals >= self.cfg.patience

    def save_last(self) -> None:
        s = self.state
        if self.val_sampler is None:
            atomic_torch_save(cpu_state(self.model.state_dict()), self.out / "best.pt")
        ck = {"model": self.model.state_dict(), "head": self.head.state_dict(), "optimizer": self.opt.state_dict(),
              "step": s.step, "best_val": s.best, "bad_evals": s.bad_evals, "stopped": s.stopped,
              "val_acc": s.val_acc, "val_start": s.val_start, "loss": self.head.name, "meta": self.meta}
        ck.update({t.name: t.loss.state_dict() for t in self.terms[1:]})
        atomic_torch_save(cpu_state(ck), self.out / "last.pt")

    def step(self, step: int) -> tuple[float, float]:
        """One optimisation step on episode ``step``: (loss, query accuracy)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step, 7])
        use_group = self.group_sampler is not None and rng.random() < cfg.within_group_fraction
        ep = self.group_sampler.episode(step) if use_group else self.sampler.episode(step)
        batch = to_device(episode_batch(self.batcher, ep, step, rng), self.device)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        emb = self.model(batch.x)
        loss = sum(t.weight * t.loss.batch_loss(emb, batch) for t in self.terms)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        return loss.item(), episode_accuracy(emb.detach()[:len(batch.labels)], batch.labels, batch.n_support)

    def record(self, step: int, losses: list[float], accs: list[float], t0: float) -> dict:
        rec = {"step": self.state.step, "loss": float(np.mean(losses[-100:])),
               "train_acc": float(np.nanmean(accs[-100:])), "val_acc": self.state.val_acc,
               "lr": lr_at(step, self.cfg), "elapsed_s": round(time.time() - t0, 1)}
        if isinstance(self.head, PrototypicalLoss):
            rec["scale"] = self.head.scale.item()
        if self.state.stopped:
            rec["stopped_early"] = True
        return rec

    def summary(self, t0: float) -> dict:
        s = self.state
        out = {"steps": self.cfg.steps, "step": s.step, "best_val_acc": s.best, "val_acc": s.val_acc,
               "val_acc_start": s.val_start, "stopped_early": s.stopped, "loss": self.head.name,
               "seconds": round(time.time() - t0, 1), "out_dir": str(self.out)}
        if isinstance(self.head, PrototypicalLoss):
            out["scale"] = self.head.scale.item()
        return out


def fit(model: nn.Module, terms: list[LossTerm], batcher: Any, train: LabelledSet, out_dir: str | os.PathLike,
        cfg: TrainConfig, val: LabelledSet | None = None, params: list[nn.Parameter] | None = None,
        frozen: tuple[nn.Module, ...] = (), progress: bool = True, log: Callable[[str], None] | None = None,
        desc: str = "train", checkpoint_meta: dict | None = None) -> dict:
    """Train ``model`` in place on episodes of ``train``; resumes from ``out_dir/last.pt``; returns a summary.

    ``terms[0]`` is the metric loss whose state is the checkpoint's ``head``;
    further terms (distillation) are stored under their names. ``params``: the
    trainable parameters (default all); ``frozen`` modules stay in eval mode. The steps run on
    ``cfg.device``; the model comes back on the CPU, whatever happens.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    torch.manual_seed(cfg.seed)
    run = Trainer(model, terms, batcher, train, out, cfg, val, params, frozen, checkpoint_meta)
    try:
        return run_steps(run, progress, log, desc)
    finally:
        run.release()


def run_steps(run: Trainer, progress: bool, log: Callable[[str], None] | None, desc: str) -> dict:
    """Resume ``run`` and take its remaining steps (validating and checkpointing); its summary."""
    from tqdm import tqdm

    cfg, out = run.cfg, run.out
    run.resume()
    s = run.state
    if run.val_sampler is not None and cfg.val_at_start and s.step == 0:
        s.val_acc = s.best = s.val_start = run.validate()
        atomic_torch_save(cpu_state(run.model.state_dict()), out / "best.pt")
    set_train_mode(run.model, run.frozen)
    t0, losses, accs = time.time(), [], []
    bar = tqdm(range(s.step, cfg.steps), initial=s.step, total=cfg.steps, disable=not progress or s.stopped,
               desc=desc, dynamic_ncols=True)
    with open(out / "log.jsonl", "a") as logf:
        try:
            for step in bar:
                if s.stopped:
                    break
                loss, acc = run.step(step)
                losses.append(loss)
                accs.append(acc)
                s.step = step + 1
                if run.val_sampler is not None and (s.step % cfg.val_every == 0 or s.step == cfg.steps):
                    run.after_validation(run.validate())
                if s.step % cfg.checkpoint_every == 0 or s.step == cfg.steps or s.stopped:
                    run.save_last()
                    line = json.dumps(json_safe(run.record(step, losses, accs, t0)))
                    logf.write(line + "\n")
                    logf.flush()
                    if log:
                        log(line)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", val=f"{s.val_acc:.3f}")
        finally:
            bar.close()
    return run.summary(t0)
