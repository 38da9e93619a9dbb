"""Run every scaling benchmark in one go and write the summary table with the targets checked.

    python benchmarks/run_scaling.py [--smoke] [--milvus-uri http://127.0.0.1:19530] [--skip-512]

Runs, in this order and in this one process tree (so the ratios compare runs
on the same machine in the same session): threads.py, classify_scale.py,
knn_lookup.py (keeping its 1M x 128 HNSW index), add_latency.py (adding to that
index), milvus_backend.py. Each writes
benchmarks/results/<name>.json; this script then writes
benchmarks/results/SCALING.md: the tables, the load average before and after,
and each target of the scaling issue with the measured value and PASS/MISS.

The full run needs ~7 GB of memory and about an hour on 2 cores (most of it
building HNSW and IVF over 1M x 512); ``--skip-512`` leaves out 512-d;
``--smoke`` runs tiny sizes in about a minute (what CI runs).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def run(script: str, *args: str) -> dict:
    out = RESULTS / f"{Path(script).stem}.json"
    cmd = [sys.executable, str(HERE / script), "--json", str(out), *args]
    print("$", " ".join(cmd), flush=True)
    t = time.time()
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    print(proc.stdout, flush=True)
    data = json.loads(out.read_text())
    data["wall_s"] = time.time() - t
    data["tables"] = "\n".join(line for line in proc.stdout.splitlines()
                               if line.startswith(("###", "|")) or not line.strip())
    return data


NAMES = ["fewshot", "fewshot classify", "raw FAISS", "raw FAISS + labels", "torch cdist", "NearestCentroid"]
SPECS = {
    "threads": [("FAISS flat search: time per batch, 1 thread vs all",
                 ["batch", "1 thread(s) ms", "2 thread(s) ms", "slowdown with all threads", "rule picks",
                  "rule picks faster"])],
    "classify_scale": [("classify, single query (median ms, top-5)", ["classes"] + [f"{n} single ms" for n in NAMES]),
                       ("classify, batches of 1,000 (queries/s)", ["classes"] + [f"{n} batch q/s" for n in NAMES]),
                       ("classify ratios", ["classes", "single overhead (fewshot/raw)", "batch overhead (fewshot/raw)",
                                            "single overhead vs raw+labels", "batch overhead vs raw+labels",
                                            "classify single (fewshot classify/raw)",
                                            "classify batch (fewshot classify/raw)",
                                            "cdist / fewshot single", "cdist / fewshot batch",
                                            "NearestCentroid / fewshot single", "NearestCentroid / fewshot batch",
                                            "same top-1 as raw FAISS"])],
    "knn_lookup": [("k-NN lookup (k=10) through FaissStore.search",
                    ["dim", "n", "type", "build s", "bytes/vector", "x raw", "open s", "single ms",
                     "speedup vs flat", "q/s", "recall@10"])],
    "knn_lookup_512": [("k-NN lookup (k=10), dim 512",
                        ["dim", "n", "type", "build s", "bytes/vector", "x raw", "open s", "single ms",
                         "speedup vs flat", "q/s", "recall@10"])],
    "knn_lookup_512_1m": [("k-NN lookup (k=10), dim 512, 1M vectors",
                           ["dim", "n", "type", "build s", "bytes/vector", "x raw", "open s", "single ms",
                            "speedup vs flat", "q/s", "recall@10"])],
    "add_latency": [("add latency (no rebuild)", ["add", "index size", "index", "sqlite sync", "median ms", "p90 ms",
                                                  "max ms", "rebuilt", "checkpoint rewritten"])],
    "milvus_backend": [("VectorStore backends side by side (FLAT, k=10)",
                        ["backend", "bulk insert rows/s", "add one ms", "search single ms", "search batch q/s",
                         "classify single ms", "classify right after add ms", "same labels as FAISS",
                         "max score diff"])],
}


def render(name: str, data: dict) -> str:
    """The tables of one benchmark, rebuilt from its JSON rows."""
    sys.path.insert(0, str(HERE))
    from scale_common import table

    return "\n\n".join(table(data["rows"], [c for c in cols if any(c in r for r in data["rows"])], title)
                       for title, cols in SPECS[name])


def fmt(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


def targets(res: dict) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each numeric target of the issue."""
    rows: list[tuple[str, str, bool]] = []
    cl = {r["classes"]: r for r in res["classify_scale"]["rows"]}
    big = cl[max(cl)]
    for n, r in sorted(cl.items()):
        rows.append((f"classify single-query overhead vs raw FAISS <= 1.2x ({n} classes)",
                     f"{fmt(r['single overhead (fewshot/raw)'])}x ({fmt(r['fewshot single ms'], 3)} vs "
                     f"{fmt(r['raw FAISS single ms'], 3)} ms)", r["single overhead (fewshot/raw)"] <= 1.2))
        rows.append((f"classify batch overhead vs raw FAISS <= 1.05x ({n} classes)",
                     f"{fmt(r['batch overhead (fewshot/raw)'])}x", r["batch overhead (fewshot/raw)"] <= 1.05))
    for other, key in (("torch cdist", "cdist"), ("NearestCentroid", "NearestCentroid")):
        s, b = big[f"{key} / fewshot single"], big[f"{key} / fewshot batch"]
        rows.append((f"{other} >= 10x slower than fewshot at {max(cl)} classes (single / batch)",
                     f"{fmt(s, 1)}x / {fmt(b, 1)}x", s >= 10 and b >= 10))
    knn = res["knn_lookup"]["rows"]
    dim0 = 128 if any(r["dim"] == 128 for r in knn) else knn[0]["dim"]
    m128 = [r for r in knn if r["dim"] == dim0 and r["n"] == max(x["n"] for x in knn)]
    flat = next((r for r in m128 if r["type"] == "flat"), None)
    for r in m128:
        if r["type"] == "flat":
            continue
        n = r["n"]
        if r["type"] in ("hnsw", "ivf"):
            rows.append((f"{n} x 128 {r['type']}: recall@10 >= 0.95, >= 20x faster than flat, memory <= 1.5x raw",
                         f"recall {fmt(r['recall@10'], 3)}, {fmt(r['speedup vs flat'], 1)}x, "
                         f"{fmt(r['x raw'])}x raw",
                         r["recall@10"] >= 0.95 and r["speedup vs flat"] >= 20 and r["x raw"] <= 1.5))
        else:
            rows.append((f"{n} x 128 ivfpq: >= 8x smaller than raw (recall stated)",
                         f"{fmt(1 / r['x raw'], 1)}x smaller, recall@10 {fmt(r['recall@10'], 3)}, "
                         f"{fmt(r['speedup vs flat'], 1)}x faster than flat", 1 / r["x raw"] >= 8))
    if flat is None:
        rows.append(("flat baseline at the largest size", "not run", False))
    for r in res["add_latency"]["rows"]:
        limit = 5.0 if r["add"] == "one class" else 10.0
        rows.append((f"add {r['add']} to {r['index size']} ({r['index']}, sqlite {r['sqlite sync']}): "
                     f"median < {limit:g} ms, no rebuild", f"{fmt(r['median ms'])} ms, rebuilt={r['rebuilt']}",
                     r["median ms"] < limit and not r["rebuilt"]))
    for r in res["milvus_backend"]["rows"]:
        if "same labels as FAISS" in r:
            rows.append((f"{r['backend']}: same labels as FAISS flat, scores within 1e-5",
                         f"{r['same labels as FAISS']}, max diff {r['max score diff']:.2g}",
                         bool(r["same labels as FAISS"]) and r["max score diff"] <= 1e-5))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--skip-512", action="store_true")
    p.add_argument("--milvus-uri", default=os.environ.get("FEWSHOT_MILVUS_URI"))
    p.add_argument("--summarize", action="store_true",
                   help="only rebuild results/SCALING.md from the JSON files already there")
    a = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    smoke = ["--smoke"] if a.smoke else []
    if a.summarize:
        res = {name: json.loads((RESULTS / f"{name}.json").read_text()) for name in SPECS
               if (RESULTS / f"{name}.json").exists()}
        write_summary(res, None, None)
        return
    load_before = os.getloadavg()
    keep = RESULTS / "work-hnsw-1m"
    res = {
        "threads": run("threads.py", *smoke),
        "classify_scale": run("classify_scale.py", *smoke),
        "knn_lookup": run("knn_lookup.py", *smoke, *([] if a.smoke or not a.skip_512 else ["--dims", "128"]),
                          *([] if a.smoke else ["--keep", str(keep)])),
        "add_latency": run("add_latency.py", *smoke, *([] if a.smoke else ["--reuse-examples", str(keep)])),
        "milvus_backend": run("milvus_backend.py", *smoke, *(["--uri", a.milvus_uri] if a.milvus_uri else [])),
    }
    shutil.rmtree(keep, ignore_errors=True)
    write_summary(res, load_before, os.getloadavg())


