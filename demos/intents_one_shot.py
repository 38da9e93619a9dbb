"""Intents from ONE example each: build a text index, route held-out queries, show the worst intents.

    python demos/intents_one_shot.py                      # minilm, domains home + auto_and_commute
    python demos/intents_one_shot.py --encoder text-gru.pt --domains banking --seed 3 --json

Through the library's real path: ``FewShotIndex.create(kind="text")``, one
``add`` per intent with one example utterance picked at random from the CLINC150
``train`` split, then ``classify`` on every ``test`` query of those intents.
Prints the accuracy and, for the worst intents, what their queries were taken for.
Data: ``../shared/data/clinc150/clinc150_dev.json`` (see ../shared/data/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clinc150" / "clinc150_dev.json"


def run(data: Path, domains: list[str], encoder: str | None, seed: int, worst: int) -> dict:
    """One-shot accuracy on the test queries of ``domains``, and the confusions of the worst intents."""
    from fewshot import FewShotIndex
    from fewshot.data.text import load_clinc

    ds = load_clinc(data, groups=domains)
    rng = np.random.default_rng(seed)
    support = {}
    for c in ds.classes:
        rows = [i for i, (lab, r) in enumerate(zip(ds.labels, ds.roles)) if lab == c and r == "support"]
        support[c] = ds.items[int(rng.choice(rows))]
    queries = [(ds.items[i], lab) for i, (lab, r) in enumerate(zip(ds.labels, ds.roles)) if r == "query"]
    with tempfile.TemporaryDirectory() as tmp, \
            FewShotIndex.create(Path(tmp) / "intents", encoder=encoder, kind="text") as idx:
        idx.add_many([(c, [t]) for c, t in support.items()])
        preds = idx.classify([q for q, _ in queries], top_k=1)
    truth = [lab for _, lab in queries]
    got = [p.label for p in preds]
    per = {c: np.mean([g == c for g, t in zip(got, truth) if t == c]) for c in ds.classes}
    bad = sorted(per, key=per.get)[:worst]
    confusions = {c: dict(Counter(g for g, t in zip(got, truth) if t == c and g != c).most_common(3)) for c in bad}
    return {"accuracy": float(np.mean([g == t for g, t in zip(got, truth)])), "intents": len(ds.classes),
            "queries": len(queries), "domains": domains, "seed": seed, "support": support,
            "worst": {c: {"accuracy": float(per[c]), "taken_for": confusions[c]} for c in bad}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--domains", default="home,auto_and_commute")
    ap.add_argument("--encoder", default=None, help="default: the text default (minilm)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worst", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not a.data.exists():
        sys.exit(f"error: CLINC150 data not found at {a.data} (see ../shared/data/README.md)")
    out = run(a.data, a.domains.split(","), a.encoder, a.seed, a.worst)
    if a.json:
        print(json.dumps(out, ensure_ascii=False))
        return
    print(f"{out['intents']} intents from one example each; {out['queries']} test queries: "
          f"accuracy {100 * out['accuracy']:.1f}%")
    for c, w in out["worst"].items():
        taken = ", ".join(f"{k} x{v}" for k, v in w["taken_for"].items())
        print(f"  {c:<28} {100 * w['accuracy']:5.1f}%  taken for: {taken}  (support: {out['support'][c]!r})")


if __name__ == "__main__":
    main()
