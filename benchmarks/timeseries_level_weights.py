"""Could ts-rocket's level/scale weights be chosen on the training problems? The criterion, per problem.

    FEWSHOT_AEON_DATA=... python benchmarks/timeseries_level_weights.py --leave UnitTest \\
        --out benchmarks/results/timeseries_level_weights.json

ts-rocket weighs each channel's relative level/scale (``stat``, start 1) and absolute
level/scale (``abs``, start 0.5) against its unit-length shape vector. Which weight is best
depends on the problem (TIMESERIES_MODEL_CARD.md). This script scores a grid of the two
weights, with the metric otherwise untrained, the way a selection step inside the recipe
would: on the recipe's own training problems of one leave-one-out fold (the problem
``--leave`` and the recipe's 3 early-stopping problems left out; statistics fitted, as the
recipe fits them, on the fold's whole pool), N-way 1- and 5-shot episodes inside each problem
(N = its class count, at most 10), ``--episodes`` per cell. The JSON holds every problem's
accuracy per grid point, and the grid point the mean over problems would choose.

With ``--seen-half P`` the fold is the within-problem one of ``timeseries_fewshot.py``
(the pool is the other problems plus the first half of P's classes) and the grid is scored
on that seen half of P alone: what a user adapting the weights to P from its labelled
classes would see. Then the chosen point, and the start, are scored once on P's *unseen*
half with the benchmark's episodes (N-way 1- and 5-shot, 500 episodes, seed 0): whether the
choice carries over to classes it was not chosen on.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np


def set_level_weights(enc, stat: float, abs_w: float) -> None:
    """Set ts-rocket's relative (``stat``) and absolute (``abs``) level/scale weights in place."""
    import torch

    with torch.no_grad():
        enc.module.log_stat.fill_(math.log(stat))
        enc.module.log_abs.fill_(math.log(abs_w))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aeon-data", default=None, help="aeon/datasets/data (default: $FEWSHOT_AEON_DATA or aeon)")
    p.add_argument("--leave", default="UnitTest", help="the fold: this problem is left out")
    p.add_argument("--seen-half", default="", metavar="P", help="the within-problem fold of P, scored on P's seen half")
    p.add_argument("--stat", default="0.5,1,2", help="relative level/scale weights to try")
    p.add_argument("--abs", default="0.25,0.5,1,2", help="absolute level/scale weights to try")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=1, help="episodes' seed (the held-out problems use the recipe's 0)")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import torch

    from fewshot.data.timeseries import AEON_CLASSIFICATION, load_ucr, split_classes
    from fewshot.episodes import EpisodeSampler
    from fewshot.evaluation.kernel import episode_accuracies, evaluate_embeddings, max_queries
    from fewshot.train.timeseries import ARCH_RECIPE, fitted_ts_encoder, hold_out_problems, pool_sets

    torch.set_num_threads(1)
    left_out = a.seen_half or a.leave
    sets = [load_ucr(n, a.aeon_data) for n in AEON_CLASSIFICATION if n != left_out]
    if a.seen_half:
        full = load_ucr(a.seen_half, a.aeon_data)
        seen = full.subset(split_classes(full)[0])
        sets.append(seen)
    data = pool_sets(sets)
    enc = fitted_ts_encoder(data)  # as train_ts_encoder: statistics from the whole pool
    train, val = hold_out_problems(data, ARCH_RECIPE["ts-rocket"]["val_problems"], 0)
    problems = ({a.seen_half: seen} if a.seen_half else
                {g: train.subset([i for i, x in enumerate(train.groups) if x == g]) for g in sorted(set(train.groups))})
    grid = []
    for stat in map(float, a.stat.split(",")):
        for abs_w in map(float, a.abs.split(",")):
            set_level_weights(enc, stat, abs_w)
            per = {}
            for name, ds in problems.items():
                emb, ways = enc.embed(ds.items), min(len(ds.classes), 10)
                per[name] = [float(episode_accuracies(emb, EpisodeSampler(ds.labels, ways, shots, max_queries(
                    ds, ways, shots, 5), ds.groups, False, a.seed), a.episodes).mean()) for shots in (1, 5)]
            mean = float(np.mean([np.mean(v) for v in per.values()]))
            grid.append({"stat": stat, "abs": abs_w, "mean": round(100 * mean, 2),
                         "problems": {k: [round(100 * x, 1) for x in v] for k, v in per.items()}})
            print(f"stat {stat:<4} abs {abs_w:<5} mean {100 * mean:5.2f}  " + "  ".join(
                f"{k[:12]} {v[0]:.1f}/{v[1]:.1f}" for k, v in grid[-1]["problems"].items()), file=sys.stderr, flush=True)
    best = max(grid, key=lambda g: g["mean"])
    out = {"leave": left_out, "scored_on": sorted(problems), "held_out_for_early_stopping": sorted(set(val.groups)) if val is not None else [],
           "episodes": a.episodes, "seed": a.seed, "chosen": {"stat": best["stat"], "abs": best["abs"]}, "grid": grid}
    if a.seen_half:  # the chosen point and the start, once, on the unseen half
        unseen = full.subset(split_classes(full)[1])
        ways = min(len(unseen.classes), 10)
        out["unseen_half"] = {}
        for label, (stat, abs_w) in {"start": (1.0, 0.5), "chosen": (best["stat"], best["abs"])}.items():
            set_level_weights(enc, stat, abs_w)
            emb = enc.embed(unseen.items)
            out["unseen_half"][label] = {"stat": stat, "abs": abs_w, **{
                f"{shots}-shot": round(100 * evaluate_embeddings(emb, unseen, ways, shots, max_queries(
                    unseen, ways, shots, 5), 500, 0).accuracy, 1) for shots in (1, 5)}}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("chosen", "unseen_half") if k in out}))


if __name__ == "__main__":
    main()
