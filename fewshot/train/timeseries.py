"""The ``ts-gru`` recipe: train a channel-independent time-series encoder for classes it has not seen.

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
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Sequence

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


def ts_config(steps: int = 600, seed: int = 0, threads: int = 1, ways: int = 16, **extra: Any) -> TrainConfig:
    """The recipe's loop config (mixed-problem episodes of ``ways`` classes, 2 shots, 3 queries)."""
    return SequenceTrainConfig(ways=ways, shots=2, queries=3, steps=steps, lr=2e-3, weight_decay=1e-4,
                               warmup=50, grad_clip=1.0, init_scale=10.0, within_group_fraction=0.0,
                               checkpoint_every=max(1, min(100, steps)), seed=seed, threads=threads,
                               extra={"supcon_weight": SUPCON_WEIGHT, **extra})


def train_ts_encoder(data: LabelledSet, out_dir: str | os.PathLike | None, cfg: TrainConfig, name: str = "ts-gru",
                     progress: bool = False, log: Callable[[str], None] | None = None,
                     **arch: Any) -> tuple[TorchSequenceEncoder, dict]:
    """Train a fresh ``ts-gru`` on ``data`` (resumes from ``out_dir``); (encoder in eval mode, loop summary)."""
    from fewshot.encoders.timeseries import new_ts_encoder
    from fewshot.losses import PrototypicalLoss, SupConLoss

    torch.manual_seed(cfg.seed)
    enc = new_ts_encoder(name, **arch)
    terms = [LossTerm("proto", PrototypicalLoss(cfg.init_scale))]
    w = float(cfg.extra.get("supcon_weight", SUPCON_WEIGHT))
    if w > 0:
        terms.append(LossTerm("supcon", SupConLoss(0.1), w))
    batcher = make_batcher(data, cfg, pre=enc.preprocess)
    with tempfile.TemporaryDirectory() as tmp:
        summary = fit(enc.module, terms, batcher, data, out_dir or tmp, cfg, progress=progress, log=log,
                      desc=name)
    enc.module.eval()
    enc.temperature = terms[0].loss.temperature()  # 1 / the learned scale: the index's softmax
    enc.weights_source = f"trained: {summary['step']} steps"
    return enc, summary


def main(argv: list[str] | None = None) -> None:
    """``python -m fewshot.train.timeseries --out ts_gru.pt``: the shipped ts-gru (every aeon problem)."""
    import argparse
    import json
    import time

    from fewshot.data.timeseries import AEON_CLASSIFICATION, load_ucr

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--out", required=True, help="encoder file to write (.pt, with a .json sidecar)")
    p.add_argument("--aeon-data", default=None, help="aeon/datasets/data (default: $FEWSHOT_AEON_DATA or aeon)")
    p.add_argument("--datasets", default=",".join(AEON_CLASSIFICATION))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run", default=None, help="run folder (checkpoints, log.jsonl; resumable)")
    a = p.parse_args(argv)
    t0 = time.time()
    data = pool_sets([load_ucr(n, a.aeon_data) for n in a.datasets.split(",")])
    enc, summary = train_ts_encoder(data, a.run, ts_config(a.steps, a.seed, a.threads), progress=True)
    enc.weights_source = f"fewshot.train.timeseries: {a.datasets}, {summary['step']} steps, seed {a.seed}"
    enc.save(a.out)
    print(json.dumps({**summary, "series": len(data), "classes": len(data.classes), "out": a.out,
                      "seconds": round(time.time() - t0, 1), "load_avg": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
