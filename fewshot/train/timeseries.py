"""The ``ts-rocket`` and ``ts-gru`` recipe: train a channel-independent time-series encoder for classes it has not seen.

What is chosen for transfer, and why:

* several data sets pooled (one class = ``"<problem>/<label>"``), episodes mixing
  them: the encoder must separate shapes, not memorise one problem's classes;
* two metric losses through the shared loop: the prototypical loss (the maths of
  ``classify``) plus supervised contrastive (weight ``supcon_weight``) on the same
  batch, which spreads every example, not only prototypes;
* augmentation for the nuisances that differ between data sets
  (:class:`~fewshot.train.series_augment.SeriesAugment`);
* regularisation: dropout on the pooled features, weight decay, gradient
  clipping, a short schedule (a few hundred steps), and no centring vector (a
  centre fitted on the training problems would not fit a new one).

``ts-rocket`` first fits its PPV biases and level/scale spread on the training
series (no labels), then the loop learns only its metric (118 weights); ``ts-gru``
learns the whole network.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from fewshot.data.dataset import LabelledSet
from fewshot.encoders.sequence import TorchSequenceEncoder
from fewshot.train.loop import LossTerm, SequenceTrainConfig, TrainConfig, fit
from fewshot.train.batches import make_batcher

#: ``extra`` fields of the recipe's config that are not TrainConfig fields.
SUPCON_WEIGHT = 0.5


def pool_sets(sets: Sequence[LabelledSet]) -> LabelledSet:
    """Several problems' sets as one (labels must already be distinct: ``load_ucr`` prefixes them)."""
    return LabelledSet([x for s in sets for x in s.items], [lab for s in sets for lab in s.labels],
                       [g for s in sets for g in s.groups], [src for s in sets for src in s.sources],
                       kind="sequence")


#: Per architecture: learning rate, episode ways, and the share of episodes drawn within one problem.
#: ts-gru learns a whole network from episodes mixing problems. ts-rocket learns only its metric,
#: from 2-way episodes inside one problem (as it is used: the classes of a query come from one
#: data set; mixed episodes rewarded telling problems apart by level, which a new problem does not
#: need), with small steps (at lr 1e-2 the weights drifted to the training problems' scales).
#: ts-rocket also holds ``val_problems`` training problems out of the metric's training and keeps
#: the weights that do best on them (the starting weights included): a metric learnt from a handful
#: of problems must not end worse than no metric on problems it did not see.
ARCH_RECIPE = {"ts-gru": {"lr": 2e-3, "ways": 16, "within_group_fraction": 0.0},
               "ts-rocket": {"lr": 3e-3, "ways": 2, "within_group_fraction": 1.0, "val_problems": 3}}
#: Training steps of the shipped recipe, per architecture.
ARCH_STEPS = {"ts-gru": 300, "ts-rocket": 600}


def ts_config(steps: int | None = None, seed: int = 0, threads: int = 1, ways: int | None = None,
              arch: str = "ts-gru", **extra: Any) -> TrainConfig:
    """The recipe's loop config for ``arch`` (episodes of ``ways`` classes, 2 shots, 3 queries)."""
    r = ARCH_RECIPE[arch]
    steps = ARCH_STEPS[arch] if steps is None else steps
    return SequenceTrainConfig(ways=ways or r["ways"], shots=2, queries=3, steps=steps, lr=r["lr"], weight_decay=1e-4,
                               warmup=50, grad_clip=1.0, init_scale=10.0,
                               within_group_fraction=r["within_group_fraction"],
                               val_every=100, val_at_start=True, val_ways=2, val_within_group=True,
                               checkpoint_every=max(1, min(100, steps)), seed=seed, threads=threads,
                               extra={"supcon_weight": SUPCON_WEIGHT, "val_problems": r.get("val_problems", 0),
                                      **extra})


def hold_out_problems(data: LabelledSet, k: int, seed: int) -> tuple[LabelledSet, LabelledSet | None]:
    """(training part, validation part): ``k`` whole problems (groups), drawn with ``seed``, held out;
    no hold-out (None) when fewer than ``k + 2`` problems are given."""
    problems = sorted(set(data.groups))
    if k <= 0 or len(problems) < k + 2:
        return data, None
    return data.split_groups(np.random.default_rng(seed).choice(problems, k, replace=False).tolist())


