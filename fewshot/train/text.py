"""Train ``text-gru`` with the shared loop: episodes of CLINC150 intents, metric-learning losses.

    python -m fewshot.train.text --data ../shared/data/clinc150/clinc150_dev.json \\
        --hold-out home,auto_and_commute --out runs/text-gru --steps 1500

``--arch static-text-rnn`` trains version 2's architecture: MiniLM's WordPiece
vocabulary, the token table started from MiniLM's token vectors
(:mod:`fewshot.train.static_vectors`, SIF weights counted on the training texts).

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
from fewshot.encoders.wordpiece import WordPieceTokenizer
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


def teacher_targets(teacher: str, texts: list[str], cache_dir: str | Path, progress: bool) -> torch.Tensor:
    """The teacher's embeddings of ``texts``, computed once: cached in ``cache_dir`` under a hash of the
    teacher's fingerprint and the texts (``teacher-<hash>.npy``), so runs and resumes share them."""
    import hashlib

    import numpy as np

    from fewshot import encoders

    enc = encoders.resolve(teacher)
    h = hashlib.sha256(enc.fingerprint.encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    cache = Path(cache_dir) / f"teacher-{h.hexdigest()[:16]}.npy"
    if cache.exists():
        return torch.from_numpy(np.load(cache))
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    emb = enc.embed(texts, progress=progress)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(cache)
    return torch.from_numpy(emb)


def read_sentences(path: str | Path) -> list[str]:
    """Unlabelled sentences, one a line (blank lines skipped)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def static_start(teacher: str, texts: list[str], dim: int, cache_dir: str | Path, progress: bool,
                 sif_a: float | None = None, drop: int | None = None,
                 blend_k: float | None = None) -> tuple[WordPieceTokenizer, torch.Tensor]:
    """The teacher's WordPiece tokeniser and the starting token table
    (:mod:`fewshot.train.static_vectors`): the teacher's vector of each token alone, blended
    (``blend_k``) with its mean vector in context over ``texts``; PCA to ``dim`` after dropping the
    ``drop`` top components; SIF-weighted (``sif_a``) by the token frequencies of ``texts``.
    Both teacher passes are cached in ``cache_dir`` (``tokens-<fingerprint>.npy``, and
    ``context-<hash of fingerprint and texts>.npz``)."""
    import hashlib

    import numpy as np
    from tqdm import tqdm

    from fewshot import encoders
    from fewshot.train import static_vectors as sv

    enc = encoders.resolve(teacher)
    tok = WordPieceTokenizer.from_vocab_file(Path(enc.model_dir) / "vocab.txt")
    ids = {t: i for i, t in enumerate(tok.vocab)}
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)

    def cached(path: Path, compute):
        if path.exists():
            with np.load(path) as z:
                return [z[k] for k in sorted(z.files)]
        arrays = compute()
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **{f"a{i}": a for i, a in enumerate(arrays)})
        tmp.replace(path)
        return list(arrays)

    def alone():
        with tqdm(total=len(tok.vocab), desc="token vectors", disable=not progress) as bar:
            return [sv.teacher_token_vectors(enc, len(tok.vocab), ids["[CLS]"], ids["[SEP]"], progress=bar.update)]

    def in_context():
        with tqdm(total=len(texts), desc="tokens in context", disable=not progress) as bar:
            return sv.teacher_context_vectors(enc, texts, len(tok.vocab), progress=bar.update)

    (vectors,) = cached(cache_dir / f"tokens-{enc.fingerprint}.npz", alone)
    k = sv.BLEND_K if blend_k is None else blend_k
    if k > 0:
        h = hashlib.sha256(enc.fingerprint.encode())
        for t in texts:
            h.update(t.encode() + b"\0")
        context, counts = cached(cache_dir / f"context-{h.hexdigest()[:16]}.npz", in_context)
        vectors = sv.blend(vectors, context, counts, k)
    freq = sv.token_frequencies(tok, texts, len(tok.vocab))
    kw = {k: v for k, v in (("a", sif_a), ("drop", drop)) if v is not None}
    return tok, torch.from_numpy(sv.static_table(vectors, freq, dim, **kw))


def train_text_gru(data: str, out: str, hold_out: list[str], supcon: float = 0.0, threads: int = 0,
                   progress: bool = True, distill: float = 0.0, teacher: str = "minilm",
                   unlabelled: str | None = None, teacher_cache: str | None = None,
                   arch: dict | None = None, arch_name: str = "text-rnn", freeze_table: bool = False,
                   proto: float = 1.0, distill_head: bool = True, **overrides) -> tuple[TorchTextEncoder, dict]:
    """Train a fresh text GRU; returns it (best validation weights) and the run summary.

    ``distill`` > 0 adds a distillation term: a linear head maps the GRU's embedding
    to the ``teacher``'s (minilm) embedding of the same sentence: every training
    query, and with ``unlabelled`` (a text file, one sentence a line, e.g.
    ``wiki_sentences.txt``) ``cfg.extra["unlabelled_per_step"]`` of its sentences
    per step. Teacher embeddings are cached in ``teacher_cache`` (default ``out``).

    ``arch_name="static-text-rnn"`` (v2) starts the token table from the teacher's token
    vectors (:func:`static_start`; ``arch["dim"]`` wide, SIF counts from the training
    queries and the ``unlabelled`` sentences); ``freeze_table`` keeps that table as it starts
    (only the GRU branch trains). ``proto`` weighs the prototypical loss (0: distillation alone);
    ``distill_head=False`` distils into the embedding itself (its size must be the teacher's)."""
    extra = {**TEXT_DEFAULTS["extra"], **overrides.pop("extra", {})}
    cfg = TrainConfig(**{**TEXT_DEFAULTS, "threads": threads, **overrides, "extra": extra})
    if threads:
        torch.set_num_threads(threads)
    train, val = clinc_split(data, "train", hold_out), clinc_split(data, "val", hold_out)
    arch = dict(arch or {})
    more_texts = read_sentences(unlabelled) if unlabelled else []
    with seeded_init(cfg.seed):
        if arch_name == "static-text-rnn":
            tok, table = static_start(teacher, list(train.items) + more_texts, int(arch.pop("dim", 240)),
                                      teacher_cache or out, progress, arch.pop("sif_a", None), arch.pop("drop", None),
                                      arch.pop("blend_k", None))
            enc = new_text_encoder("text-gru", tok, table, **arch)
        elif arch_name == "text-rnn":
            enc = new_text_encoder("text-gru", **arch)
        else:
            raise ValueError(f"unknown text architecture {arch_name!r}; known: text-rnn, static-text-rnn")
    terms = [LossTerm("proto", PrototypicalLoss(), proto)]
    if supcon:
        terms.append(LossTerm("supcon", SupConLoss(0.1), supcon))
    targets, more = None, None
    if distill:
        cache = teacher_cache or out
        targets = teacher_targets(teacher, list(train.items), cache, progress)
        if unlabelled:
            more = (more_texts, teacher_targets(teacher, more_texts, cache, progress))
            cfg.extra.setdefault("unlabelled_per_step", 100)
        terms.append(LossTerm("distill", DistillationLoss(enc.dim, targets.shape[1], distill_head), distill))
    batcher = make_batcher(train, cfg, tokenize=enc.tokenize, targets=targets, unlabelled=more)
    params = [p for n, p in enc.module.named_parameters() if not (freeze_table and n == "emb.weight")]
    summary = fit(enc.module, terms, batcher, train, out, cfg, val=val, params=params, progress=progress,
                  desc="text-gru")
    best = Path(out) / "best.pt"
    if best.exists():
        enc.module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    enc.module.eval()
    enc.invalidate()
    enc.weights_source = f"trained: {data} without {','.join(hold_out) or 'nothing'}"
    return enc, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hold-out", default="home,auto_and_commute", help="domains never trained on ('' = none)")
    ap.add_argument("--steps", type=int, default=TEXT_DEFAULTS["steps"])
    for knob in ("ways", "shots", "queries"):
        ap.add_argument(f"--{knob}", type=int, default=TEXT_DEFAULTS[knob], help="of a training episode")
    ap.add_argument("--proto", type=float, default=1.0, help="weight of the prototypical loss")
    ap.add_argument("--supcon", type=float, default=0.0, help="weight of a SupCon term beside the prototypical loss")
    ap.add_argument("--distill", type=float, default=0.0, help="weight of distillation from minilm")
    ap.add_argument("--distill-direct", action="store_true", help="no head: the embedding itself is distilled "
                    "(its size must be the teacher's: --dim 384 for minilm)")
    ap.add_argument("--unlabelled", default=None, help="more sentences to distil on (one a line, e.g. "
                    "../shared/data/clinc150/wiki_sentences.txt)")
    ap.add_argument("--unlabelled-per-step", type=int, default=100)
    ap.add_argument("--teacher-cache", default=None, help="folder of cached teacher embeddings (default OUT)")
    ap.add_argument("--lr", type=float, default=TEXT_DEFAULTS["lr"])
    ap.add_argument("--arch", default="text-rnn", choices=["text-rnn", "static-text-rnn"],
                    help="text-rnn: hashed n-grams (v1); static-text-rnn: MiniLM's vocabulary and token vectors (v2)")
    ap.add_argument("--word-dim", type=int, default=96, help="text-rnn: word vector size")
    ap.add_argument("--dim", type=int, default=240, help="static-text-rnn: token vector and embedding size")
    ap.add_argument("--sif-a", type=float, default=None, help="static-text-rnn: SIF weight a (default 3e-3)")
    ap.add_argument("--blend-k", type=float, default=None, help="static-text-rnn: pseudo-count of a token's "
                    "vector alone against its vectors in context (default 5; 0: alone only)")
    ap.add_argument("--drop", type=int, default=None, help="static-text-rnn: top principal components dropped "
                    "(default 16)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--freeze-table", action="store_true", help="static-text-rnn: train the GRU branch only")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--save", default=None, help="write the encoder file here (default OUT/text_gru.pt)")
    a = ap.parse_args(argv)
    hold = [d for d in a.hold_out.split(",") if d]
    enc, summary = train_text_gru(a.data, a.out, hold, a.supcon, a.threads, distill=a.distill,
                                  unlabelled=a.unlabelled, teacher_cache=a.teacher_cache,
                                  arch={"word_dim": a.word_dim, "hidden": a.hidden} if a.arch == "text-rnn"
                                  else {"dim": a.dim, "hidden": a.hidden, "sif_a": a.sif_a, "drop": a.drop,
                                        "blend_k": a.blend_k}, arch_name=a.arch, steps=a.steps, lr=a.lr,
                                  freeze_table=a.freeze_table, proto=a.proto,
                                  distill_head=not a.distill_direct,
                                  ways=a.ways, shots=a.shots, queries=a.queries,
                                  extra={"unlabelled_per_step": a.unlabelled_per_step})
    path = enc.save(a.save or Path(a.out) / "text_gru.pt")
    print(json.dumps({"saved": str(path), "fingerprint": enc.fingerprint, **summary}, default=str))


if __name__ == "__main__":
    main()
