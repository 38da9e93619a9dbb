"""The aeon baselines of benchmarks/timeseries_fewshot.py: DTW distance matrices and MiniRocket features.

Runs in an environment that has aeon (aeon 1.6 pins numpy < 2.4, so it may not
share fewshot's environment):

    python3 -m venv .venv-aeon && .venv-aeon/bin/pip install 'aeon==1.6.0'
    .venv-aeon/bin/python benchmarks/timeseries_aeon_baselines.py --out benchmarks/results/work-ts/aeon.npz

For every problem (train split rows, then test split rows: the order of
fewshot.data.timeseries.load_ucr) it writes ``<name>/dtw``: the full pairwise DTW
distance matrix (aeon's ``dtw_pairwise_distance``, Sakoe-Chiba window ``--window``
of the length, default 0.1; series of unequal length as they are), ``<name>/minirocket``: MiniRocket features (aeon defaults,
fitted on the problem's series without labels; unequal lengths resampled
linearly to the longest), and ``<name>/labels``. Nothing here sees a label.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def resample(x: np.ndarray, n: int) -> np.ndarray:
    """``[C, T]`` -> ``[C, n]`` by linear interpolation."""
    src = np.linspace(0, x.shape[1] - 1, n)
    return np.stack([np.interp(src, np.arange(x.shape[1]), row) for row in x])


def main() -> None:
    from aeon.datasets import load_classification
    from aeon.distances import dtw_pairwise_distance
    from aeon.transformations.collection.convolution_based import MiniRocket

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--datasets", default="ACSF1,ArrowHead,BasicMotions,Covid3Month_disc,GunPoint,ItalyPowerDemand,"
                                          "JapaneseVowels,OSULeaf,PickupGestureWiimoteZ,UnitTest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, default=0.1, help="DTW band, fraction of the length (1 = full DTW)")
    a = p.parse_args()
    out: dict[str, np.ndarray] = {}
    for name in a.datasets.split(","):
        t0 = time.time()
        xs, ys = [], []
        for split in ("train", "test"):
            X, y = load_classification(name, split=split)
            for x in X:
                x = np.asarray(x, np.float64)
                xs.append(x[:, np.isfinite(x).all(0)])
            ys += [str(v) for v in y]
        n_max = max(x.shape[1] for x in xs)
        equal = all(x.shape[1] == n_max for x in xs)
        dtw = dtw_pairwise_distance(np.stack(xs) if equal else xs, window=a.window)
        t1 = time.time()
        mr = MiniRocket(random_state=a.seed, n_jobs=1)
        feats = mr.fit_transform(np.stack([x if x.shape[1] == n_max else resample(x, n_max) for x in xs]))
        out[f"{name}/dtw"] = np.asarray(dtw, np.float32)
        out[f"{name}/minirocket"] = np.asarray(feats, np.float32)
        out[f"{name}/labels"] = np.asarray(ys)
        print(f"{name}: {len(xs)} series, dtw {t1 - t0:.1f}s, minirocket {time.time() - t1:.1f}s "
              f"({feats.shape[1]} features)", flush=True)
    np.savez_compressed(a.out, **out)


if __name__ == "__main__":
    main()
