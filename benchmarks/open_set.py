"""Open-set benchmark: does the calibrated threshold keep its promise on classes it never saw?

    PYTHONPATH=. nice -n 10 python benchmarks/open_set.py [--episodes 500] [--only image,text] \
        [--out benchmarks/results/open_set.json]

For each input kind, episodes on held-out classes that the encoder's shipped
calibration (``benchmarks/encoder_calibration.py``) was NOT fitted on:

* image: omniglot-conv4, Omniglot Korean + Tifinagh (95 characters), 20-way + 5 untaught, 1 and 5 shots;
* strokes: omniglot-strokes-fusion, Greek strokes, the second half of its characters, 8-way + 4 untaught;
* text: minilm and text-gru, CLINC150 ``auto_and_commute`` (15 intents), 10-way + 5 untaught;
  minilm also on ``home`` + ``auto_and_commute`` (30 intents), 20-way + 5 (its prior is fitted on
  the other 5 domains: minilm never trained on CLINC150);
  and the CLINC150 out-of-scope AUROC (``oos_val``) at 5 shots on ``home`` + ``auto_and_commute``.

Each episode is calibrated on its own support set exactly as ``fewshot calibrate``
does on an index holding those examples (:func:`fewshot.evaluation.api.open_set_metrics`),
then its known and untaught queries are scored. A few episodes per config are
also run through a real on-disk index (support vectors stored, ``FewShotIndex.calibrate``,
classification by the store against the stored threshold) to check the two paths agree.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLINC = DATA / "clinc150/clinc150_dev.json"
#: name -> (kind, encoder, data, groups, class half or None, ways, unknown ways)
CONFIGS = {
    "image/omniglot-conv4/Korean+Tifinagh": ("image", "omniglot-conv4", DATA / "omniglot/images_background.zip",
                                             ["Korean", "Tifinagh"], None, 20, 5),
    "strokes/omniglot-strokes-fusion/Greek-second-half": ("strokes", "omniglot-strokes-fusion",
                                                          DATA / "omniglot/strokes_background_small1.zip",
                                                          ["Greek"], "second_half", 8, 4),
    "text/minilm/auto_and_commute": ("text", "minilm", CLINC, ["auto_and_commute"], None, 10, 5),
    "text/text-gru/auto_and_commute": ("text", "text-gru", CLINC, ["auto_and_commute"], None, 10, 5),
    "text/minilm/home+auto_and_commute": ("text", "minilm", CLINC, ["home", "auto_and_commute"], None, 20, 5),
}


def through_index(enc, ds, emb, ways: int, unknown_ways: int, shots: int, queries: int, seed: int, n: int) -> dict:
    """``n`` episodes through a real index: store the support vectors, ``calibrate()``, classify by the store."""
    from fewshot.episodes import EpisodeSampler
    from fewshot.fewshot_index import FewShotIndex

    sampler = EpisodeSampler(ds.labels, ways + unknown_ways, shots, queries, ds.groups, False, seed, ds.roles)
    accepted, thresholds = [], []
    for i in range(n):
        ep = sampler.episode(i)
        with tempfile.TemporaryDirectory() as d, FewShotIndex.create(Path(d) / "idx", encoder=enc) as idx:
            sup = ep.support[:ways]
            idx.store.add(emb[sup.ravel()], [str(c) for c in np.repeat(ep.classes[:ways], shots)],
                          [{} for _ in range(sup.size)])
            cal = idx.calibrate()
            thr = idx.calibrated_threshold("auto")
            m = idx.store.top_classes(emb[ep.query[:ways].ravel()], 1, temperature=cal["temperature"])
            accepted.append((m.scores[:, 0] >= thr).mean())
            thresholds.append(thr)
    return {"episodes": n, "known_accept_rate": float(np.mean(accepted)), "threshold_mean": float(np.mean(thresholds))}


def run_config(name: str, episodes: int, index_episodes: int) -> list[dict]:
    import encoder_calibration as ec

    from fewshot import encoders
    from fewshot.data.registry import dataset_kind
    from fewshot.evaluation.api import load_for, open_set_metrics
    from fewshot.evaluation.embedding import embed_dataset
    from fewshot.evaluation.kernel import max_queries

    kind, enc_name, data, groups, half, ways, uw = CONFIGS[name]
    enc = encoders.load(enc_name)
    ds = load_for(enc, data, dataset_kind(data), groups)
    if half:
        ds = ec.half_classes(ds, half)
    t0 = time.time()
    emb = embed_dataset(enc, ds, progress=False)
    t_embed = time.time() - t0
    out = []
    for shots in (1, 5):
        q = max_queries(ds, ways + uw, shots, 5)
        t1 = time.time()
        metrics, _ = open_set_metrics(enc, ds, emb, ways, uw, shots, q, episodes, seed=0)
        row = {"config": name, "kind": kind, "encoder": enc.name, "fingerprint": enc.fingerprint,
               "classes": len(set(ds.labels)), "ways": ways, "unknown_ways": uw, "shots": shots, "queries": q,
               "episodes": episodes, **metrics, "embed_s": round(t_embed, 1), "episodes_s": round(time.time() - t1, 1),
               "through_index": through_index(enc, ds, emb, ways, uw, shots, q, 0, index_episodes)}
        out.append(row)
        print(f"{name} {shots}-shot: accept {row['known_accept_rate']:.4f} +- {row['known_accept_rate_ci95']:.4f} "
              f"(index path {row['through_index']['known_accept_rate']:.4f}), unknown accepted "
              f"{row['unknown_accept_rate']:.4f} (est {row['estimated_false_accept_rate']}), AUROC {row['auroc']:.4f}, "
              f"ECE {row['ece_before']:.4f} -> {row['ece_after']:.4f}, closed acc {row['closed_set_accuracy']:.4f}",
              flush=True)
    return out


def clinc_oos(episodes: int) -> list[dict]:
    """CLINC150 out-of-scope AUROC (``evaluate --oos``) at 5 shots for each text encoder."""
    from fewshot.evaluation.api import evaluate_data

    rows = []
    for enc in ("minilm", "text-gru"):
        r = evaluate_data(str(CLINC), enc, ways=15, shots=5, queries=5, episodes=episodes, seed=0,
                          alphabets=["home", "auto_and_commute"], progress=False, oos=True)
        o = r.out["oos"]
        rows.append({"config": f"text/{enc}/clinc-oos", "encoder": enc, "ways": 15, "shots": 5, "episodes": episodes,
                     "domains": ["home", "auto_and_commute"], **o})
        print(f"clinc oos {enc}: AUROC {o['auroc']:.4f} +- {o['auroc_ci95']:.4f}", flush=True)
    return rows


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--index-episodes", type=int, default=5)
    ap.add_argument("--only", default=None, help="comma-separated kinds (image, strokes, text, oos)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/open_set.json"))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    kinds = set(a.only.split(",")) if a.only else {"image", "strokes", "text", "oos"}
    load = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    t0 = time.time()
    rows = []
    for name, cfg in CONFIGS.items():
        if cfg[0] in kinds:
            rows += run_config(name, a.episodes, a.index_episodes)
    if "oos" in kinds:
        rows += clinc_oos(a.episodes)
    doc = {"command": "PYTHONPATH=. nice -n 10 python benchmarks/open_set.py " + " ".join(sys.argv[1:]),
           "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_average_start": [round(x, 2) for x in load],
           "load_average_end": [round(x, 2) for x in os.getloadavg()], "threads": a.threads,
           "wall_s": round(time.time() - t0, 1), "results": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
