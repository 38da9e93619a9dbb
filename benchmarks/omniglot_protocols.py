"""Few-shot accuracy of an image encoder under the standard protocols, in one table.

    python benchmarks/omniglot_protocols.py                       # the shipped encoder
    python benchmarks/omniglot_protocols.py --encoder runs/x/encoder.pt --json-out results.json

Protocols (1000 episodes each, seed 0, 5 queries per class), on the Omniglot
alphabets held out from the shipped encoder's training:

* 20-way 1-shot within one alphabet (Lake et al.'s harder protocol)
* 5-way 1-shot and 20-way 1-shot across alphabets
* 20-way 5-shot across alphabets
* plus 10-way 1-shot on scikit-learn's digits (a domain the encoder never saw)

each with and without test-time augmentation (``--tta``: mean embedding over the
image and its 1-pixel shifts). Each dataset is embedded once per TTA setting and
every protocol runs the same episodes as ``fewshot evaluate`` with the same
options; the equivalent ``fewshot evaluate`` command is printed for each row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HELD_OUT = ["Bengali", "Futurama", "Greek", "Korean", "Tifinagh"]
DEFAULT_DATA = "../shared/data/omniglot/images_background.zip"
# (name, dataset key, ways, shots, within_group)
PROTOCOLS = [
    ("omniglot 20-way 1-shot within alphabet", "omniglot", 20, 1, True),
    ("omniglot 5-way 1-shot", "omniglot", 5, 1, False),
    ("omniglot 20-way 5-shot", "omniglot", 20, 5, False),
    ("omniglot 20-way 1-shot", "omniglot", 20, 1, False),
    ("digits 10-way 1-shot", "digits", 10, 1, False),
]


def command_line(data: str, encoder: str | None, ways: int, shots: int, within: bool, episodes: int, seed: int,
                 queries: int, tta: bool, alphabets: list[str] | None) -> str:
    parts = ["fewshot evaluate", f"--data {data}"]
    if alphabets:
        parts.append(f"--alphabets {','.join(alphabets)}")
    if encoder:
        parts.append(f"--encoder {encoder}")
    parts += [f"--ways {ways}", f"--shots {shots}", f"--queries {queries}", f"--episodes {episodes}", f"--seed {seed}"]
    if within:
        parts.append("--within-alphabet")
    if tta:
        parts.append("--tta")
    return " ".join(parts)


def paired_tta_gains(rows: list[dict]) -> list[dict]:
    """Per protocol, mean and 95% CI of (TTA - plain) accuracy over identical episodes.

    Both runs use the same seed and so the same episodes; the paired difference
    has a much narrower interval than the two accuracies' intervals suggest.
    Pops the per-episode accuracies from ``rows`` (they are not written to JSON).
    """
    from fewshot.metrics import mean_ci95

    by = {(r["name"], r["protocol"]["tta"]): r.pop("episode_accuracies") for r in rows}
    out = []
    for (name, tta), accs in by.items():
        if tta and (name, False) in by:
            gain, ci = mean_ci95(accs - by[(name, False)])
            out.append({"name": name, "gain": gain, "ci95": ci})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="Omniglot images_background zip or folder")
    p.add_argument("--alphabets", default=",".join(HELD_OUT), help="alphabets to evaluate on (comma-separated)")
    p.add_argument("--encoder", default=None,
                   help="encoder name or file (default: the shipped one); A+B: the ensemble of two (held-out twins)")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tta", choices=["both", "off", "on"], default="both")
    p.add_argument("--skip-digits", action="store_true")
    p.add_argument("--json-out", default="omniglot_protocols.json", help="where to write the results as JSON")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    a = p.parse_args()

    import torch

    from fewshot import encoders
    from fewshot.data import load_dataset
    from fewshot.evaluation import embed_dataset, evaluate_embeddings

    if a.threads:
        torch.set_num_threads(a.threads)
    if "+" in (a.encoder or ""):  # held-out twins of an ensemble's members: A+B
        from fewshot.encoders.ensemble import ImageEnsemble

        enc = ImageEnsemble("ensemble", [encoders.load(x) for x in a.encoder.split("+")])
    else:
        enc = encoders.load(a.encoder or encoders.DEFAULT_IMAGE_ENCODER)
    alphabets = [s for s in a.alphabets.split(",") if s] or None
    if not Path(a.data).exists():
        print(f"error: Omniglot data not found at {a.data} (pass --data)", file=sys.stderr)
        return 1
    t0 = time.time()
    datasets = {"omniglot": load_dataset(a.data, size=enc.preprocess.size, alphabets=alphabets)}
    if not a.skip_digits:
        datasets["digits"] = load_dataset("digits", size=enc.preprocess.size)
    print(f"encoder {enc.name} ({enc.fingerprint}); data loaded in {time.time() - t0:.1f}s", file=sys.stderr)
    tta_settings = {"both": [False, True], "off": [False], "on": [True]}[a.tta]
    rows = []
    for tta in tta_settings:
        for key, ds in datasets.items():
            t = time.time()
            emb = embed_dataset(enc, ds, tta=tta)
            t_embed = time.time() - t
            for name, dkey, ways, shots, within in PROTOCOLS:
                if dkey != key:
                    continue
                t = time.time()
                r = evaluate_embeddings(emb, ds, ways, shots, a.queries, a.episodes, a.seed, within,
                                        protocol={"tta": tta, "dataset": a.data if key == "omniglot" else "digits",
                                                  "alphabets": alphabets if key == "omniglot" else None,
                                                  "encoder": enc.name, "fingerprint": enc.fingerprint})
                row = {"name": name, **r.to_dict(),
                       "command": command_line(a.data if key == "omniglot" else "digits", a.encoder, ways, shots,
                                               within, a.episodes, a.seed, a.queries, tta,
                                               alphabets if key == "omniglot" else None),
                       "seconds": {"embed": round(t_embed, 1), "episodes": round(time.time() - t, 1)}}
                row["episode_accuracies"] = r.episode_accuracies
                rows.append(row)
                print(f"{name:<42} tta={'on ' if tta else 'off'} {100 * r.accuracy:6.2f}% +- {100 * r.ci95:.2f}",
                      file=sys.stderr, flush=True)
    print(f"\n{'protocol':<42} {'TTA':<4} {'accuracy':>9} {'95% CI':>7} {'macro F1':>9}")
    for r in rows:
        print(f"{r['name']:<42} {'on' if r['protocol']['tta'] else 'off':<4} {100 * r['accuracy']:8.2f}% "
              f"{100 * r['ci95']:6.2f} {r['f1']:9.3f}")
    gains = paired_tta_gains(rows)
    if gains:
        print("\nTTA gain, paired over the same episodes (accuracy with TTA minus without, 95% CI):")
        for g in gains:
            print(f"{g['name']:<42} {100 * g['gain']:+6.2f} +- {100 * g['ci95']:.2f} points")
    out = {"encoder": enc.name, "fingerprint": enc.fingerprint, "episodes": a.episodes, "seed": a.seed,
           "queries": a.queries, "alphabets": alphabets, "results": rows, "tta_gains": gains}
    tmp = Path(a.json_out).with_name(Path(a.json_out).name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, a.json_out)
    print(f"\nwrote {a.json_out}; total {time.time() - t0:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
