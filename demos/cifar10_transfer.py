"""Transfer learning on CIFAR-10 photos, end to end: feature extraction vs fine-tuning vs training from scratch.

    python demos/cifar10_transfer.py --json --plot docs/cifar10_transfer.png

cifar-cnn (the Keras tutorial CNN, shipped) was trained on the five base classes (airplane,
automobile, bird, cat, deer). Everything below is measured on the five novel classes (dog,
frog, horse, ship, truck), whose photos it never saw; support and query photos of an episode
are disjoint. Reported:

* the tutorial's own number: the same small CNN trained on all ten classes for ten epochs
  (cross-entropy, Adam), 10-class accuracy on a held-out 10% of the training photos
  (``--test-dir``: on those photos instead);
* 5-way K-shot (K = 1, 5, 20, 100) accuracy with its 95% CI and macro precision/recall/F1 of
  (a) cifar-cnn features + nearest prototype, (b) cifar-cnn after ``fewshot finetune`` on the
  support photos (the library's finetune path), (c) the small CNN trained from scratch on the
  support photos, (d) raw pixels + nearest prototype.

(a) and (d) use ``--episodes`` episodes; (b) and (c) train a network per episode, so they use
``--train-episodes`` (the first episodes of the same seeded sequence, so the methods see the
same supports and queries). ``--retrain`` retrains cifar-cnn first (the shipped recipe).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from demo_args import demo_parser

DATA = "../shared/data/cifar10/cifar10_train.zip"
SHOTS = (1, 5, 20, 100)
WAYS = 5
METHODS = {"a": "a_features", "b": "b_finetune", "c": "c_scratch", "d": "d_pixels"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse() -> object:
    p = demo_parser(__doc__)
    p.add_argument("--data", default=DATA, help="class-per-folder zip or folder of the ten classes")
    p.add_argument("--test-dir", default=None, help="photos (class-per-folder) to test the tutorial's classifier on")
    p.add_argument("--encoder", default="cifar-cnn", help="the encoder for (a) and (b)")
    p.add_argument("--retrain", action="store_true", help="retrain cifar-cnn on the base classes first")
    p.add_argument("--shots", default=",".join(map(str, SHOTS)))
    p.add_argument("--queries", type=int, default=15, help="query photos per class per episode")
    p.add_argument("--retrain-epochs", type=int, default=0, help="epochs of --retrain (default: the shipped recipe's)")
    p.add_argument("--episodes", type=int, default=600, help="episodes for (a) and (d)")
    p.add_argument("--train-episodes", type=int, default=30, help="episodes for (b) and (c) (a network each)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the tutorial's 10-class CNN")
    p.add_argument("--ft-steps", type=int, default=40, help="fine-tuning steps per episode (b)")
    p.add_argument("--ft-lr", type=float, default=1e-3, help="fine-tuning learning rate (b)")
    p.add_argument("--ft-last", type=int, default=1,
                   help="fine-tune only the last N blocks (b; 0: all layers); 1: the 64-unit dense layer")
    p.add_argument("--scratch-steps", type=int, default=100, help="training steps per episode (c)")
    p.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="(b) and (c) without left-right mirroring in their augmentation (before version 2)")
    p.add_argument("--select-finetune", default=None, metavar="GRID",
                   help="choose (b)'s recipe on base classes only, e.g. '1e-4:40,1e-3:100:last1,3e-4:40:nomirror' "
                        "(lr:steps[:lastN][:nomirror]): cifar-cnn retrained without --left-out, fine-tuned on "
                        "supports of held-out base photos")
    p.add_argument("--select-encoder", default=None, metavar="PT",
                   help="--select-finetune: that retrained cifar-cnn's file (reused when it exists, else written)")
    p.add_argument("--left-out", default="automobile", help="base class left out of training (--select-finetune)")
    p.add_argument("--recipe", default=None, help="cifar-cnn recipe for --retrain / --select-finetune "
                                                   "(default: the shipped one)")
    p.add_argument("--per-class", type=int, default=0, help="use only this many photos per class (smoke runs)")
    p.add_argument("--base", default=None, help="comma-separated base classes (default: the five above)")
    p.add_argument("--novel", default=None, help="comma-separated novel classes (default: the five above)")
    p.add_argument("--parts", default="tutorial,a,b,c,d",
                   help="which numbers: tutorial (10-class), a, b, c, d (the methods); to run them apart")
    p.add_argument("--tutorial-per-class", type=int, default=0,
                   help="photos per class for the tutorial's classifier (default all; 10%% of them held out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; on a shared machine 1 is fastest: 2 ran 6x slower next to one other busy process")
    p.add_argument("--plot", default=None, help="write the accuracy-vs-shots PNG here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="merge the --json outputs of runs of separate --parts (print, plot); runs nothing")
    return p.parse_args()


def scores(r) -> dict:
    """The numbers of one EvalResult, rounded."""
    ci = float(r.ci95) if np.isfinite(r.ci95) else None
    return {"accuracy": round(float(r.accuracy), 4), "ci95": None if ci is None else round(ci, 4),
            "precision": round(float(r.precision), 4), "recall": round(float(r.recall), 4),
            "f1": round(float(r.f1), 4), "episodes": int(len(r.episode_accuracies))}


def tutorial_number(ds, a) -> dict:
    """10-class accuracy of the small CNN trained on all ten classes for ``a.epochs`` epochs."""
    from fewshot.data.registry import load_dataset
    from fewshot.train.photos import split_per_class, train_classifier

    if a.tutorial_per_class:
        labels = np.asarray(ds.labels)
        ds = ds.subset(np.concatenate([np.flatnonzero(labels == c)[:a.tutorial_per_class] for c in ds.classes]))
    train, test = split_per_class(ds, 0.1, a.seed)
    if a.test_dir:
        test = load_dataset(a.test_dir, size=32, rgb=True)
    steps = max(1, a.epochs * len(train) // (10 * len(train.classes)))
    t0 = time.time()
    predict = train_classifier(train, steps, per_class=10, seed=a.seed, threads=a.threads, augment=False)
    pred = predict(test.items)
    acc = float(np.mean(pred == np.asarray(test.labels)))
    return {"accuracy": round(acc, 4), "train_photos": len(train), "test_photos": len(test),
            "test": a.test_dir or "held-out 10% of the photos", "epochs": a.epochs, "steps": steps,
            "batch": 10 * len(train.classes), "seconds": round(time.time() - t0, 1)}


def episode_sets(novel, sampler, i: int):
    """(support set, query set) of episode ``i`` (class names as labels)."""
    ep = sampler.episode(i)
    sup = novel.subset(ep.support.ravel())
    qry = novel.subset(ep.query.ravel())
    return ep, sup, qry


def trained_outcomes(novel, shots: int, a, method: str, encoder):
    """(classes, true, predicted positions) per episode for (b) fine-tune or (c) from scratch."""
    from fewshot.episodes import EpisodeSampler
    from fewshot.evaluation.embedding import embed_dataset
    from fewshot.finetune import finetune
    from fewshot.prototypes import class_prototypes, prototype_scores
    from fewshot.train.photos import train_classifier

    sampler = EpisodeSampler(novel.labels, WAYS, shots, a.queries, seed=a.seed)
    for i in range(a.train_episodes):
        ep, sup, qry = episode_sets(novel, sampler, i)
        pos = {c: j for j, c in enumerate(ep.classes)}
        true = np.array([pos[c] for c in qry.labels])
        if method == "scratch":
            pred_names = train_classifier(sup, a.scratch_steps, per_class=10, seed=a.seed + i, threads=a.threads,
                                          augment={"hflip": a.mirror})(qry.items)
        else:
            with tempfile.TemporaryDirectory(prefix="ft-") as tmp:
                res = finetune(encoder, sup, ways=WAYS, shots=1, queries=min(5, max(1, shots - 1)),
                               augment=True if a.mirror else {"hflip": False}, train_last=a.ft_last or None,
                               steps=a.ft_steps, lr=a.ft_lr, val_fraction=0.0, seed=a.seed + i,
                               run_dir=os.path.join(tmp, "run"), threads=a.threads, progress=False)
            s_emb = embed_dataset(res.encoder, sup, progress=False)
            q_emb = embed_dataset(res.encoder, qry, progress=False)
            names, protos = class_prototypes(s_emb, np.asarray(sup.labels), "cosine")
            pred_names = np.asarray(names)[prototype_scores(q_emb, protos, "cosine").argmax(1)]
        yield ep.classes, true, np.array([pos[str(c)] for c in pred_names])


def select_finetune(base, a) -> list[dict]:
    """(b)'s learning rate and steps, chosen without the novel classes: cifar-cnn retrained with its
    shipped recipe on the base classes but ``--left-out`` (90% of their photos), then fine-tuned on the
    supports of episodes drawn from the held-out 10% of all five base classes (the left-out one
    included, as a new class); per setting (b) - (a) paired over the same ``--train-episodes``."""
    import argparse

    from fewshot.evaluation.embedding import embed_dataset
    from fewshot.evaluation.kernel import evaluate_embeddings, score_episodes
    from fewshot.train.photos import split_per_class

    from fewshot import encoders as reg

    kept, held = split_per_class(base, 0.1, a.seed)
    if a.select_encoder and Path(a.select_encoder).is_file():
        encoder = reg.from_file(a.select_encoder)
    else:
        encoder = shipped_recipe_encoder(kept.with_classes([c for c in base.classes if c != a.left_out]), a)
        if a.select_encoder:
            encoder.save(a.select_encoder)
    emb = embed_dataset(encoder, held, progress=False)
    rows = []
    for k in [int(s) for s in a.shots.split(",")]:
        plain = evaluate_embeddings(emb, held, WAYS, k, a.queries, a.train_episodes, a.seed).episode_accuracies
        for setting in a.select_finetune.split(","):
            lr, steps, *flags = setting.split(":")
            last = [int(f[4:]) for f in flags if f.startswith("last")]
            b = argparse.Namespace(**{**vars(a), "ft_lr": float(lr), "ft_steps": int(steps),
                                      "mirror": "nomirror" not in flags, "ft_last": last[0] if last else 0})
            t = time.time()
            tuned = score_episodes(trained_outcomes(held, k, b, "finetune", encoder), WAYS,
                                   sorted(set(held.labels))).episode_accuracies
            d = np.asarray(tuned) - np.asarray(plain)[:len(tuned)]
            rows.append({"shots": k, "setting": setting, "a": round(float(np.mean(plain)), 4),
                         "b": round(float(np.mean(tuned)), 4), "b_minus_a": round(float(d.mean()), 4),
                         "ci95": round(float(1.96 * d.std(ddof=1) / np.sqrt(len(d))), 4), "episodes": len(d),
                         "seconds": round(time.time() - t, 1)})
            log(json.dumps(rows[-1]))
    return rows


def shipped_recipe_encoder(data, a):
    """cifar-cnn trained on ``data`` with the shipped recipe (or ``--recipe``; ``--retrain-epochs``)."""
    from fewshot.train.photos import SHIPPED, train_photo_encoder

    return train_photo_encoder(data, a.recipe or SHIPPED["recipe"], a.retrain_epochs or SHIPPED["epochs"],
                               seed=a.seed, threads=a.threads, progress=False, arch=SHIPPED["arch"],
                               tta_flip=SHIPPED["tta_flip"]).encoder


def raw_pixels(ds) -> np.ndarray:
    """Flattened pixels in [0, 1], centred on the base-class photos' mean image (not the novel ones')."""
    return ds.items.reshape(len(ds), -1).astype(np.float32) / 255.0


def plot(results: dict, shots: list[int], path: str) -> None:
    from fewshot.plots import _figure, _save

    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    names = {"a_features": "(a) cifar-cnn features + prototype", "b_finetune": "(b) cifar-cnn fine-tuned",
             "c_scratch": "(c) small CNN from scratch", "d_pixels": "(d) raw pixels + prototype"}
    for key, label in names.items():
        ks = [k for k in shots if str(k) in results.get(key, {})]  # merged runs may lack some
        ys = [results[key][str(k)]["accuracy"] for k in ks]
        es = [results[key][str(k)]["ci95"] or 0 for k in ks]
        if not ks:
            continue
        ax.errorbar(ks, ys, yerr=es, marker="o", capsize=3, label=label, linestyle="--" if key == "d_pixels" else "-")
    ax.set_xscale("log")
    ax.set_xticks(shots)
    ax.set_xticklabels([str(k) for k in shots])
    ax.axhline(1 / WAYS, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("photos per class (shots)")
    ax.set_ylabel("5-way accuracy on novel classes")
    ax.set_title("CIFAR-10 novel classes: transfer vs from scratch")
    ax.legend(fontsize=8)
    _save(fig, path)


def merge(paths: list[str]) -> dict:
    """One result from the --json outputs of separate --parts runs: their numbers, and their summed seconds."""
    out: dict = {}
    for p in paths:
        d = json.loads(Path(p).read_text())
        runs = out.get("runs", []) + [{"file": p, "seconds": d.pop("seconds"), "load_average": d.pop("load_average")}]
        for key in METHODS.values():  # a method's shot counts may come from several runs
            if key in d and key in out:
                d[key] = {**out[key], **d[key]}
        out.update(d)
        out["runs"] = runs
    out["seconds"] = round(sum(r["seconds"] for r in out["runs"]), 1)
    out["load_average"] = out["runs"][-1]["load_average"]
    return out


def report(out: dict, parts: set[str], shots: list[int], a) -> None:
    if a.plot and parts & {"a", "b", "c"}:
        plot(out, shots, a.plot)
    if a.json:
        print(json.dumps(out))
        return
    if "tutorial" in parts:
        print(f"tutorial: 10-class accuracy {out['tutorial_10class']['accuracy']:.3f}")
    if parts & set(METHODS):
        print("method        " + "".join(f"{k:>16}-shot" for k in shots))
        for key in (METHODS[m] for m in METHODS if m in parts):
            print(f"{key:<14}" + "".join(f"{100 * out[key][str(k)]['accuracy']:>12.1f} +- "
                                         f"{100 * (out[key][str(k)]['ci95'] or 0):4.1f}" if str(k) in out[key]
                                         else f"{'n/a':>20}" for k in shots))
    for name in PAIRS:
        if name in out:
            print(f"{name.replace('_', ' '):<14}" + "".join(
                f"{100 * d['difference']:>+12.1f} +- {100 * (d['ci95'] or 0):4.1f}" for d in out[name].values())
                  + "   (paired over the same episodes)")
    print(f"{out['seconds']:.0f}s, load average {out['load_average']}")


def main() -> None:
    a = parse()
    shots = [int(s) for s in a.shots.split(",")]
    if a.merge:
        out = merge(a.merge)
        parts = {p for p in ("tutorial", *METHODS) if p == "tutorial" and "tutorial_10class" in out or
                 p in METHODS and METHODS[p] in out}
        report(out, parts, shots, a)
        return
    import torch

    from fewshot.data.registry import load_dataset
    from fewshot.train.photos import BASE, NOVEL

    torch.set_num_threads(a.threads)
    t_start = time.time()
    ds = load_dataset(a.data, size=32, rgb=True)
    if a.per_class:
        ds = ds.subset([i for c in ds.classes for i in [j for j, lab in enumerate(ds.labels) if lab == c][:a.per_class]])
    base_cls = a.base.split(",") if a.base else list(BASE)
    novel_cls = a.novel.split(",") if a.novel else list(NOVEL)
    base, novel = ds.with_classes(base_cls), ds.with_classes(novel_cls)
    log(f"loaded {len(ds)} photos ({len(base)} base, {len(novel)} novel) in {time.time() - t_start:.0f}s")
    if a.select_finetune:
        rows = select_finetune(base, a)
        print(json.dumps(rows) if a.json else "\n".join(json.dumps(r) for r in rows))
        return
    out: dict = {"data": a.data, "threads": a.threads, "ways": WAYS, "queries": a.queries, "seed": a.seed}
    parts = set(a.parts.split(","))
    if "tutorial" in parts:
        t = time.time()
        out["tutorial_10class"] = tutorial_number(ds, a)
        log(f"tutorial 10-class accuracy {out['tutorial_10class']['accuracy']:.3f} ({time.time() - t:.0f}s)")
    if parts & set(METHODS):
        transfer(out, base, novel, shots, a, parts)
    out["seconds"] = round(time.time() - t_start, 1)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    report(out, parts, shots, a)


def transfer(out: dict, base, novel, shots: list[int], a, parts: set[str]) -> None:
    """(a)-(d) on the novel classes, into ``out``."""
    from fewshot import encoders as reg
    from fewshot.evaluation.embedding import embed_dataset
    from fewshot.evaluation.kernel import evaluate_embeddings, score_episodes
    encoder = None
    if a.retrain and parts & {"a", "b"}:
        encoder = shipped_recipe_encoder(base, a)
    elif parts & {"a", "b"}:
        encoder = reg.load(a.encoder)
    if encoder is not None:
        out["encoder"] = {"name": encoder.name, "fingerprint": encoder.fingerprint, "retrained": a.retrain}
    feats, per_episode = {}, {}
    if "a" in parts:
        feats["a_features"] = embed_dataset(encoder, novel, progress=False)
    if "d" in parts:
        feats["d_pixels"] = raw_pixels(novel) - raw_pixels(base).mean(0)
    for key, emb in feats.items():
        results = {k: evaluate_embeddings(emb, novel, WAYS, k, a.queries, a.episodes, a.seed) for k in shots}
        out[key] = {str(k): scores(r) for k, r in results.items()}
        per_episode[key] = {k: r.episode_accuracies for k, r in results.items()}
    for key, method in (("b_finetune", "finetune"), ("c_scratch", "scratch")):
        if key[0] not in parts:
            continue
        t = time.time()
        results = {k: score_episodes(trained_outcomes(novel, k, a, method, encoder), WAYS, sorted(set(novel.labels)))
                   for k in shots}
        out[key] = {str(k): scores(r) for k, r in results.items()}
        per_episode[key] = {k: r.episode_accuracies for k, r in results.items()}
        log(f"{key}: {time.time() - t:.0f}s")
    out.update(paired_differences(per_episode, shots))


#: The issue's two comparisons, each paired over the episodes both methods ran
PAIRS = {"a_minus_c": ("a_features", "c_scratch"), "b_minus_a": ("b_finetune", "a_features")}


def paired_differences(per_episode: dict, shots: list[int]) -> dict:
    """Accuracy of one method minus another's, episode by episode over the episodes both ran (the
    same seeded episodes: same supports, same queries), with a 95% CI (1.96 std / sqrt n).

    Pairing removes the episode-to-episode spread both methods share (how hard that episode's
    photos are), so 10 trained episodes can settle a gap their separate intervals cannot.
    """
    out = {}
    for name, (x, y) in PAIRS.items():
        if x not in per_episode or y not in per_episode:
            continue
        out[name] = {}
        for k in shots:
            ax, ay = np.asarray(per_episode[x][k]), np.asarray(per_episode[y][k])
            n = min(len(ax), len(ay))
            d = ax[:n] - ay[:n]
            ci = float(1.96 * d.std(ddof=1) / np.sqrt(n)) if n > 1 else None
            out[name][str(k)] = {"difference": round(float(d.mean()), 4), "ci95": None if ci is None else round(ci, 4),
                                 "episodes": int(n)}
    return out


if __name__ == "__main__":
    main()
