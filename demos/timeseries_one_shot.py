"""One-shot classification of time series from classes never seen in training, with ts-rocket, through a FewShotIndex.

    # the data: the UCR/UEA problems inside the aeon wheel (aeon 1.6 pins numpy < 2.4: a venv of its own is fine)
    python3 -m venv .venv-aeon && .venv-aeon/bin/pip install 'aeon==1.6.0'
    export FEWSHOT_AEON_DATA=$PWD/.venv-aeon/lib/python3.11/site-packages/aeon/datasets/data
    python demos/timeseries_one_shot.py                        # JapaneseVowels (9 speakers, 12 channels)
    python demos/timeseries_one_shot.py --dataset PickupGestureWiimoteZ

Protocol "unseen classes": the classes of the data set are split in two halves;
a ts-rocket (the shipped recipe, fewshot.train.timeseries: MiniRocket's fixed
kernels per channel, its biases fitted and its metric trained with metric losses
and augmentation; ``--arch ts-gru`` for the GRU) is trained on the *other* problems
shipped with aeon plus the first half, then N-way 1-shot episodes are drawn over
the second half, with the same nearest-prototype maths as ``fewshot classify``.
The same episodes are scored with the encoder before its metric was trained, with
an untrained (random) ts-gru and with time-averaged features (each channel
standardised over the data set, averaged over time). Finally an index is built
with one example per unseen class and the other series of those classes are
classified with it. The shipped ``ts-rocket`` is not used here: it was trained on
every class of every problem, this one included. DTW and MiniRocket on the same
episodes: ``benchmarks/timeseries_fewshot.py`` (they need aeon).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np

from demo_args import add_ints, demo_parser

DATASETS = ("JapaneseVowels", "PickupGestureWiimoteZ", "ACSF1", "OSULeaf")


def main() -> None:
    p = demo_parser(__doc__)
    p.add_argument("--dataset", default="JapaneseVowels", choices=DATASETS)
    add_ints(p, steps=0, episodes=500, seed=0, threads=1)  # steps 0: the recipe's (ts-rocket 600, ts-gru 300)
    p.add_argument("--arch", default="ts-rocket", choices=("ts-rocket", "ts-gru"))
    p.add_argument("--encoder", default=None,
                   help="an encoder file trained with this protocol's split (e.g. the benchmark's "
                        "benchmarks/results/work-ts/within-JapaneseVowels/encoder.pt): skip the training")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line")
    a = p.parse_args()

    import torch

    from fewshot import FewShotIndex
    from fewshot.data.timeseries import AEON_CLASSIFICATION, load_ucr, split_classes
    from fewshot.encoders.timeseries import new_ts_encoder
    from fewshot.errors import InputError
    from fewshot.evaluation import evaluate_embeddings
    from fewshot.train.timeseries import ARCH_STEPS, fitted_ts_encoder, pool_sets, train_ts_encoder, ts_config

    torch.set_num_threads(a.threads)
    t0 = time.time()
    try:
        sets = {n: load_ucr(n) for n in AEON_CLASSIFICATION}
    except InputError as exc:
        sys.exit(f"error: {exc}")
    ds = sets[a.dataset]
    seen_rows, unseen_rows = split_classes(ds)
    train = pool_sets([s for n, s in sets.items() if n != a.dataset] + [ds.subset(seen_rows)])
    unseen = ds.subset(unseen_rows)
    lengths = [len(s) for s in ds.items]
    print(f"{a.dataset}: {len(ds)} series, {ds.items[0].shape[1]} channel(s), lengths {min(lengths)}-{max(lengths)}, "
          f"{len(ds.classes)} classes; " + (f"encoder {a.encoder}" if a.encoder else
                                             f"training on {len(train)} series of {len(train.classes)} classes "
                                             f"({a.steps or ARCH_STEPS[a.arch]} steps)"), file=sys.stderr)
    if a.encoder:
        from fewshot.encoders.registry import from_file

        trained = from_file(a.encoder)
    else:
        trained, _ = train_ts_encoder(train, None, ts_config(a.steps or None, a.seed, a.threads, arch=a.arch), name=a.arch,
                                      arch=a.arch)
    torch.manual_seed(a.seed)
    before = fitted_ts_encoder(train, f"{a.arch}-before-training", arch=a.arch)
    untrained = new_ts_encoder("random-ts-gru")

    ways = min(len(unseen.classes), 10)
    q = max(1, min(5, min(unseen.labels.count(c) for c in unseen.classes) - 1))
    allx = np.concatenate(unseen.items)
    mu, sd = allx.mean(0), np.maximum(allx.std(0), 1e-6)
    feats = {f"trained_{a.arch.replace('-', '_')}": (trained.embed(unseen.items), "cosine"),
             "metric_untrained": (before.embed(unseen.items), "cosine"),
             "random_ts_gru": (untrained.embed(unseen.items), "cosine"),
             "time_averaged_features": (np.stack([((s - mu) / sd).mean(0) for s in unseen.items]), "l2")}
    results = {"dataset": a.dataset, "shots": 1, "episodes": a.episodes, "ways": ways, "queries": q,
               "unseen_classes": [c.split("/", 1)[1] for c in unseen.classes]}
    for name, (emb, metric) in feats.items():
        r = evaluate_embeddings(emb, unseen, ways, 1, q, a.episodes, a.seed, metric=metric)
        results[name] = {"accuracy": round(r.accuracy, 4), "ci95": round(r.ci95, 4)}
    # the trained encoder behind an index: one example per unseen class, then classify the others
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        with FewShotIndex.create(f"{tmp}/idx", encoder=trained) as idx:
            shown = {c: int(rng.choice([i for i, lab in enumerate(unseen.labels) if lab == c]))
                     for c in unseen.classes}
            idx.add_many([(c, unseen.items[i]) for c, i in shown.items()])
            rest = [i for i in range(len(unseen)) if i not in set(shown.values())]
            preds = idx.classify([unseen.items[i] for i in rest])
            acc = float(np.mean([p.label == unseen.labels[i] for p, i in zip(preds, rest)]))
    results["index_one_example_per_class"] = {"accuracy": round(acc, 4), "queries": len(rest)}
    results["seconds"] = round(time.time() - t0, 1)
    if a.json:
        print(json.dumps(results))
        return
    print(f"{a.dataset}: {ways}-way 1-shot, classes never seen in training ({', '.join(results['unseen_classes'])}),"
          f" {a.episodes} episodes, 95% CI")
    for name in feats:
        print(f"  {name:<24} {100 * results[name]['accuracy']:.1f}% +- {100 * results[name]['ci95']:.1f}")
    print(f"index with 1 example per unseen class: {100 * acc:.1f}% on {len(rest)} queries "
          f"(total {results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
