"""Classify latency and throughput over class prototypes, excluding the encoder.

    python benchmarks/classify_scale.py [--classes 100 10000 100000] [--dim 64] [--smoke] [--json out.json]

Same machine, same process, same prototype vectors for every contender:

* fewshot top-5: ``FaissStore.top_classes(q, k=5)``: validation, normalisation,
  the check for other processes' writes, the 5 best classes with labels;
* fewshot classify: ``FaissStore.top_classes(q, k=5, temperature=0.1)``: the same
  plus a softmax over *all* classes (what ``FewShotIndex.classify`` returns as
  its probability: every class score must be computed and exponentiated);
* raw FAISS: ``IndexFlatIP.search(q, 5)`` on the same matrix, threads by the
  same rule (1 for a single query, all for a batch);
* raw FAISS + labels: the same plus what a user of raw FAISS must do to
  classify (normalise the query for cosine, turn row ids into labels);
* torch cdist: ``torch.cdist`` + ``topk`` (how research few-shot libraries
  classify: distances to every prototype, then the best);
* scikit-learn ``NearestCentroid`` fitted on the prototypes (``predict``).

Single query: median latency over many calls. Batch: 1,000 queries per call,
best of up to 10 (0.2 s pause before each call, see ``interleaved``). All contenders are timed round-robin, so background load hits them
alike; single queries run on one thread for everyone (the thread rule).
Target: fewshot / raw FAISS <= 1.2 (single), <= 1.05 (batch of 1,000).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from scale_common import embeddings, machine, table, write_json

from index import FaissStore, faiss_util


def interleaved(fns: dict, rounds: int, budget_s: float, reduce, settle_s: float = 0.0) -> dict:
    """Seconds per call of each function, timed round-robin (order rotated every round).

    ``settle_s``: pause before each timed call. FAISS, numpy (OpenBLAS) and torch
    each bring their own thread pool, and a pool's threads keep spinning for a
    while after a parallel call; timed right after another library's batch, a
    multi-threaded call fights those spinning threads for the 2 cores (cdist
    batches measured 50x slower that way).
    """
    names = list(fns)
    for name in names:
        fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    stop = time.perf_counter() + budget_s
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if settle_s:
                time.sleep(settle_s)
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
        if time.perf_counter() > stop and r >= 2:
            break
    return {name: reduce(ts) for name, ts in times.items()}


def run(n_classes: int, dim: int, batch: int) -> dict:
    import torch
    from sklearn.neighbors import NearestCentroid

    protos = embeddings(n_classes, dim, seed=3, clusters=max(10, n_classes // 20))
    labels = [f"class{i:06d}" for i in range(n_classes)]
    q1 = embeddings(1, dim, seed=4)
    qb = embeddings(batch, dim, seed=5)
    row: dict = {"classes": n_classes}
    with tempfile.TemporaryDirectory() as tmp:
        store = FaissStore.create(Path(tmp) / "ix", dim)
        for start in range(0, n_classes, 50_000):
            store.add(protos[start : start + 50_000], labels[start : start + 50_000])
        store.close()
        store = FaissStore.open(Path(tmp) / "ix", readonly=True)
        # the store's prototypes are the stored unit vectors: use exactly those for everyone
        names, mat = store.prototypes()
        raw = faiss.IndexFlatIP(dim)
        raw.add(mat)

        def raw_search(q):
            with faiss_util.threads(len(q)):
                return raw.search(q, 5)

        label_list = list(names)

        def raw_same_job(q):
            # what a user of raw FAISS must add to classify: normalise the query, map ids to labels
            q = np.array(q, dtype=np.float32, copy=True, ndmin=2)
            faiss.normalize_L2(q)
            with faiss_util.threads(len(q)):
                d, ids = raw.search(q, 5)
            return d, [[label_list[i] for i in row] for row in ids.tolist()]

        tp = torch.from_numpy(mat)

        def cdist(q):
            with torch.no_grad():
                return torch.cdist(q, tp).topk(5, largest=False)

        with warnings.catch_warnings():  # one sample per class: sklearn warns about its variance
            warnings.simplefilter("ignore")
            nc = NearestCentroid().fit(mat, np.arange(len(names)))
        contenders = {
            "fewshot": lambda q: store.top_classes(q, 5),
            "fewshot classify": lambda q: store.top_classes(q, 5, temperature=0.1),
            "raw FAISS": raw_search,
            "raw FAISS + labels": raw_same_job,
            "torch cdist": lambda q: cdist(torch.from_numpy(q)),
            "NearestCentroid": lambda q: nc.predict(q),
        }
        # Interleaved (round-robin) timing: background load drifts over minutes, and each
        # ratio should compare calls made at the same moment, not minutes apart.
        threads_before = torch.get_num_threads()
        torch.set_num_threads(1)
        with threadpool_limits(1):  # one thread per single query, for everyone (the rule)
            single = interleaved({k: (lambda fn=fn: fn(q1)) for k, fn in contenders.items()},
                                 rounds=200, budget_s=40, reduce=statistics.median)
        torch.set_num_threads(threads_before)
        batch_t = interleaved({k: (lambda fn=fn: fn(qb)) for k, fn in contenders.items()},
                              rounds=10, budget_s=150, reduce=min, settle_s=0.2)
        for name in contenders:
            row[f"{name} single ms"] = single[name] * 1e3
            row[f"{name} batch q/s"] = batch / batch_t[name]
        # same answers?
        fs = [row[0] for row in store.top_classes(qb[:50], 1).labels]
        rs = [names[i] for i in raw.search(qb[:50], 1)[1][:, 0]]
        row["same top-1 as raw FAISS"] = fs == rs
        store.close()
    row["single overhead (fewshot/raw)"] = row["fewshot single ms"] / row["raw FAISS single ms"]
    row["batch overhead (fewshot/raw)"] = row["raw FAISS batch q/s"] / row["fewshot batch q/s"]
    row["single overhead vs raw+labels"] = row["fewshot single ms"] / row["raw FAISS + labels single ms"]
    row["batch overhead vs raw+labels"] = row["raw FAISS + labels batch q/s"] / row["fewshot batch q/s"]
    row["classify single (fewshot classify/raw)"] = row["fewshot classify single ms"] / row["raw FAISS single ms"]
    row["classify batch (fewshot classify/raw)"] = row["raw FAISS batch q/s"] / row["fewshot classify batch q/s"]
    row["cdist / fewshot single"] = row["torch cdist single ms"] / row["fewshot single ms"]
    row["NearestCentroid / fewshot single"] = row["NearestCentroid single ms"] / row["fewshot single ms"]
    row["cdist / fewshot batch"] = row["fewshot batch q/s"] / row["torch cdist batch q/s"]
    row["NearestCentroid / fewshot batch"] = row["fewshot batch q/s"] / row["NearestCentroid batch q/s"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[100, 10_000, 100_000])
    p.add_argument("--dim", type=int, default=64, help="64 = the shipped Omniglot encoder")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    sizes, batch = ([100, 1000], 100) if a.smoke else (a.classes, a.batch)
    start = machine()
    rows = [run(n, a.dim, batch) for n in sizes]
    names = ["fewshot", "fewshot classify", "raw FAISS", "raw FAISS + labels", "torch cdist", "NearestCentroid"]
    print(table(rows, ["classes"] + [f"{n} single ms" for n in names],
                f"classify, single query (median latency, dim {a.dim}, top-5)"))
    print()
    print(table(rows, ["classes"] + [f"{n} batch q/s" for n in names],
                f"classify, batches of {batch} (queries per second)"))
    print()
    print(table(rows, ["classes", "single overhead (fewshot/raw)", "batch overhead (fewshot/raw)",
                       "single overhead vs raw+labels", "batch overhead vs raw+labels",
                       "classify single (fewshot classify/raw)", "classify batch (fewshot classify/raw)",
                       "cdist / fewshot single", "cdist / fewshot batch", "NearestCentroid / fewshot single",
                       "NearestCentroid / fewshot batch", "same top-1 as raw FAISS"], "ratios"))
    out = write_json(a.json, "classify_scale", {"machine_start": start, "machine_end": machine(), "dim": a.dim,
                                                 "batch": batch, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