def write_summary(res: dict, load_before, load_after) -> None:
    if load_before is None:  # --summarize: say when each part ran instead
        starts = sorted(r["machine_start"]["time_utc"] for r in res.values())
        when = (f"Measured between {starts[0]} and {starts[-1]} on {os.cpu_count()} CPU cores, each benchmark "
                "by its own script (commands and load averages below); summary by "
                "`python benchmarks/run_scaling.py --summarize`.")
    else:
        when = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPU cores; "
                f"load average (1/5/15 min) {tuple(round(x, 2) for x in load_before)} before, "
                f"{tuple(round(x, 2) for x in load_after)} after. Command: "
                f"`python benchmarks/run_scaling.py {' '.join(sys.argv[1:])}`.")
    lines = ["# fewshot scaling results", "", when, "",
             "Ratios compare calls made in the same run (classify: round-robin, call by call); "
             "absolute times move with the machine's load.", "",
             "## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {t} | {m} | {'PASS' if ok else 'MISS'} |" for t, m, ok in targets(res)]
    lines += ["", "## Tables", ""]
    for name, data in res.items():
        lines += [f"From `benchmarks/{name.removesuffix('_1m').removesuffix('_512')}.py` (started {data['machine_start']['time_utc']}, load "
                  f"{data['machine_start']['load_avg_1_5_15']} -> {data['machine_end']['load_avg_1_5_15']}):", "",
                  render(name, data), ""]
    (RESULTS / "SCALING.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
