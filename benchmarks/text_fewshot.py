"""Few-shot intent classification: fewshot's text paths against SetFit and TF-IDF, same supports.

    python benchmarks/text_fewshot.py --seeds 0,1,2,3,4 --shots 5 \\
        --methods minilm,text-gru,tfidf,minilm-ft,setfit --setfit-python /work/venv-setfit/bin/python

Protocol (CLINC150, ``../shared/data/clinc150``): the held-out domains (default
``home`` and ``auto_and_commute``, never trained or tuned on) give all their
intents at once (30-way). For each seed, ``--shots`` training queries per intent
are drawn once; every method gets exactly these supports. Queries are every
test query of those intents; out-of-scope texts are the ``oos_val`` queries.
Per method and seed: accuracy, OOS AUROC (in-scope vs out-of-scope by the best
class's score), training time (CPU seconds of the training process, which a shared
machine's load does not inflate, and wall seconds; for frozen encoders, embedding the supports)
and sentences/s of classifying the queries (batch 64).

* ``minilm``: frozen all-MiniLM-L6-v2, nearest class prototype (cosine), as ``fewshot classify``.
* ``text-gru``: the shipped GRU, nearest prototype.
* ``tfidf``: scikit-learn TF-IDF of character 2-4-grams (fit on the supports), nearest prototype.
* ``minilm-ft``: fewshot's fine-tuned path: :func:`fewshot.finetune.finetune` of minilm on the
  supports (SupCon, the shared loop), then nearest prototype.
* ``setfit``: SetFit (same MiniLM files, its recipe: contrastive pairs then a logistic head), run by
  ``benchmarks/text_setfit_worker.py`` in its own venv (``--setfit-python``); SetFit is never a
  dependency of fewshot.

Everything runs on CPU with ``--threads`` torch threads (1 by default). Results of each
(method, seed) are kept in ``--cache`` so methods can be run separately and the
table rebuilt; ``--report`` writes the markdown table. Report the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "clinc150" / "clinc150_dev.json"
METHODS = ("minilm", "text-gru", "tfidf", "minilm-ft", "setfit")
#: fewshot's fine-tuning recipe for the benchmark (the options of ``fewshot finetune``).
FT_RECIPE = {"loss": "supcon", "ways": 30, "shots": 2, "queries": 3, "steps": 40, "lr": 5e-5,
             "train_last": 3, "val_fraction": 0.0, "augment": True}
#: SetFit's recipe: its defaults, but 20 pair iterations per example (the SetFit paper's and README's
#: setting) instead of drawing every pair, which takes hours on one CPU core at 30 x 5 examples.
SETFIT_ARGS = {"num_iterations": 20, "num_epochs": 1, "batch_size": 16}


def load_protocol(data: Path, domains: list[str]) -> tuple[dict[str, list[str]], list[str], list[str], list[str]]:
    """(train texts per held-out intent, query texts, query labels, out-of-scope texts)."""
    raw = json.loads(data.read_text())
    dom = json.loads((data.parent / "domains.json").read_text())
    intents = sorted(i for d in domains for i in dom[d])
    train = {i: [t for t, lab in raw["train"] if lab == i] for i in intents}
    q = [(t, lab) for t, lab in raw["test"] if lab in train]
    return train, [t for t, _ in q], [lab for _, lab in q], [t for t, _ in raw["oos_val"]]


def sample_supports(train: dict[str, list[str]], shots: int, seed: int) -> tuple[list[str], list[str]]:
    """``shots`` training queries per intent, drawn with ``seed`` (the same for every method)."""
    rng = np.random.default_rng([seed, 2024])
    texts, labels = [], []
    for intent in sorted(train):
        for j in rng.choice(len(train[intent]), shots, replace=False):
            texts.append(train[intent][int(j)])
            labels.append(intent)
    return texts, labels


def score(pred: list[str], truth: list[str], s_in: np.ndarray, s_out: np.ndarray) -> dict:
    """Accuracy and macro F1 on in-scope queries; AUROC of in-scope vs out-of-scope by best score."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return {"accuracy": float(accuracy_score(truth, pred)), "macro_f1": float(f1_score(truth, pred, average="macro")),
            "oos_auroc": float(roc_auc_score(y, np.r_[s_in, s_out]))}


