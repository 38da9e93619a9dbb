"""Fine-tune the shipped Omniglot encoder on digits 0-4, then one-shot classify digits 5-9.

    python demos/finetune_digits.py                 # proto loss; prints both accuracies with 95% CIs
    python demos/finetune_digits.py --losses all    # proto, triplet and supcon, one PNG bar each
    python demos/finetune_digits.py --json

The encoder was trained on Omniglot characters; scikit-learn's 8x8 digits are
another domain (blurry, thick, upscaled strokes), where it does no better than raw
pixels. A short metric-learning fine-tune on the digits 0-4 (each class also in
its 8 rotated / mirrored versions, so the network sees 40 classes and cannot get
away with telling just five apart) is then evaluated on the digits 5-9, which it
never saw, in 5-way 1-shot episodes. The frozen encoder is evaluated on exactly
the same episodes (same sampler seed), so the difference is the fine-tune's doing.
Writes a PNG of the accuracies (``--plot``, default runs/finetune_digits.png).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from demo_args import add_ints, demo_parser

TRAIN_CLASSES, TEST_CLASSES = "0-4", ["5", "6", "7", "8", "9"]
# Per-loss learning rates: batch-hard triplet gets its gradient from two pairs per
# anchor and wants a larger step than the softmax-based losses.
LOSS_LR = {"proto": 1e-3, "triplet": 2e-3, "supcon": 1e-3}


def main() -> None:
    p = demo_parser(__doc__)
    p.add_argument("--encoder", default="omniglot-conv4", help="encoder to start from (name or file)")
    p.add_argument("--losses", default="proto", help="comma-separated subset of proto,triplet,supcon, or 'all'")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps per loss")
    p.add_argument("--ways-train", type=int, default=10, help="classes per training episode")
    p.add_argument("--queries-train", type=int, default=5)
    p.add_argument("--train-last", type=int, default=None, help="train only the last N blocks")
    p.add_argument("--expand", default="dihedral", choices=["dihedral", "rotations", "none"])
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of 0-4 held out for early stopping (default 0: all five classes train)")
    add_ints(p, ways=5, shots=1, queries=15, episodes=1000, seed=0, threads=2)
    p.add_argument("--max-per-class", type=int, default=0,
                   help="use at most this many images per digit (0: all ~180; small values for smoke tests)")
    p.add_argument("--plot", default="runs/finetune_digits.png", help="PNG to write ('' for none)")
    p.add_argument("--out-dir", default=None, help="keep the fine-tuned encoders here (default: a temp folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    a = p.parse_args()

    import tempfile

    import torch

    from fewshot import encoders
    from fewshot.data import load_dataset
    from fewshot.evaluation import evaluate
    from fewshot.finetune import finetune

    torch.set_num_threads(a.threads)
    losses = ["proto", "triplet", "supcon"] if a.losses == "all" else [s.strip() for s in a.losses.split(",")]
    say = (lambda *x: print(*x, file=sys.stderr, flush=True)) if a.json else (lambda *x: print(*x, flush=True))
    digits = load_dataset("digits")
    if a.max_per_class:
        taken: dict[str, int] = {}
        keep = []
        for i, lab in enumerate(digits.labels):
            taken[lab] = taken.get(lab, 0) + 1
            if taken[lab] <= a.max_per_class:
                keep.append(i)
        digits = digits.subset(keep)
    test = digits.subset([i for i, lab in enumerate(digits.labels) if lab in TEST_CLASSES])
    base = encoders.load(a.encoder)
    protocol = {"ways": a.ways, "shots": a.shots, "queries": a.queries, "episodes": a.episodes, "seed": a.seed,
                "test_classes": TEST_CLASSES, "train_classes": TRAIN_CLASSES, "test_images": len(test)}

    def score(enc) -> dict:
        r = evaluate(enc, test, a.ways, a.shots, a.queries, a.episodes, seed=a.seed, progress=False)
        return {"accuracy": round(r.accuracy, 4), "ci95": round(r.ci95, 4), "fingerprint": enc.fingerprint}

    frozen = score(base)
    say(f"frozen {base.name}: {100 * frozen['accuracy']:.2f}% +- {100 * frozen['ci95']:.2f} "
        f"({a.ways}-way {a.shots}-shot on digits 5-9, {a.episodes} episodes)")
    out_dir = Path(a.out_dir) if a.out_dir else Path(tempfile.mkdtemp(prefix="finetune_digits_"))
    per_loss = {}
    for loss in losses:
        t0 = time.perf_counter()
        res = finetune(base, digits, classes=TRAIN_CLASSES, loss=loss, steps=a.steps, lr=LOSS_LR.get(loss, 1e-3),
                       ways=a.ways_train, queries=a.queries_train, expand=a.expand, train_last=a.train_last,
                       val_fraction=a.val_fraction, seed=a.seed, out=out_dir / f"digits_{loss}.pt",
                       fresh=True, threads=a.threads, progress=not a.json and sys.stderr.isatty())
        seconds = time.perf_counter() - t0
        s = score(res.encoder)
        s.update({"finetune_seconds": round(seconds, 1), "steps": res.summary["step"],
                  "encoder_file": str(res.path)})
        per_loss[loss] = s
        say(f"fine-tuned ({loss}): {100 * s['accuracy']:.2f}% +- {100 * s['ci95']:.2f}  "
            f"[{100 * (s['accuracy'] - frozen['accuracy']):+.2f} points; fine-tune {seconds:.0f}s, "
            f"{res.summary['step']} steps]")
    main_loss = losses[0]
    report = {"frozen": frozen, "finetuned": {**per_loss[main_loss], "loss": main_loss},
              "per_loss": per_loss, "gain_points": round(100 * (per_loss[main_loss]["accuracy"]
                                                                - frozen["accuracy"]), 2),
              "encoder": base.name, "protocol": protocol, "threads": a.threads,
              "settings": {"steps": a.steps, "ways_train": a.ways_train, "queries_train": a.queries_train,
                           "expand": a.expand, "train_last": a.train_last, "val_fraction": a.val_fraction,
                           "lr": {k: LOSS_LR.get(k, 1e-3) for k in losses}}}
    if a.plot:
        plot(report, a.plot)
        report["plot"] = a.plot
        say(f"wrote {a.plot}")
    if a.json:
        print(json.dumps(report))


def plot(report: dict, path: str) -> None:
    """Bars with 95% CI whiskers: the frozen encoder, then each fine-tune."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["frozen"] + [f"fine-tuned\n({k})" for k in report["per_loss"]]
    rows = [report["frozen"]] + list(report["per_loss"].values())
    acc = [100 * r["accuracy"] for r in rows]
    ci = [100 * r["ci95"] for r in rows]
    fig, ax = plt.subplots(figsize=(2 + 1.4 * len(rows), 4))
    bars = ax.bar(names, acc, yerr=ci, capsize=6, color=["#999999"] + ["#3a7dc9"] * (len(rows) - 1))
    for b, v in zip(bars, acc):
        ax.text(b.get_x() + b.get_width() / 2, v + 1.5, f"{v:.1f}", ha="center", va="bottom")
    p = report["protocol"]
    ax.set_ylim(0, 100)
    ax.axhline(100 / p["ways"], color="k", lw=0.8, ls=":", label="chance")
    ax.set_ylabel("accuracy (%) on digits 5-9")
    ax.set_title(f"{p['ways']}-way {p['shots']}-shot, {p['episodes']} episodes (95% CI)\n"
                 f"{report['encoder']} fine-tuned on digits 0-4", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
