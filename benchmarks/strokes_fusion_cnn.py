"""Which CNN, and which weight, for the stroke fusion: the leave-one-alphabet-out GRUs with each CNN.

    python benchmarks/strokes_fusion_cnn.py --loao /work/runs/gpu/loao/gpu6k --folds Greek,Korean \\
        --cnns omniglot-conv4@1,runs/r12w32_twin/encoder.pt

For each fold (an alphabet of ``strokes_background_small1``) the GRU that
``benchmarks/strokes_loao.py`` trained without it (``<loao>/<fold>/encoder.pt``) is fused
with each CNN on the rendered trajectories. The fusion weight is chosen per CNN on
validation episodes (seed 12345, pooled over the folds: the mean accuracy of each weight; ``--weight``
fixes it, e.g. to a release's),
then the GRU, the CNN and the fusion with that weight are scored on the reported episodes
(20-way 1-shot within the alphabet, 1,000 episodes, seed 0: the episodes of
``strokes_loao.py``). Compare CNNs only on folds that every one of them was trained without.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "omniglot" / "strokes_background_small1.zip"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--loao", type=Path, required=True, help="a strokes_loao.py run folder (<loao>/<fold>/encoder.pt)")
    p.add_argument("--folds", default="Greek,Korean")
    p.add_argument("--cnns", default="omniglot-conv4@1", help="comma-separated image encoder names or files")
    p.add_argument("--weight", type=float, default=None, help="use this GRU weight (a release's) instead of choosing")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json-out", type=Path, default=None)
    a = p.parse_args()

    import torch

    from fewshot import encoders
    from fewshot.data.strokes import load_omniglot_strokes
    from fewshot.evaluation.fusion import choose_fusion_weight, evaluate_fusion, fusion_parts

    torch.set_num_threads(a.threads)
    ds = load_omniglot_strokes(str(a.data))
    protocol = {"ways": 20, "shots": 1, "queries": 5, "episodes": a.episodes, "within_group": True}
    out = {"protocol": protocol | {"seed": 0}, "weight_choice_seed": 12345, "loao": str(a.loao), "cnns": {}}
    for cnn_name in a.cnns.split(","):
        cnn = encoders.load(cnn_name)
        per_fold, choices = {}, []
        for fold in a.folds.split(","):
            t0 = time.time()
            test = ds.split_groups([fold])[1]
            gru = encoders.load(str(a.loao / fold / "encoder.pt"))
            embedded = fusion_parts(gru, cnn, test)
            choices.append(choose_fusion_weight(gru, cnn, test, episodes=a.episodes, embedded=embedded)["accuracy"])
            per_fold[fold] = {"embedded": embedded, "seconds": time.time() - t0}
        grid = list(choices[0])
        pooled = {w: float(np.mean([c[w] for c in choices])) for w in grid}
        weight = max(pooled, key=pooled.get) if a.weight is None else a.weight
        rows = {}
        for fold, f in per_fold.items():
            test = ds.split_groups([fold])[1]
            r = evaluate_fusion(None, None, test, [protocol], seed=0, sequence_weight=weight,
                                embedded=f["embedded"])[0]
            rows[fold] = {k: r[k] for k in ("sequence", "image", "fusion")}
            print(f"{cnn_name} {fold}: GRU {r['sequence']['accuracy']:.2%} CNN {r['image']['accuracy']:.2%} "
                  f"fusion(w={weight:g}) {r['fusion']['accuracy']:.2%} +- {r['fusion']['ci95']:.2%}", flush=True)
        mean = {k: float(np.mean([rows[f][k]["accuracy"] for f in rows])) for k in ("sequence", "image", "fusion")}
        out["cnns"][cnn_name] = {"fingerprint": cnn.fingerprint, "weight": weight, "validation": pooled,
                                 "folds": rows, "mean": mean}
        print(f"{cnn_name}: weight {weight:g} (validation {json.dumps(pooled)}); mean {json.dumps(mean)}", flush=True)
    if a.json_out:
        a.json_out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