def prototype_result(sup: np.ndarray, sup_labels: list[str], q: np.ndarray, oos: np.ndarray,
                     truth: list[str]) -> dict:
    """Nearest class prototype, cosine: the maths ``fewshot classify`` uses."""
    from fewshot.prototypes import class_prototypes, prototype_scores

    classes, protos = class_prototypes(sup, sup_labels, "cosine")
    s_q, s_o = prototype_scores(q, protos, "cosine"), prototype_scores(oos, protos, "cosine")
    pred = [str(classes[i]) for i in s_q.argmax(1)]
    return score(pred, truth, s_q.max(1), s_o.max(1))


def timed_embed(enc, texts: list[str]) -> tuple[np.ndarray, float]:
    """Embeddings (batch 64) and sentences/s, after one warm-up batch."""
    enc.embed(texts[:64], batch_size=64)
    t0 = time.perf_counter()
    emb = enc.embed(texts, batch_size=64)
    return emb, len(texts) / (time.perf_counter() - t0)


def run_encoder(name: str, sup: tuple, queries: list[str], truth: list[str], oos: list[str], memo: dict,
                spec: str | None = None) -> dict:
    """A frozen encoder (``spec``: a file instead of the name): embed queries once (memo), supports per
    seed, nearest prototype."""
    from fewshot import encoders

    if name not in memo:
        enc = encoders.resolve(spec or name)
        emb, rate = timed_embed(enc, queries + oos)
        memo[name] = (enc, emb, rate)
    enc, emb, rate = memo[name]
    t0, c0 = time.perf_counter(), time.process_time()
    s = enc.embed(sup[0], batch_size=64)
    res = prototype_result(s, sup[1], emb[:len(queries)], emb[len(queries):], truth)
    return {**res, "train_seconds": round(time.perf_counter() - t0, 2),
            "train_cpu_seconds": round(time.process_time() - c0, 2), "sentences_per_s": round(rate, 1)}


def run_tfidf(sup: tuple, queries: list[str], truth: list[str], oos: list[str]) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0, c0 = time.perf_counter(), time.process_time()
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit(sup[0])
    s = vec.transform(sup[0]).toarray()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    emb = vec.transform(queries + oos).toarray()
    rate = len(emb) / (time.perf_counter() - t1)
    res = prototype_result(s, sup[1], emb[:len(queries)], emb[len(queries):], truth)
    return {**res, "train_seconds": round(train_s, 3), "train_cpu_seconds": round(train_cpu, 3),
            "sentences_per_s": round(rate, 1)}


def run_finetuned(sup: tuple, queries: list[str], truth: list[str], oos: list[str], seed: int,
                  threads: int, recipe: dict) -> dict:
    """fewshot's path: fine-tune minilm on the supports (the shared loop), then nearest prototype."""
    from fewshot import encoders
    from fewshot.data.dataset import LabelledSet
    from fewshot.finetune import finetune

    base = encoders.resolve("minilm")
    ds = LabelledSet(list(sup[0]), list(sup[1]), kind="text")
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        result = finetune(base, ds, seed=seed, threads=threads, progress=False, run_dir=Path(tmp) / "run",
                          **recipe)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    enc = result.encoder
    emb, rate = timed_embed(enc, queries + oos)
    s = enc.embed(sup[0], batch_size=64)
    res = prototype_result(s, sup[1], emb[:len(queries)], emb[len(queries):], truth)
    return {**res, "train_seconds": round(train_s, 2), "train_cpu_seconds": round(train_cpu, 2),
            "sentences_per_s": round(rate, 1), "recipe": recipe, "steps_run": result.summary.get("step")}


def run_setfit(python: str, sup: tuple, queries: list[str], truth: list[str], oos: list[str], seed: int,
               threads: int, args: dict) -> dict:
    """SetFit in its own venv (``text_setfit_worker.py``), on the local MiniLM files."""
    from fewshot.encoders.text import packaged_minilm_dir

    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"model_dir": str(packaged_minilm_dir()), "support_texts": sup[0],
                                   "support_labels": sup[1], "query_texts": queries, "oos_texts": oos,
                                   "threads": threads, "seed": seed, "args": args,
                                   "output_dir": str(Path(tmp) / "checkpoints")}))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": ""}
        subprocess.run([python, str(ROOT / "benchmarks" / "text_setfit_worker.py"), str(job), str(out)],
                       check=True, env=env)
        r = json.loads(out.read_text())
    res = score(r["pred"], truth, np.asarray(r["query_score"]), np.asarray(r["oos_score"]))
    return {**res, "train_seconds": r["train_seconds"], "train_cpu_seconds": r["train_cpu_seconds"],
            "sentences_per_s": r["sentences_per_s"], "args": r["args"]}


