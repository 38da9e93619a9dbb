"""Shared pieces of the scaling benchmarks: data, timing, tables, JSON, machine state.

Every scaling benchmark prints a table and writes JSON (``--json``), records the
machine's load average at start and end (ratios are measured within one run, so
background load slows both sides alike, but absolute numbers move with it), and
has a ``--smoke`` size that CI runs in seconds.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def embeddings(n: int, dim: int, seed: int = 0, clusters: int | None = None, latent: int = 24) -> np.ndarray:
    """Embedding-like float32 vectors, L2-normalised.

    Real embeddings are clustered and of low intrinsic dimension; i.i.d.
    Gaussian vectors are neither, and make every approximate index look far
    worse than it is on real data. So: cluster centres in a ``latent``-dim
    space, points around them, a random linear map to ``dim``, a little
    full-rank noise. Generated in chunks (1M x 512 is 2 GB).
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(10, n // 100)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    proj = (rng.normal(size=(latent, dim)) / np.sqrt(latent)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        z = centres[rng.integers(0, clusters, m)] + 0.45 * rng.normal(size=(m, latent)).astype(np.float32)
        x = z @ proj + 0.05 * rng.normal(size=(m, dim)).astype(np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def queries_like(n: int, dim: int, seed: int, base_seed: int = 0, clusters: int | None = None,
                 base_n: int | None = None) -> np.ndarray:
    """Fresh points from the same distribution as ``embeddings(base_n, dim, base_seed, clusters)``."""
    rng = np.random.default_rng(base_seed)
    clusters = clusters or max(10, (base_n or n) // 100)
    latent = 24
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    proj = (rng.normal(size=(latent, dim)) / np.sqrt(latent)).astype(np.float32)
    r2 = np.random.default_rng(seed)
    z = centres[r2.integers(0, clusters, n)] + 0.45 * r2.normal(size=(n, latent)).astype(np.float32)
    x = z @ proj + 0.05 * r2.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def per_call(fn: Callable[[], Any], *, repeats: int = 200, warmup: int = 5, budget_s: float = 20.0) -> float:
    """Median seconds per call (stops early after ``budget_s``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    stop = time.perf_counter() + budget_s
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() > stop and len(times) >= 5:
            break
    return statistics.median(times)


def best_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Fastest of ``repeats`` runs, in seconds (for long batch calls)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including the load right now."""
    import faiss

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in load],
            "python": platform.python_version(), "faiss": faiss.__version__,
            "numpy": np.__version__, "platform": platform.platform(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def table(rows: list[dict[str, Any]], columns: list[str], title: str) -> str:
    """A plain-text table (also valid Markdown)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "-"
            if abs(v) >= 100:
                return f"{v:,.0f}"
            if abs(v) >= 1:
                return f"{v:.2f}"
            return f"{v:.3g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [f"### {title}", "", "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)


def write_json(path: Path | None, name: str, payload: dict[str, Any]) -> Path:
    """Write results (default: benchmarks/results/<name>.json); returns the path."""
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