def train_ts_encoder(data: LabelledSet, out_dir: str | os.PathLike | None, cfg: TrainConfig, name: str = "ts-gru",
                     progress: bool = False, log: Callable[[str], None] | None = None, arch: str = "ts-gru",
                     **arch_kwargs: Any) -> tuple[TorchSequenceEncoder, dict]:
    """Train a fresh ``arch`` encoder on ``data`` (resumes from ``out_dir``); (encoder in eval mode, loop summary)."""
    from fewshot.losses import PrototypicalLoss, SupConLoss

    torch.manual_seed(cfg.seed)
    enc = fitted_ts_encoder(data, name, arch, **arch_kwargs)
    terms = [LossTerm("proto", PrototypicalLoss(cfg.init_scale))]
    w = float(cfg.extra.get("supcon_weight", SUPCON_WEIGHT))
    if w > 0:
        terms.append(LossTerm("supcon", SupConLoss(0.1), w))
    train, val = hold_out_problems(data, int(cfg.extra.get("val_problems", 0)), cfg.seed)
    batcher = make_batcher(train, cfg, pre=enc.preprocess)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir or tmp)
        summary = fit(enc.module, terms, batcher, train, out, cfg, val=val, progress=progress, log=log, desc=name)
        if val is not None:  # the weights that did best on the held-out problems
            enc.module.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True))
        summary["validation_problems"] = sorted(set(val.groups)) if val is not None else []
    enc.module.eval()
    enc.temperature = terms[0].loss.temperature()  # 1 / the learned scale: the index's softmax
    enc.weights_source = f"trained: {summary['step']} steps"
    return enc, summary


def fitted_ts_encoder(data: LabelledSet, name: str = "ts-rocket", arch: str = "ts-rocket",
                      **arch_kwargs: Any) -> TorchSequenceEncoder:
    """A fresh encoder with the statistics it fits without labels (``ts-rocket``: PPV biases,
    level/scale spread) fitted on ``data``; before any metric training (``ts-gru``: random)."""
    from fewshot.encoders.timeseries import new_ts_encoder

    enc = new_ts_encoder(name, arch=arch, **arch_kwargs)
    if hasattr(enc.module, "fit_statistics"):
        enc.module.fit_statistics([enc.preprocess.apply(s, src) for s, src in zip(data.items, data.sources)])
        enc.weights_source = f"statistics fitted on {len(data)} series"
    return enc


def main(argv: list[str] | None = None) -> None:
    """``python -m fewshot.train.timeseries --arch ts-rocket --out ts_rocket.pt``: a shipped ts encoder (every aeon problem)."""
    import argparse
    import json
    import time

    from fewshot.data.timeseries import AEON_CLASSIFICATION, load_ucr

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--out", required=True, help="encoder file to write (.pt, with a .json sidecar)")
    p.add_argument("--aeon-data", default=None, help="aeon/datasets/data (default: $FEWSHOT_AEON_DATA or aeon)")
    p.add_argument("--datasets", default=",".join(AEON_CLASSIFICATION))
    p.add_argument("--arch", default="ts-rocket", choices=sorted(ARCH_RECIPE))
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's (ts-rocket 600, ts-gru 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run", default=None, help="run folder (checkpoints, log.jsonl; resumable)")
    a = p.parse_args(argv)
    t0 = time.time()
    data = pool_sets([load_ucr(n, a.aeon_data) for n in a.datasets.split(",")])
    enc, summary = train_ts_encoder(data, a.run, ts_config(a.steps, a.seed, a.threads, arch=a.arch), name=a.arch,
                                    progress=True, arch=a.arch)
    enc.weights_source = f"fewshot.train.timeseries: {a.datasets}, {summary['step']} steps, seed {a.seed}"
    enc.save(a.out)
    print(json.dumps({**summary, "series": len(data), "classes": len(data.classes), "out": a.out,
                      "seconds": round(time.time() - t0, 1), "load_avg": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
