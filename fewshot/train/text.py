"""Train ``text-gru`` with the shared loop: episodes of CLINC150 intents, metric-learning losses.

    python -m fewshot.train.text --data ../shared/data/clinc150/clinc150_dev.json \\
        --hold-out home,auto_and_commute --out runs/text-gru --steps 1500

Training uses the ``train`` queries of the domains not held out; validation the
``val`` queries of those same domains (within-domain episodes), so the held-out
domains are never seen before the numbers reported on them. The loop, the
episode sampler and the checkpoints (resume by running the command again) are
the shared ones; only the batcher (``TextBatcher``) knows about text.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fewshot.data.dataset import LabelledSet
from fewshot.encoders.text_rnn import TorchTextEncoder, new_text_encoder
from fewshot.encoders.weights import seeded_init
from fewshot.losses import DistillationLoss, PrototypicalLoss, SupConLoss
from fewshot.train.batches import make_batcher
from fewshot.train.loop import LossTerm, TrainConfig, fit

TEXT_DEFAULTS = {"ways": 20, "shots": 2, "queries": 3, "steps": 500, "lr": 2e-3, "warmup": 50, "grad_clip": 5.0,
                 "rotations": False, "val_every": 100, "val_episodes": 200, "val_ways": 15, "val_shots": 1,
                 "val_queries": 5, "checkpoint_every": 50, "extra": {"word_dropout": 0.1}}


def clinc_split(path: str | Path, split: str, exclude: list[str]) -> LabelledSet:
    """One split of CLINC150 JSON (in-scope only) without the ``exclude`` domains."""
    from fewshot.data.text import _clinc, _domains, _pairs

    path = Path(path)
    pairs = [(t, i) for t, i in _pairs(_clinc(path).get(split, []), split, path) if i != "oos"]
    domain_of = _domains(path)
    ds = LabelledSet([t for t, _ in pairs], [i for _, i in pairs], [domain_of.get(i, "all") for _, i in pairs],
                     kind="text")
    return ds.keep_groups(str(path), None, exclude)


def teacher_targets(teacher: str, texts: list[str], out: str | Path, progress: bool) -> torch.Tensor:
    """The teacher's embeddings of ``texts``, computed once per run folder (``teacher.npy``)."""
    import numpy as np

    from fewshot import encoders

    cache = Path(out) / "teacher.npy"
    if cache.exists():
        emb = np.load(cache)
        if len(emb) == len(texts):
            return torch.from_numpy(emb)
    Path(out).mkdir(parents=True, exist_ok=True)
    emb = encoders.resolve(teacher).embed(texts, progress=progress)
    np.save(cache, emb)
    return torch.from_numpy(emb)


def train_text_gru(data: str, out: str, hold_out: list[str], supcon: float = 0.0, threads: int = 0,
                   progress: bool = True, distill: float = 0.0, teacher: str = "minilm",
                   **overrides) -> tuple[TorchTextEncoder, dict]:
    """Train a fresh text GRU; returns it (best validation weights) and the run summary.

    ``distill`` > 0 adds a distillation term: a linear head maps the GRU's embedding
    to the ``teacher``'s (minilm) embedding of the same training sentence."""
    cfg = TrainConfig(**{**TEXT_DEFAULTS, "threads": threads, **overrides})
    train, val = clinc_split(data, "train", hold_out), clinc_split(data, "val", hold_out)
    with seeded_init(cfg.seed):
        enc = new_text_encoder("text-gru")
    terms = [LossTerm("proto", PrototypicalLoss())]
    if supcon:
        terms.append(LossTerm("supcon", SupConLoss(0.1), supcon))
    targets = None
    if distill:
        targets = teacher_targets(teacher, list(train.items), out, progress)
        terms.append(LossTerm("distill", DistillationLoss(enc.dim, targets.shape[1]), distill))
    batcher = make_batcher(train, cfg, tokenize=enc.tokenize, targets=targets)
    summary = fit(enc.module, terms, batcher, train, out, cfg, val=val, progress=progress, desc="text-gru")
    best = Path(out) / "best.pt"
    if best.exists():
        enc.module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    enc.module.eval()
    enc.invalidate()
    enc.weights_source = f"trained: {data} without {','.join(hold_out)}"
    return enc, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hold-out", default="home,auto_and_commute", help="domains never trained on ('' = none)")
    ap.add_argument("--steps", type=int, default=TEXT_DEFAULTS["steps"])
    for knob in ("ways", "shots", "queries"):
        ap.add_argument(f"--{knob}", type=int, default=TEXT_DEFAULTS[knob], help="of a training episode")
    ap.add_argument("--supcon", type=float, default=0.0, help="weight of a SupCon term beside the prototypical loss")
    ap.add_argument("--distill", type=float, default=0.0, help="weight of distillation from minilm")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--save", default=None, help="write the encoder file here (default OUT/text_gru.pt)")
    a = ap.parse_args(argv)
    hold = [d for d in a.hold_out.split(",") if d]
    enc, summary = train_text_gru(a.data, a.out, hold, a.supcon, a.threads, distill=a.distill, steps=a.steps,
                                  ways=a.ways, shots=a.shots, queries=a.queries)
    path = enc.save(a.save or Path(a.out) / "text_gru.pt")
    print(json.dumps({"saved": str(path), "fingerprint": enc.fingerprint, **summary}, default=str))


if __name__ == "__main__":
    main()
