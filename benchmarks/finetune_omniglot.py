"""Does fine-tuning on a new Omniglot domain hurt the encoder elsewhere? (It must not.)

    python benchmarks/finetune_omniglot.py --json benchmarks/results/finetune_omniglot.json

The shipped encoder never saw five background alphabets (Bengali, Futurama,
Greek, Korean, Tifinagh). Three of them (default: Bengali, Futurama, Greek) play
the user's new domain: the encoder is fine-tuned on their characters (a share of
them held out for early stopping). The other two (Korean, Tifinagh) play the
classes that come next: 20-way 1-shot accuracy on them, within one alphabet
(Lake et al.'s harder protocol) and across both, is compared between the frozen
and the fine-tuned encoder on the same 1,000 episodes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DATA = "../shared/data/omniglot/images_background.zip"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DATA)
    p.add_argument("--encoder", default="omniglot-conv4")
    p.add_argument("--finetune-alphabets", default="Bengali,Futurama,Greek")
    p.add_argument("--eval-alphabets", default="Korean,Tifinagh")
    p.add_argument("--loss", default="proto")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ways-train", type=int, default=20)
    p.add_argument("--expand", default="rotations")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args()

    import tempfile

    import torch

    from fewshot import encoders
    from fewshot.data import load_dataset
    from fewshot.evaluation import evaluate
    from fewshot.finetune import finetune

    torch.set_num_threads(a.threads)
    if not Path(a.data).exists():
        sys.exit(f"error: Omniglot not found at {a.data}")
    ft_alpha, ev_alpha = a.finetune_alphabets.split(","), a.eval_alphabets.split(",")
    ds = load_dataset(a.data, alphabets=ft_alpha + ev_alpha)
    ft_ds = ds.subset([i for i, g in enumerate(ds.groups) if g in ft_alpha])
    ev_ds = ds.subset([i for i, g in enumerate(ds.groups) if g in ev_alpha])
    base = encoders.load(a.encoder)

    def score(enc) -> dict:
        out = {}
        for within in (True, False):
            r = evaluate(enc, ev_ds, 20, 1, 5, a.episodes, seed=a.seed, within_group=within, progress=False)
            out["within_alphabet" if within else "across_alphabets"] = {"accuracy": round(r.accuracy, 4),
                                                                        "ci95": round(r.ci95, 4)}
        return out

    frozen = score(base)
    print(f"frozen: {json.dumps(frozen)}", file=sys.stderr, flush=True)
    report = {"frozen": frozen, "encoder": base.name, "base_fingerprint": base.fingerprint,
              "finetune_alphabets": ft_alpha, "eval_alphabets": ev_alpha,
              "protocol": {"ways": 20, "shots": 1, "queries": 5, "episodes": a.episodes, "seed": a.seed},
              "runs": {}}
    # "guarded": the library's default use, a share of the new domain's characters held out,
    # early stopping, never worse than the start on them. "fixed": all characters, a fixed
    # number of steps, no validation: what the fine-tune itself does to the other alphabets.
    variants = {"guarded": a.val_fraction, "fixed": 0.0}
    tmp = Path(tempfile.mkdtemp())
    for label, val_fraction in variants.items():
        t0 = time.perf_counter()
        res = finetune(base, ft_ds, loss=a.loss, steps=a.steps, lr=a.lr, ways=a.ways_train, expand=a.expand,
                       val_fraction=val_fraction, val_ways=20, seed=a.seed, threads=a.threads, keep_run=True,
                       out=tmp / f"omniglot_{label}.pt", progress=sys.stderr.isatty())
        seconds = time.perf_counter() - t0
        log = [json.loads(line) for line in (tmp / f"omniglot_{label}.pt.run" / "log.jsonl").read_text().splitlines()]
        tuned = score(res.encoder)
        print(f"fine-tuned ({label}): {json.dumps(tuned)}", file=sys.stderr, flush=True)
        s = res.summary
        report["runs"][label] = {
            "finetuned": tuned, "fingerprint": res.encoder.fingerprint,
            "delta_points": {k: round(100 * (tuned[k]["accuracy"] - frozen[k]["accuracy"]), 2) for k in frozen},
            "finetune": {"loss": s["loss"], "lr": a.lr, "steps_run": s["step"], "steps": s["steps"],
                         "stopped_early": s["stopped_early"], "improved": s["improved"],
                         "val_acc_start": s["val_acc_start"] if s["val_classes"] else None,
                         "best_val_acc": s["best_val_acc"] if s["val_classes"] else None,
                         "n_val_classes": len(s["val_classes"]), "expand": s["expand"], "ways": s["ways"],
                         "seconds": round(seconds, 1)},
            "val_curve": [(r["step"], round(r["val_acc"], 4)) for r in log if r["val_acc"] == r["val_acc"]],
            "loss_curve": [(r["step"], round(r["loss"], 4)) for r in log]}
    text = json.dumps(report, indent=2)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
