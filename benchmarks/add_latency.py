"""Latency of adding one class / one example to a large index (no rebuild).

    python benchmarks/add_latency.py [--classes 100000] [--examples 1000000] [--dim 128]
                                     [--smoke] [--json out.json]

* one class into an index of 100k classes (one example each, flat: the
  ``auto`` type below its threshold);
* one example of an existing class into an index of 1M examples (HNSW: what
  ``auto`` uses at that size).

Each add is one committed SQLite transaction plus the in-memory index and
prototype updates; cache files are not rewritten (checkpoints lag behind large
indexes, see index/checkpoint.py). Measured with SQLite ``synchronous=FULL``
(one fsync per add, the default: survives power loss) and ``NORMAL`` (no fsync
per add: survives a crash of the process, not of the machine); the fsync cost is
the disk's, reported separately.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from scale_common import embeddings, machine, table, write_json

from index import FaissStore


def fsync_ms(directory: Path, n: int = 30) -> float:
    """Median cost of one small write + fsync on this disk."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 128)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1e3


def timed_adds(store: FaissStore, vecs: np.ndarray, labels: list[str]) -> list[float]:
    out = []
    for v, lab in zip(vecs, labels):
        t = time.perf_counter()
        store.add(v, [lab])
        out.append(time.perf_counter() - t)
    return out


def build(path: Path, data: np.ndarray, labels: list[str], index_type: str) -> None:
    with FaissStore.create(path, data.shape[1], index_type="flat", autosave=False) as store:
        for start in range(0, len(data), 50_000):
            store.add(data[start : start + 50_000], labels[start : start + 50_000])
        if index_type != "flat":
            store.set_index_type(index_type)
        store.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=100_000)
    p.add_argument("--examples", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--adds", type=int, default=50)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--reuse-examples", type=Path, default=None,
                   help="an existing large HNSW index (knn_lookup.py --keep) instead of building one")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    n_classes, n_examples, adds = (2000, 5000, 10) if a.smoke else (a.classes, a.examples, a.adds)
    start = machine()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="fewshot-add-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    cases = [
        ("one class", n_classes, "flat", lambda i: f"class{i:07d}", lambda i, d: f"new-{d}-{i}"),
        ("one example", n_examples, "hnsw", lambda i: f"class{i % 1000:04d}", lambda i, d: "class0007"),
    ]
    for what, n, kind, label_of, new_label in cases:
        path = work / f"add-{kind}-{n}"
        if what == "one example" and a.reuse_examples is not None and not a.smoke:
            path = a.reuse_examples
            with FaissStore.open(path, readonly=True) as probe:
                n = probe.count()
                existing = next(iter(probe.labels()))
            new_label = lambda i, d, existing=existing: existing  # noqa: E731
        else:
            data = embeddings(n, a.dim, seed=21)
            build(path, data, [label_of(i) for i in range(n)], kind)
            del data
        extra = embeddings(2 * adds, a.dim, seed=22)
        for durability in ("full", "normal"):
            store = FaissStore.open(path, durability=durability)
            info = store.index_info()
            part = extra[:adds] if durability == "full" else extra[adds:]
            times = timed_adds(store, part, [new_label(i, durability) for i in range(adds)])
            info_after = store.index_info()
            rows.append({"add": what, "index size": n, "index": info["kind"], "sqlite sync": durability.upper(),
                         "median ms": statistics.median(times) * 1e3,
                         "p90 ms": float(np.percentile(times, 90)) * 1e3, "max ms": max(times) * 1e3,
                         "rebuilt": info_after["kind"] != info["kind"] or info_after["tombstones"] != info["tombstones"],
                         "checkpoint rewritten": info_after["checkpoint_generation"] != info["checkpoint_generation"]})
            store.close()
    disk = fsync_ms(work)
    cols = ["add", "index size", "index", "sqlite sync", "median ms", "p90 ms", "max ms", "rebuilt",
            "checkpoint rewritten"]
    print(table(rows, cols, f"add latency, dim {a.dim} (one fsync on this disk: {disk:.2f} ms median)"))
    out = write_json(a.json, "add_latency", {"machine_start": start, "machine_end": machine(), "dim": a.dim,
                                              "fsync_ms": disk, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
