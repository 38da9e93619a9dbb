"""Test-time levers of image encoders, paired over the same Omniglot episodes: shifts, affine views, ensembles.

    python benchmarks/omniglot_levers.py --encoders runs/a/encoder.pt,runs/b/encoder.pt --shifts 0,1,2
    python benchmarks/omniglot_levers.py --encoders omniglot-conv4@1 --shifts 1 --affine "s0.9,s1.1;r-8,r8"

For each encoder file and each ``tta_shift`` k (the embedding is the mean over the
image translated by every (dy, dx) in [-k, k]^2 px), and for the ensemble of all
encoders at each k (the mean of their L2-normalised embeddings; for encoders of different sizes their
concatenation, so the ensemble's cosine is the mean of the members' cosines), and for each ``--affine`` set of views
(``s0.9`` scales the drawing by 0.9, ``r-8`` rotates it by -8 degrees; each view, and the
image itself, goes through the shifts; the embedding is the mean of their L2-normalised
embeddings), the accuracy of one protocol
(default: 20-way 1-shot within one held-out alphabet, 1,000 episodes, seed 0, the
episodes of ``fewshot evaluate``), and each row's gain over the first row paired
episode by episode (the interval of the difference, far narrower than either
row's own). Evaluate only on alphabets every encoder was trained without.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HELD_OUT = "Bengali,Futurama,Greek,Korean,Tifinagh"


def paired_gain(accs: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """Mean per-episode difference and its 95% CI (the evaluation's convention: 1.96 std/sqrt n)."""
    d = np.asarray(accs) - np.asarray(base)
    return float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(len(d)))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def affine_views(x, spec: str) -> list:
    """The batch ``x`` [n, c, h, w] (background 0, as ``to_array`` gives drawings) and its views
    named in ``spec`` ("s0.9,r-8": scale 0.9, rotation -8 degrees about the centre; bilinear, zero fill)."""
    import torch
    import torch.nn.functional as F

    views = [x]
    for v in filter(None, spec.split(",")):
        scale, deg = (float(v[1:]), 0.0) if v[0] == "s" else (1.0, float(v[1:])) if v[0] == "r" else (None, None)
        if scale is None or scale <= 0:
            raise SystemExit(f"error: affine view {v!r}: use s<scale> or r<degrees>, e.g. s0.9 or r-8")
        c, s = math.cos(math.radians(deg)) / scale, math.sin(math.radians(deg)) / scale
        grid = F.affine_grid(torch.tensor([[c, -s, 0.0], [s, c, 0.0]]).expand(len(x), 2, 3), list(x.shape),
                             align_corners=False)
        views.append(F.grid_sample(x, grid, align_corners=False, padding_mode="zeros"))
    return views


def embed_views(enc, ds, spec: str) -> np.ndarray:
    """Mean of the L2-normalised embeddings of each image's affine views (each through ``enc``'s shifts)."""
    import torch
    from PIL import Image

    pre = enc.preprocess
    x = torch.as_tensor(np.stack([pre.to_array(Image.fromarray(img)) for img in ds.items])).float()
    gray = x.ndim == 3  # to_array gives [n, h, w] (grayscale) or [n, h, w, c], 0-255
    total = 0
    for v in affine_views(x[:, None] if gray else x.permute(0, 3, 1, 2), spec):
        v = (v[:, 0] if gray else v.permute(0, 2, 3, 1)).numpy()  # back to to_array's layout for normalize
        total = total + unit(np.concatenate([np.asarray(enc.embed_tensor(pre.normalize(v[i:i + 512])))
                                             for i in range(0, len(v), 512)]))
    return unit(total)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", required=True, help="comma-separated encoder names or files")
    p.add_argument("--shifts", default="0,1,2", help="tta_shift values to try (comma-separated)")
    p.add_argument("--data", default="../shared/data/omniglot/images_background.zip")
    p.add_argument("--alphabets", default=HELD_OUT)
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--across", action="store_true", help="episodes across alphabets (default: within one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--affine", default="", help='sets of affine views to add, ";"-separated: "s0.9,s1.1;r-8,r8"')
    p.add_argument("--json-out", default=None)
    a = p.parse_args()

    import torch

    from fewshot import encoders
    from fewshot.data import load_dataset
    from fewshot.evaluation import embed_dataset, evaluate_embeddings

    torch.set_num_threads(a.threads)
    names = [s for s in a.encoders.split(",") if s]
    encs = [encoders.load(n) for n in names]
    sizes = {e.preprocess.size for e in encs}
    if len(sizes) != 1:
        print(f"error: the encoders take different input sizes {sorted(sizes)}", file=sys.stderr)
        return 2
    ds = load_dataset(a.data, size=sizes.pop(), alphabets=a.alphabets.split(","))
    rows, embs = [], {}
    for k in [int(s) for s in a.shifts.split(",")]:
        for name, enc in zip(names, encs):
            enc.tta_shift = k
            enc.invalidate()
            t = time.time()
            embs[(name, k)] = unit(embed_dataset(enc, ds, progress=False))
            rows.append((f"{Path(name).parent.name or name} shift {k}", embs[(name, k)], time.time() - t))
        if len(encs) > 1:  # an ensemble: same dim, the mean of unit vectors; else their concatenation,
            # whose cosine is the mean of the members' cosines
            members = [embs[(n, k)] for n in names]
            same = len({m.shape for m in members}) == 1
            ens = unit(np.mean(members, axis=0) if same else np.concatenate(members, axis=1))
            rows.append((f"ensemble of {len(encs)} shift {k}{'' if same else ' (concatenated)'}", ens,
                         sum(r[2] for r in rows[-len(encs):])))
        for spec in filter(None, a.affine.split(";")):
            for name, enc in zip(names, encs):
                t = time.time()
                rows.append((f"{Path(name).parent.name or name} shift {k} + {spec}", embed_views(enc, ds, spec),
                             time.time() - t))
    out, base = [], None
    for label, emb, secs in rows:
        r = evaluate_embeddings(emb, ds, a.ways, a.shots, a.queries, a.episodes, a.seed, not a.across)
        accs = np.asarray(r.episode_accuracies)
        base = accs if base is None else base
        gain, gci = paired_gain(accs, base)
        out.append({"row": label, "accuracy": r.accuracy, "ci95": r.ci95, "f1": r.f1, "gain_vs_first": gain,
                    "gain_ci95": gci, "embed_seconds": round(secs, 1)})
        print(f"{label:<40} {100 * r.accuracy:6.2f}% +- {100 * r.ci95:.2f}   vs first {100 * gain:+5.2f} "
              f"+- {100 * gci:.2f}   embed {secs:5.1f} s", flush=True)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"args": vars(a), "rows": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
