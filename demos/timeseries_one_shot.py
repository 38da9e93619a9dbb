"""One-shot classification of real time series with an RNN encoder, through a FewShotIndex.

    pip install "fewshot[timeseries]"          # aeon: ships a few UCR/UEA data sets in its wheel
    python demos/timeseries_one_shot.py                        # JapaneseVowels (9 speakers, 12 features)
    python demos/timeseries_one_shot.py --dataset PickupGestureWiimoteZ

Nothing is downloaded: the data sets come inside the aeon package. An RNN
encoder (GRU, attention pooling, per-feature standardisation fitted on the
training data) is trained episodically. Protocol "unseen classes": train on
half of the classes, then N-way 1-shot episodes over the *other* classes, with the
same nearest-prototype maths as ``fewshot classify``. A second protocol keeps
the data set's own split: the encoder is trained on the training split (all
classes) and one-shot episodes are drawn from the test split only. For
comparison the same episodes are scored with an untrained (random) encoder and
with the plain time-averaged standardised features. Finally an index is built
with one test example per class and the other test series are classified with it.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np

from demo_args import add_ints, demo_parser

DATASETS = ("JapaneseVowels", "PickupGestureWiimoteZ", "BasicMotions")


def load(name: str):
    """(sequences [T, F], labels, split names) from the train and test splits of an aeon data set (no download)."""
    try:
        from aeon.datasets import load_classification
    except ImportError:
        sys.exit("error: this demo needs aeon: pip install 'fewshot[timeseries]' (or pip install aeon)")
    seqs, labels, splits = [], [], []
    for split in ("train", "test"):
        X, y = load_classification(name, split=split)
        for x, lab in zip(X, y):
            a = np.asarray(x, dtype=np.float32).T  # aeon: [channels, time] -> [time, features]
            a = a[np.isfinite(a).all(1)]  # unequal-length sets may be NaN-padded
            seqs.append(a)
            labels.append(str(lab))
            splits.append(split)
    return seqs, labels, splits


def main() -> None:
    p = demo_parser(__doc__)
    p.add_argument("--dataset", default="JapaneseVowels", choices=DATASETS)
    add_ints(p, steps=150, episodes=500, seed=0, threads=2)
    p.add_argument("--json", action="store_true", help="print the results as one JSON line")
    a = p.parse_args()

    import torch

    from fewshot import FewShotIndex
    from fewshot.data.dataset import LabelledSet
    from fewshot.encoders.sequence import SequenceRNN, TorchSequenceEncoder
    from fewshot.evaluation import evaluate_embeddings
    from fewshot.evaluation.fusion import evaluate_sequences
    from fewshot.train.export import mean_embedding
    from fewshot.train.loop import SequenceTrainConfig
    from fewshot.train.recipes import train_model
    from fewshot.sequences import SequencePreprocess, fit_series_stats

    torch.set_num_threads(a.threads)
    t0 = time.time()
    seqs, labels, splits = load(a.dataset)
    classes = sorted(set(labels), key=lambda c: (len(c), c))
    ds = LabelledSet(seqs, labels, groups=splits)
    lengths = [len(s) for s in seqs]
    print(f"{a.dataset}: {len(seqs)} series, {seqs[0].shape[1]} feature(s), lengths {min(lengths)}-{max(lengths)}, "
          f"{len(classes)} classes", file=sys.stderr)

    def fit(train: LabelledSet) -> tuple[TorchSequenceEncoder, TorchSequenceEncoder, SequencePreprocess]:
        """(trained, untrained) encoders; standardisation statistics from ``train`` only."""
        mean, std = fit_series_stats(train.items)
        pre = SequencePreprocess(kind="series", n_features=seqs[0].shape[1], mean=mean, std=std,
                                 max_length=max(lengths) * 2)
        arch = {"in_features": pre.in_features, "hidden": 64, "layers": 1, "cell": "gru", "bidirectional": True,
                "pooling": "attention", "dim": 64}
        torch.manual_seed(a.seed)
        untrained = TorchSequenceEncoder("random-gru", SequenceRNN(**arch), 64, pre, "rnn", arch)
        model = SequenceRNN(**arch)
        n_train = len(train.classes)
        cfg = SequenceTrainConfig(ways=min(n_train, 5), shots=1, queries=3, steps=a.steps, lr=2e-3, warmup=20,
                                  within_group_fraction=0.0, checkpoint_every=a.steps, seed=a.seed,
                                  augment={"max_rotate": 0, "max_shear": 0, "scale_range": (0.9, 1.1),
                                           "jitter": 0.05, "stretch_range": (0.8, 1.25)})
        with tempfile.TemporaryDirectory() as tmp:
            train_model(model, train, tmp, cfg, pre=pre, progress=False)
        centre = mean_embedding(model, train, pre)
        trained = TorchSequenceEncoder(f"{a.dataset.lower()}-gru", model.eval(), 64, pre, "rnn", arch, centre=centre)
        return trained, untrained, pre

    def score(encs, pre, test: LabelledSet) -> dict:
        n_way = len(test.classes)
        q = max(1, min(5, min(test.labels.count(c) for c in test.classes) - 1))  # small classes: fewer queries
        out = {"ways": n_way, "queries": q}
        for name, enc in zip(("trained_rnn", "random_rnn"), encs):
            r = evaluate_sequences(enc, test, ways=n_way, shots=1, queries=q, episodes=a.episodes, seed=a.seed)
            out[name] = {"accuracy": round(r["accuracy"], 4), "ci95": round(r["ci95"], 4)}
        avg = np.stack([pre.apply(s).mean(0) for s in test.items])
        r = evaluate_embeddings(avg, test, n_way, 1, q, a.episodes, a.seed)
        out["time_averaged_features"] = {"accuracy": round(r.accuracy, 4), "ci95": round(r.ci95, 4)}
        return out

    results = {"dataset": a.dataset, "shots": 1, "episodes": a.episodes}
    # 1. the classes are known from the training split; one example per class is shown at test time
    train_split = ds.subset([i for i, s in enumerate(splits) if s == "train"])
    test_split = ds.subset([i for i, s in enumerate(splits) if s == "test"])
    trained, untrained, pre = fit(train_split)
    results["seen_classes"] = score((trained, untrained), pre, test_split)
    # the same encoder behind an index: one test example per class, then classify the other test series
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        with FewShotIndex.create(f"{tmp}/idx", encoder=trained) as idx:
            shown = {c: int(rng.choice([i for i, lab in enumerate(test_split.labels) if lab == c]))
                     for c in test_split.classes}
            idx.add_many([(c, test_split.items[i]) for c, i in shown.items()])
            rest = [i for i in range(len(test_split)) if i not in set(shown.values())]
            preds = idx.classify([test_split.items[i] for i in rest])
            acc = float(np.mean([p.label == test_split.labels[i] for p, i in zip(preds, rest)]))
    results["index_one_example_per_class"] = {"accuracy": round(acc, 4), "queries": len(rest)}
    # 2. classes never seen in training: train on half of the classes, one-shot on the others
    half = classes[: len(classes) // 2]
    seen = ds.subset([i for i, lab in enumerate(labels) if lab in half])
    unseen = ds.subset([i for i, lab in enumerate(labels) if lab not in half])
    trained_u, untrained_u, pre_u = fit(seen)
    results["unseen_classes"] = score((trained_u, untrained_u), pre_u, unseen)
    results["seconds"] = round(time.time() - t0, 1)
    if a.json:
        print(json.dumps(results))
        return
    for key, title in (("seen_classes", "classes of the training split, series of the test split"),
                       ("unseen_classes", f"classes never seen in training ({', '.join(unseen.classes)})")):
        r = results[key]
        print(f"{a.dataset}: {r['ways']}-way 1-shot, {title} ({a.episodes} episodes, 95% CI)")
        for name in ("trained_rnn", "random_rnn", "time_averaged_features"):
            print(f"  {name:<24} {100 * r[name]['accuracy']:.1f}% +- {100 * r[name]['ci95']:.1f}")
    print(f"index with 1 test example per class: {100 * acc:.1f}% on {len(rest)} test queries "
          f"(total {results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
