"""OpenMP threads vs query batch size for FAISS flat search: the basis of the per-call thread rule.

    python benchmarks/threads.py [--n 100000 --dim 64] [--smoke] [--json out.json]

For each batch size, the median time per batch with 1 thread and with all
threads. The rule in index/faiss_util.py (1 thread below SMALL_BATCH queries,
all threads above) should pick the faster column in every row.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import faiss

from scale_common import embeddings, machine, per_call, table, write_json

from index import faiss_util


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    n = 2000 if a.smoke else a.n
    batches = [1, 8, 64, 1000] if not a.smoke else [1, 64]
    start = machine()
    xb = embeddings(n, a.dim, seed=1)
    xq = embeddings(max(batches), a.dim, seed=2)
    index = faiss.IndexFlatIP(a.dim)
    index.add(xb)
    all_threads = faiss_util._MAX_THREADS
    rows = []
    for b in batches:
        q = xq[:b]
        row = {"batch": b}
        for t in sorted({1, all_threads}):
            faiss.omp_set_num_threads(t)
            row[f"{t} thread(s) ms"] = per_call(lambda: index.search(q, 10), repeats=50 if b < 100 else 5,
                                                budget_s=10) * 1e3
        faiss.omp_set_num_threads(all_threads)
        one, many = row["1 thread(s) ms"], row[f"{all_threads} thread(s) ms"]
        row["slowdown with all threads"] = many / one
        row["rule picks"] = faiss_util.threads_for(b)
        row["rule picks faster"] = (faiss_util.threads_for(b) == 1) == (one <= many) or abs(one - many) < 0.1 * one
        rows.append(row)
    cols = ["batch", "1 thread(s) ms", f"{all_threads} thread(s) ms", "slowdown with all threads", "rule picks",
            "rule picks faster"]
    print(table(rows, cols, f"FAISS flat search, {n} x {a.dim}, k=10: time per batch"))
    out = write_json(a.json, "threads", {"machine_start": start, "machine_end": machine(), "n": n, "dim": a.dim,
                                          "small_batch": faiss_util.SMALL_BATCH, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
