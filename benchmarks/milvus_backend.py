"""The Milvus backend beside FAISS: insert and search latency, and identical answers.

    python benchmarks/milvus_backend.py [--n 10000 --dim 128] [--uri http://127.0.0.1:19530]
                                        [--smoke] [--json out.json]

Backends: FAISS (flat), Milvus Lite (a local ``.db`` file, in-process), and a
Milvus server when ``--uri`` (or ``FEWSHOT_MILVUS_URI``) names one. Same data,
same queries, through the same ``VectorStore`` API:

* bulk insert rows/s (batches of 1,000), add-one median ms;
* k-NN search (k=10): single-query median ms, batch-of-100 q/s;
* classify (``search_prototypes``, k=5): single-query median ms;
* first search right after an add (the read-your-writes cost on a server);
* same top-10 labels as FAISS flat, and the largest score difference.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from scale_common import embeddings, machine, per_call, table, write_json

from index import create_store


def bench(name: str, kwargs: dict, data: np.ndarray, labels: list[str], queries: np.ndarray, workdir: Path,
          reference: list | None, adds: int) -> tuple[dict, list]:
    path = workdir / name.replace(" ", "-")
    store = create_store(path, data.shape[1], "cosine", **kwargs)
    row: dict = {"backend": name}
    try:
        t = time.perf_counter()
        for start in range(0, len(data), 1000):
            store.add(data[start : start + 1000], labels[start : start + 1000])
        row["bulk insert rows/s"] = len(data) / (time.perf_counter() - t)
        one = []
        for i in range(adds):
            t = time.perf_counter()
            store.add(data[i], [labels[i]])
            one.append(time.perf_counter() - t)
        row["add one ms"] = statistics.median(one) * 1e3
        row["search single ms"] = per_call(lambda: store.search(queries[0], 10), repeats=50, budget_s=20) * 1e3
        t = time.perf_counter()
        store.search(queries[:100], 10)
        row["search batch q/s"] = 100 / (time.perf_counter() - t)
        row["classify single ms"] = per_call(lambda: store.search_prototypes(queries[1], 5), repeats=50,
                                             budget_s=20) * 1e3
        after = []
        for i in range(5):
            store.add(queries[10 + i], [f"fresh{i}"])
            t = time.perf_counter()
            hits = store.search_prototypes(queries[10 + i], 1)
            after.append(time.perf_counter() - t)
            assert hits[0][0].label == f"fresh{i}", "a just-added class must be visible at once"
        row["classify right after add ms"] = statistics.median(after) * 1e3
        results = store.search(queries[20:70], 10)
        store.remove_label("fresh0")
        if reference is not None:
            row["same labels as FAISS"] = all([h.label for h in a] == [h.label for h in b]
                                              for a, b in zip(results, reference))
            row["max score diff"] = max(abs(x.score - y.score) for a, b in zip(results, reference)
                                        for x, y in zip(a, b))
        if hasattr(store, "drop"):
            store.drop()
    finally:
        store.close()
    return row, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--uri", default=os.environ.get("FEWSHOT_MILVUS_URI"), help="a Milvus server (optional)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    n, adds = (500, 3) if a.smoke else (a.n, 20)
    start = machine()
    data = embeddings(n, a.dim, seed=31)
    labels = [f"class{i % 100:03d}" for i in range(n)]
    queries = embeddings(200, a.dim, seed=32)
    workdir = Path(tempfile.mkdtemp(prefix="fewshot-milvus-"))
    backends = [("FAISS flat", {"backend": "faiss", "index_type": "flat"}),
                ("Milvus Lite", {"backend": "milvus", "uri": str(workdir / "lite.db"), "index_type": "flat"})]
    if a.uri:
        backends.append(("Milvus server", {"backend": "milvus", "uri": a.uri, "index_type": "flat"}))
    rows, reference = [], None
    for name, kw in backends:
        row, results = bench(name, kw, data, labels, queries, workdir, reference, adds)
        if reference is None:
            reference = results
        rows.append(row)
        print(f"  {name}: done", flush=True)
    cols = ["backend", "bulk insert rows/s", "add one ms", "search single ms", "search batch q/s",
            "classify single ms", "classify right after add ms", "same labels as FAISS", "max score diff"]
    print(table(rows, cols, f"VectorStore backends, {n} x {a.dim} float32, FLAT indexes, k=10"))
    out = write_json(a.json, "milvus_backend", {"machine_start": start, "machine_end": machine(), "n": n,
                                                 "dim": a.dim, "server_uri": a.uri, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
