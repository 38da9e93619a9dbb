"""How long building class prototypes takes, against the plain ``np.add.at`` sums it replaced.

    python benchmarks/prototype_speed.py --out benchmarks/results/prototype_speed.json

Every episode of ``fewshot evaluate``, every validation during training and every
``classify`` builds prototypes with :func:`fewshot.prototypes.class_prototypes`. Its
per-class sums were ``np.add.at``, which adds one row at a time through a slow
generic path; they are now one grouped ``np.add.reduceat``. Both add each class's rows
in row order in float64, so this script also checks that the prototypes are
bit-identical. Shapes: an episode of ``ts-rocket`` vectors (30,288-d: 10-way 5-shot),
an Omniglot episode (64-d, 20-way 1-shot), and a stored text index (384-d, 20,000
examples of 300 classes, labels in random order).
"""
from __future__ import annotations

import argparse
import json
import os
import timeit

import numpy as np

from fewshot.prototypes import class_prototypes, l2_normalize

SHAPES = {"ts-rocket episode": (50, 30288, 10), "omniglot episode": (20, 64, 20), "text index": (20000, 384, 300)}


def add_at_prototypes(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The replaced implementation (cosine): ``np.add.at`` sums of the normalised rows."""
    x = l2_normalize(x)
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), x.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, x)
    return l2_normalize((sums / np.bincount(inverse)[:, None]).astype(np.float32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, (n, dim, k) in SHAPES.items():
        x = rng.standard_normal((n, dim)).astype(np.float32)
        labels = rng.permutation(np.arange(n) % k).astype(str)
        same = np.array_equal(class_prototypes(x, labels)[1], add_at_prototypes(x, labels))
        new = 1000 * min(timeit.repeat(lambda: class_prototypes(x, labels), number=1, repeat=a.repeats))
        old = 1000 * min(timeit.repeat(lambda: add_at_prototypes(x, labels), number=1, repeat=a.repeats))
        rows.append({"shape": name, "rows": n, "dim": dim, "classes": k, "add_at_ms": round(old, 3),
                     "reduceat_ms": round(new, 3), "speedup": round(old / new, 2), "identical": bool(same)})
        print(f"{name:18s} {n:6d} x {dim:5d}, {k:3d} classes: np.add.at {old:8.2f} ms, now {new:8.2f} ms "
              f"({old / new:.1f}x), identical: {same}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "repeats": a.repeats, "load_avg": [round(v, 2) for v in os.getloadavg()]}, f,
                      indent=1)


if __name__ == "__main__":
    main()
