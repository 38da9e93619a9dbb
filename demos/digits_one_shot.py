"""The main job, end to end: teach ten digit classes from ONE example each, classify the rest.

    python demos/digits_one_shot.py                 # accuracy, mean over 10 choices, digits_confusion.png
    python demos/digits_one_shot.py --json --trials 20 --out results/
    python demos/digits_one_shot.py --index my_digits_index   # keep the first trial's index

Uses scikit-learn's bundled 8x8 digits (1,797 images; no download) and the
shipped encoder, through the library's real path: ``FewShotIndex.create``, then
``add`` with one numpy array per class, then ``FewShotIndex.classify`` on all the
other images. One-shot accuracy depends heavily on which example is picked
(a neat "1" or a sloppy one), so the whole run is repeated for ``--trials``
random choices and the mean with its 95% confidence interval is reported; the
confusion matrix is summed over all trials.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def one_shot_trial(index_dir: Path, encoder, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                   embeddings: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, list[int]]:
    """Build an index from one random example per class and classify all the other images.

    The index is created and filled through ``FewShotIndex.create`` / ``add_many``
    with numpy arrays. Without ``embeddings`` the queries go through
    ``FewShotIndex.classify``. With ``embeddings`` (every image's vector from
    the same encoder) the queries skip re-embedding and go straight to the index's
    prototype search, the step ``classify`` runs after embedding: the same
    predictions (``main`` checks this on the first trial) without embedding them again.
    Returns (accuracy, true labels, predicted labels, indices of the support examples).
    """
    from fewshot import FewShotIndex

    classes = sorted(set(labels.tolist()))
    support = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
    rest = np.setdiff1d(np.arange(len(labels)), support)
    with FewShotIndex.create(index_dir, encoder=encoder) as idx:
        idx.add_many([(str(c), images[i]) for c, i in zip(classes, support)])
        if embeddings is None:
            y_pred = np.array([p.label for p in idx.classify([images[i] for i in rest], top_k=1)])
        else:
            hits = idx.store.search_prototypes(embeddings[rest], 1)
            y_pred = np.array([h[0].label for h in hits])
    y_true = labels[rest].astype(str)
    return float((y_true == y_pred).mean()), y_true, y_pred, support


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10, help="random choices of the support examples (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", default=None, help="encoder name or file (default: the shipped one)")
    p.add_argument("--index", default=None, help="build the first trial's index here (must not exist) and keep it")
    p.add_argument("--out", default=".", help="folder for the confusion-matrix PNG (default: current folder)")
    p.add_argument("--plot", default="digits_confusion.png", help="PNG file name, inside --out ('' for none)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    a = p.parse_args(argv)
    if a.trials < 1:
        p.error("--trials must be >= 1")

    from fewshot import encoders
    from fewshot.data.digits import digits_arrays, digits_to_images
    from fewshot.metrics import confusion_matrix, mean_ci95, precision_recall_f1

    t0 = time.time()
    enc = encoders.load(a.encoder or encoders.DEFAULT_IMAGE_ENCODER)
    values, labels = digits_arrays()  # scikit-learn's bundled digits (sklearn.datasets.load_digits)
    # 0..16 ink values -> uint8 ink-high 8x8 images; the encoder resizes them itself.
    images = digits_to_images(values, size=None)
    rng = np.random.default_rng(a.seed)
    class_names = [str(c) for c in sorted(set(labels.tolist()))]
    accs, f1s, supports = [], [], []
    cm = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="digits_one_shot_") as tmp:
        for t in range(a.trials):
            where = Path(a.index) if (a.index and t == 0) else Path(tmp) / f"trial{t}"
            if t == 0:  # the whole real path: create, add, classify
                acc, y_true, y_pred, support = one_shot_trial(where, enc, images, labels, rng)
                if a.trials > 1:  # embed every image once for the other trials, and check the shortcut
                    embeddings = enc.embed(list(images), batch_size=512)
                    check = one_shot_trial(Path(tmp) / "check", enc, images, labels,
                                           np.random.default_rng(a.seed), embeddings)
                    if not np.array_equal(check[2], y_pred):
                        raise RuntimeError("prototype search on precomputed embeddings disagrees with classify")
            else:
                acc, y_true, y_pred, support = one_shot_trial(where, enc, images, labels, rng, embeddings)
            accs.append(acc)
            f1s.append(precision_recall_f1(y_true, y_pred, class_names)[2])
            supports.append(support)
            cm += confusion_matrix(y_true, y_pred, class_names)
            if not a.json:
                print(f"trial {t + 1:>2}: accuracy {100 * acc:.2f}%  (support examples {support})", file=sys.stderr)
    mean, ci = mean_ci95(accs)
    plot_path = None
    if a.plot:
        from fewshot.plots import plot_confusion

        plot_path = str(plot_confusion(cm, class_names, Path(a.out) / a.plot,
                                       f"digits, 10-way one-shot ({enc.name}), summed over {a.trials} trial(s)"))
    n_queries = len(labels) - len(class_names)
    result = {"accuracy": mean, "ci95": ci, "trial_accuracies": accs, "macro_f1": float(np.mean(f1s)),
              "trials": a.trials, "queries_per_trial": n_queries, "ways": len(class_names), "shots": 1,
              "seed": a.seed, "support_indices": supports, "encoder": enc.name, "fingerprint": enc.fingerprint,
              "index": a.index, "plot": plot_path, "seconds": round(time.time() - t0, 1)}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"one example per digit, {n_queries} other images classified with {enc.name}")
        print(f"accuracy: first trial {100 * accs[0]:.2f}%; mean over {a.trials} random choices of the "
              f"example {100 * mean:.2f}% +- {100 * ci:.2f} (95% CI); range {100 * min(accs):.1f}-"
              f"{100 * max(accs):.1f}%; chance 10%")
        if plot_path:
            print(f"confusion matrix: {plot_path}")
        if a.index:
            print(f"index kept at {a.index}: try `fewshot info {a.index}`")
        print(f"({result['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