def summarise(rows: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each number."""
    out = {"seeds": [r["seed"] for r in rows]}
    for k in ("accuracy", "macro_f1", "oos_auroc", "train_seconds", "train_cpu_seconds", "sentences_per_s"):
        v = np.array([r[k] for r in rows], dtype=float)
        out[k] = float(v.mean())
        out[k + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out["load_average"] = [r["load_average"] for r in rows]
    return out


LABELS = {"minilm": "frozen minilm + nearest prototype", "text-gru": "text-gru (shipped) + nearest prototype",
          "tfidf": "TF-IDF char 2-4-grams + nearest prototype", "minilm-ft": "fewshot finetune minilm (SupCon)",
          "setfit": "SetFit (MiniLM body, logistic head)"}


def table(results: dict, shots: int) -> str:
    lines = [f"| method ({shots}-shot, 30-way) | seeds | accuracy % | OOS AUROC | training CPU s | training wall s "
             "| sentences/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in METHODS:
        rows = [r for k, r in sorted(results.items()) if r["method"] == m and r["shots"] == shots]
        if not rows:
            continue
        s = summarise(rows)
        lines.append(f"| {LABELS[m]} | {len(rows)} | {100 * s['accuracy']:.2f} ± {100 * s['accuracy_sd']:.2f} | "
                     f"{s['oos_auroc']:.3f} ± {s['oos_auroc_sd']:.3f} | {s['train_cpu_seconds']:.1f} ± "
                     f"{s['train_cpu_seconds_sd']:.1f} | {s['train_seconds']:.0f} | {s['sentences_per_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--domains", default="home,auto_and_commute", help="held-out domains (all their intents)")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--setfit-python", default="/work/venv-setfit/bin/python")
    ap.add_argument("--text-gru", default=None, help="a text-gru encoder file to measure instead of the shipped one")
    ap.add_argument("--ft-recipe", default=None, help="JSON overriding FT_RECIPE (fewshot's fine-tuning options)")
    ap.add_argument("--cache", type=Path, default=Path("/work/cache/text_fewshot"))
    ap.add_argument("--tag", default="", help="suffix of the cache keys (a recipe variant)")
    ap.add_argument("--report", type=Path, default=None, help="write the markdown table here")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    train, queries, truth, oos = load_protocol(a.data, a.domains.split(","))
    a.cache.mkdir(parents=True, exist_ok=True)
    recipe = {**FT_RECIPE, **json.loads(a.ft_recipe or "{}")}
    memo: dict = {}
    for seed in [int(s) for s in a.seeds.split(",")]:
        sup = sample_supports(train, a.shots, seed)
        for m in a.methods.split(","):
            key = f"{m}{a.tag}-{a.shots}shot-seed{seed}"
            f = a.cache / f"{key}.json"
            if f.exists():
                continue
            if m in ("minilm", "text-gru"):
                r = run_encoder(m, sup, queries, truth, oos, memo, a.text_gru if m == "text-gru" else None)
            elif m == "tfidf":
                r = run_tfidf(sup, queries, truth, oos)
            elif m == "minilm-ft":
                r = run_finetuned(sup, queries, truth, oos, seed, a.threads, recipe)
            elif m == "setfit":
                r = run_setfit(a.setfit_python, sup, queries, truth, oos, seed, a.threads, SETFIT_ARGS)
            else:
                raise SystemExit(f"unknown method {m}; known: {', '.join(METHODS)}")
            r.update(method=m, tag=a.tag, shots=a.shots, seed=seed, threads=a.threads,
                     load_average=[round(x, 2) for x in os.getloadavg()])
            f.write_text(json.dumps(r))
            print(json.dumps({"key": key, **{k: r[k] for k in ("accuracy", "oos_auroc", "train_seconds",
                                                                 "sentences_per_s", "load_average")}}), flush=True)
    results = {p.stem: json.loads(p.read_text()) for p in a.cache.glob("*.json")}
    results = {k: r for k, r in results.items() if r.get("tag", "") == a.tag}
    text = table(results, a.shots)
    print(text)
    if a.report:
        a.report.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
