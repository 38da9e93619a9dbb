"""k-NN lookup over stored examples: every index type at 10k, 100k and 1M vectors.

    python benchmarks/knn_lookup.py [--sizes 10000 100000 1000000] [--dims 128 512]
                                    [--types flat hnsw ivf ivfpq] [--workdir DIR] [--smoke] [--json out.json]

Per (dim, size, index type), through the fewshot store (``FaissStore.search``:
ids, labels and metadata included), float32 embedding-like vectors (see
``scale_common.embeddings``):

* build: seconds to build that index from the stored records (flat: none);
* bytes/vector: size of the index file / n (what the index holds in memory;
  raw float32 is 4 x dim), and that as a multiple of raw;
* open: seconds for a read-only open plus the first query (HNSW/IVF files
  over 16 MB memory-mapped, flat read into memory);
* single ms: median latency of one query, k=10 (1 thread);
* q/s: throughput on batches of 1,000 queries (all threads);
* recall@10 against exact search (200 queries).

Also times inserting the records (SQLite) once per size. The 1M x 512 case
needs ~7 GB of memory and tens of minutes; ``--types`` narrows it.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from scale_common import best_time, embeddings, machine, per_call, queries_like, table, write_json

from index import FaissStore, faiss_util
from index.layout import vectors_file_name


def exact_truth(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    with faiss_util.threads(len(queries) + faiss_util.SMALL_BATCH):
        return index.search(queries, k)[1] + 1  # store ids start at 1, in insertion order


def recall_at(store: FaissStore, queries: np.ndarray, truth: np.ndarray, k: int) -> float:
    got = store.search(queries, k)
    return float(np.mean([len({h.id for h in hits} & set(t.tolist())) / k for hits, t in zip(got, truth)]))


def bench_size(dim: int, n: int, types: list[str], workdir: Path, n_recall: int, batch: int,
               keep: Path | None = None) -> list[dict]:
    data = embeddings(n, dim, seed=11)
    q_recall = queries_like(n_recall, dim, seed=12, base_seed=11, base_n=n)
    q_batch = queries_like(batch, dim, seed=13, base_seed=11, base_n=n)
    truth = exact_truth(data, q_recall, 10)
    path = workdir / f"knn-{dim}-{n}"
    shutil.rmtree(path, ignore_errors=True)
    store = FaissStore.create(path, dim, index_type="flat", autosave=False)
    t = time.perf_counter()
    labels = [f"l{i % 1000}" for i in range(50_000)]
    for start in range(0, n, 50_000):
        chunk = data[start : start + 50_000]
        store.add(chunk, labels[: len(chunk)])
    store.flush()
    insert_s = time.perf_counter() - t
    del data
    gc.collect()
    rows = []
    for kind in types:
        t = time.perf_counter()
        store.set_index_type(kind)
        build_s = time.perf_counter() - t if kind != "flat" else 0.0
        info = store.index_info()
        assert info["kind"] == kind, info
        store.flush()
        gen = store.generation
        size = os.path.getsize(path / vectors_file_name(gen))
        store.close()
        t = time.perf_counter()
        reader = FaissStore.open(path, readonly=True)  # memory-maps HNSW/IVF files over 16 MB
        reader.search(q_recall[0], 10)
        open_s = time.perf_counter() - t
        mapped = reader.index_info()["memory_mapped"]
        reader.close()
        # Latency and recall with the index in RAM: on this machine the kernel's proactive
        # reclaim (DAMON) evicts mapped pages, and re-reading them would be measured instead.
        reader = FaissStore.open(path, readonly=True, mmap=False)
        row = {"dim": dim, "n": n, "type": kind, "insert s": insert_s, "build s": build_s,
               "bytes/vector": size / n, "x raw": size / n / (4 * dim), "open s": open_s,
               "mmap": mapped}
        row["single ms"] = per_call(lambda: reader.search(q_recall[7], 10), repeats=300, budget_s=15) * 1e3
        row["q/s"] = batch / best_time(lambda: reader.search(q_batch, 10), repeats=2)
        row["recall@10"] = recall_at(reader, q_recall, truth, 10)
        if kind in ("hnsw", "ivf", "ivfpq"):
            row["params"] = {k: v for k, v in reader.index_info().items() if k in ("ef_search", "nlist", "nprobe")}
        reader.close()
        rows.append(row)
        print(f"  {dim:>4} {n:>8} {kind:<6} build {build_s:7.1f}s  single {row['single ms']:8.3f} ms  "
              f"recall {row['recall@10']:.3f}  {row['bytes/vector']:.0f} B/vec", flush=True)
        store = FaissStore.open(path, autosave=False)
    store.close()
    flat = next((r for r in rows if r["type"] == "flat"), None)
    for r in rows:
        r["speedup vs flat"] = flat["single ms"] / r["single ms"] if flat else float("nan")
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        shutil.move(str(path), str(keep))  # last type built stays: add_latency.py --reuse-examples
    else:
        shutil.rmtree(path, ignore_errors=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    p.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivf", "ivfpq"])
    p.add_argument("--workdir", type=Path, default=None, help="where the indexes are built (default: a temp dir)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the largest dim-128 index (built last as HNSW) here for add_latency.py")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    sizes, dims = ([3000], [32]) if a.smoke else (a.sizes, a.dims)
    n_recall, batch = (50, 100) if a.smoke else (200, 1000)
    start = machine()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="fewshot-knn-"))
    rows: list[dict] = []
    types = list(a.types)
    if a.keep is not None and "hnsw" in types:
        types = [t for t in types if t != "hnsw"] + ["hnsw"]
    for dim in dims:
        for n in sizes:
            keep = a.keep if (a.keep is not None and n == max(sizes) and dim == dims[0]) else None
            rows += bench_size(dim, n, types, workdir, n_recall, batch, keep)
    cols = ["dim", "n", "type", "build s", "bytes/vector", "x raw", "open s", "single ms", "speedup vs flat",
            "q/s", "recall@10"]
    print()
    print(table(rows, cols, "k-NN lookup (k=10) through FaissStore.search"))
    out = write_json(a.json, "knn_lookup", {"machine_start": start, "machine_end": machine(), "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
