"""Load test of `fewshot serve` on 127.0.0.1: latency, throughput, memory, and writers beside readers.

    python benchmarks/serve_load.py [--classes 20] [--requests 400] [--rss-requests 10000] [--smoke]
                                    [--json out.json]

A real `fewshot serve` process over an image index (Korean Omniglot characters, the shipped
encoder), driven by threads with keep-alive connections (http.client: the lightest client, so
the 2-core machine spends its time in the server). Every phase sends a fixed number of requests
and stops by itself:

* classify of one image (JSON, base64 PNG) at concurrency 1, 8 and 32: p50/p99 latency, requests/s,
  requests per micro-batch, the server's and the client's CPU time per request; beside the same
  classify in-process through the library (decode the same PNG bytes + classify: wall and CPU time)
  and through one `fewshot classify` CLI call (process start to exit). The library and the three
  concurrencies run in interleaved rounds and each ratio is the median of the per-round ratios: the
  shared machine's load changes several-fold within a run, so only measurements taken in the same
  minute compare;
* the server's RSS before and after ``--rss-requests`` classify requests (concurrency 8);
* a mixed run: 2 writer threads each add new classes one request at a time while 8 readers classify;
  afterwards every added class must be listed (nothing lost) and every answer must name a class that
  was committed (the initial ones or one a writer had sent).
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scale_common import machine, table, write_json

from fewshot.serve.process import repo_env, serve_process

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "omniglot" / "images_background.zip"
INDEX = "korean"


def korean_pngs(n_chars: int) -> list[list[bytes]]:
    """PNG bytes of the first ``n_chars`` Korean characters (20 drawings each)."""
    with zipfile.ZipFile(DATA) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("images_background/Korean/") and n.endswith(".png"))
        by_char: dict[str, list[bytes]] = {}
        for n in names:
            by_char.setdefault(n.split("/")[2], []).append(zf.read(n))
    return [by_char[c] for c in sorted(by_char)[:n_chars]]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:")) / 1024


class Client:
    """One keep-alive connection; ``post`` returns (status, parsed JSON, seconds)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, object, float]:
        t = time.perf_counter()
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data), time.perf_counter() - t


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used: its work, whatever the load."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_stats(url: str) -> dict:
    """The server's micro-batching counters for the index (batches, library calls, requests, inputs)."""
    _, out, _ = Client(url).request("GET", "/v1/indexes")
    return next(i["classify_batches"] for i in out if i["name"] == INDEX)


def load(url: str, body: bytes, concurrency: int, n: int, pid: int | None = None) -> dict:
    """``n`` classify requests from ``concurrency`` threads; latency percentiles, throughput, batch size,
    and the server's CPU time per request (``pid``: the server process)."""
    path = f"/v1/indexes/{INDEX}/classify"
    before = batch_stats(url)
    cpu0, client0 = (cpu_s(pid) if pid else None), time.process_time()
    per = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

    def worker(count: int) -> tuple[list[float], int]:
        c, lat, errors = Client(url), [], 0
        for _ in range(count):
            status, _, dt = c.request("POST", path, body)
            lat.append(dt)
            errors += status != 200
        return lat, errors

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(worker, per))
    wall = time.perf_counter() - t
    server_cpu = (cpu_s(pid) - cpu0) / n * 1e3 if pid else None
    client_cpu = (time.process_time() - client0) / n * 1e3
    after = batch_stats(url)
    lat = sorted(x for r in results for x in r[0])
    return {"concurrency": concurrency, "requests": n, "errors": sum(r[1] for r in results),
            "p50 ms": lat[len(lat) // 2] * 1e3, "p99 ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            "req/s": n / wall, "requests/batch": (after["requests"] - before["requests"])
            / max(1, after["batches"] - before["batches"]), "server CPU ms/request": server_cpu,
            "client CPU ms/request": client_cpu, "load_avg_1": os.getloadavg()[0]}


def in_process(index_dir: Path, png: bytes, n: int, threads: int) -> dict:
    """The same classify through the library: decode the PNG bytes, classify (median of n).

    Timed on the main thread and on one worker thread (where the server runs it), each with
    ``threads`` torch threads (the server's ``--threads``; torch's count is per OS thread).
    The comparison with HTTP uses the faster of the two.
    """
    import torch

    from fewshot.fewshot_index import FewShotIndex
    from fewshot.inputs import decode_image_bytes

    def p50() -> float:
        if threads:
            torch.set_num_threads(threads)
        for _ in range(10):
            idx.classify([decode_image_bytes(png, "q")], top_k=5)
        times, cpu = [], time.process_time()
        for _ in range(n):
            t = time.perf_counter()
            idx.classify([decode_image_bytes(png, "q")], top_k=5)
            times.append(time.perf_counter() - t)
        cpus.append((time.process_time() - cpu) / n * 1e3)
        return statistics.median(times) * 1e3

    cpus: list[float] = []  # CPU ms per call of this process (all threads: torch's too)
    with FewShotIndex.open(index_dir, readonly=True) as idx, ThreadPoolExecutor(1) as pool:
        main_ms, worker_ms = p50(), pool.submit(p50).result()
    return {"p50 ms": min(main_ms, worker_ms), "main thread p50 ms": main_ms, "worker thread p50 ms": worker_ms,
            "CPU ms/call": min(cpus), "calls": 2 * n}


def cli_call(index_dir: Path, png: bytes, repeats: int, server: str | None = None) -> dict:
    """One `fewshot classify --json` process (``--server``: through the server), start to exit."""
    with tempfile.TemporaryDirectory() as d:
        q = Path(d) / "q.png"
        q.write_bytes(png)
        env = dict(repo_env(ROOT), FEWSHOT_NO_PROGRESS="1")
        extra = ["--server", server] if server else []
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fewshot.cli", "classify", str(index_dir), str(q), "--json", *extra],
                           env=env, check=True, capture_output=True, timeout=120)
            times.append(time.perf_counter() - t)
    return {"median s": statistics.median(times), "min s": min(times), "calls": repeats}


def mixed(url: str, pngs: list[list[bytes]], initial: set[str], readers: int, adds_per_writer: int,
          reads_per_reader: int) -> dict:
    """Writers add new classes while readers classify; nothing lost, every answer a committed class."""
    sent: set[str] = set()
    lock = threading.Lock()
    errors: list[str] = []
    query = json.dumps({"inputs": [{"image_base64": base64.b64encode(pngs[0][5]).decode()}], "top_k": 3}).encode()

    def writer(w: int) -> None:
        c = Client(url)
        for i in range(adds_per_writer):
            label = f"w{w}-{i}"
            png = pngs[(w * adds_per_writer + i) % len(pngs)][10 + i % 10]
            body = json.dumps({"examples": [{"label": label, "image_base64": base64.b64encode(png).decode()}]})
            with lock:
                sent.add(label)  # sent before it can be committed: an answer may name it from now on
            status, out, _ = c.request("POST", f"/v1/indexes/{INDEX}/examples", body.encode())
            if status != 200:
                errors.append(f"add {label}: {status} {out}")

    def reader() -> int:
        c, bad = Client(url), 0
        for _ in range(reads_per_reader):
            status, out, _ = c.request("POST", f"/v1/indexes/{INDEX}/classify", query)
            with lock:
                known = initial | sent
            if status != 200:
                errors.append(f"classify: {status} {out}")
            elif any(cand["label"] not in known for cand in out[0]["candidates"]):
                bad += 1
        return bad

    t = time.perf_counter()
    with ThreadPoolExecutor(2 + readers) as ex:
        ws = [ex.submit(writer, w) for w in range(2)]
        rs = [ex.submit(reader) for _ in range(readers)]
        bad = sum(r.result() for r in rs)
        for w in ws:
            w.result()
    wall = time.perf_counter() - t
    _, labels, _ = Client(url).request("GET", f"/v1/indexes/{INDEX}/labels")
    lost = sorted(sent - set(labels))
    return {"writers": 2, "readers": readers, "adds": len(sent), "classifies": readers * reads_per_reader,
            "errors": len(errors), "first error": errors[0] if errors else None, "lost additions": len(lost),
            "answers naming an uncommitted class": bad, "seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--requests", type=int, default=400, help="classify requests per concurrency level")
    ap.add_argument("--rss-requests", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, in the server (--threads) and in-process (0: torch's default)")
    ap.add_argument("--server-root", type=Path, default=ROOT,
                    help="the checkout whose `fewshot serve` runs (an earlier commit: before/after in one run)")
    ap.add_argument("--rounds", type=int, default=5, help="library / c=1 / c=8 / c=32, interleaved, this many times")
    ap.add_argument("--smoke", action="store_true", help="tiny counts: checks the script runs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.classes, args.requests, args.rss_requests = 5, 40, 200
    os.environ["FEWSHOT_NO_PROGRESS"] = "1"
    from fewshot.fewshot_index import FewShotIndex

    pngs = korean_pngs(args.classes)
    start = machine()
    with tempfile.TemporaryDirectory() as d:
        index_dir = Path(d) / INDEX
        with FewShotIndex.create(index_dir) as idx:
            from fewshot.inputs import decode_image_bytes

            idx.add_many([(f"c{i}", [decode_image_bytes(p[0], "x")]) for i, p in enumerate(pngs)])
        query = pngs[1][3]
        body = json.dumps({"inputs": [{"name": "q", "image_base64": base64.b64encode(query).decode()}],
                           "top_k": 5}).encode()
        n_lib = 200 if not args.smoke else 20
        cli = cli_call(index_dir, query, 3 if not args.smoke else 1)
        threads = ["--threads", str(args.threads)] if args.threads else []
        with serve_process([index_dir], *threads, env=repo_env(args.server_root), cwd=args.server_root) as (proc, url):
            load(url, body, 4, 40)  # warm-up
            # Rounds: the library call, then HTTP at concurrency 1, 8, 32, again and again, so every ratio
            # compares measurements taken within the same minute (a shared machine's load drifts by
            # several times over a run); the result is the median over rounds.
            rounds = []
            for _ in range(args.rounds):
                lib = in_process(index_dir, query, max(10, n_lib // args.rounds), args.threads)
                rows = [load(url, body, c, max(c, args.requests * (1 if c == 1 else 2) // args.rounds), proc.pid)
                        for c in (1, 8, 32)]
                rounds.append({"library": lib, "http": rows,
                               "http_p50_over_library_p50": rows[0]["p50 ms"] / lib["p50 ms"],
                               "throughput_32_over_1": rows[2]["req/s"] / rows[0]["req/s"],
                               "server_cpu_per_request_over_library_cpu_per_call":
                                   rows[0]["server CPU ms/request"] / lib["CPU ms/call"]})
            cli_server = cli_call(index_dir, query, 5 if not args.smoke else 1, server=url)
            rss_before = rss_mb(proc.pid)
            rss_run = load(url, body, 8, args.rss_requests)
            rss_after = rss_mb(proc.pid)
            mix = mixed(url, pngs, {f"c{i}" for i in range(len(pngs))}, 8, 25 if not args.smoke else 3,
                        40 if not args.smoke else 5)
    med = statistics.median
    keys = ["p50 ms", "p99 ms", "req/s", "requests/batch", "server CPU ms/request", "client CPU ms/request",
            "load_avg_1"]
    rows = [dict({"concurrency": c, "requests": sum(r["http"][i]["requests"] for r in rounds),
                  "errors": sum(r["http"][i]["errors"] for r in rounds)},
                 **{k: med(r["http"][i][k] for r in rounds) for k in keys}) for i, c in enumerate((1, 8, 32))]
    lib = {k: med(r["library"][k] for r in rounds) for k in ("p50 ms", "main thread p50 ms", "worker thread p50 ms",
                                                              "CPU ms/call")}
    ratios = {k: med(r[k] for r in rounds) for k in ("http_p50_over_library_p50", "throughput_32_over_1",
                                                     "server_cpu_per_request_over_library_cpu_per_call")}
    result = {
        "machine_start": start, "machine_end": machine(), "classes": len(pngs), "threads": args.threads,
        "server_root": str(args.server_root), "rounds": args.rounds, "medians over rounds": True,
        "in_process_library": lib, "cli_one_call": cli, "cli_one_call_with_server": cli_server, "http": rows,
        **ratios, "per_round": rounds,
        "rss": {"requests": args.rss_requests, "errors": rss_run["errors"], "before MB": rss_before,
                "after MB": rss_after, "growth %": (rss_after - rss_before) / rss_before * 100},
        "mixed": mix,
    }
    print(table(rows, ["concurrency", "requests", "errors", "p50 ms", "p99 ms", "req/s", "requests/batch",
                       "server CPU ms/request", "client CPU ms/request", "load_avg_1"],
                f"classify one image over HTTP ({len(pngs)} classes)"))
    print(f"library in-process p50 {lib['p50 ms']:.2f} ms; one CLI call {cli['median s']:.2f} s "
          f"(with --server {cli_server['median s']:.3f} s); "
          f"HTTP p50 / library p50 = {result['http_p50_over_library_p50']:.2f}; "
          f"req/s at 32 / at 1 = {result['throughput_32_over_1']:.2f}")
    print(f"RSS {rss_before:.0f} -> {rss_after:.0f} MB over {args.rss_requests} requests "
          f"({result['rss']['growth %']:+.1f}%)")
    print("mixed:", json.dumps(mix))
    if not args.smoke or args.json:
        print("wrote", write_json(args.json, "serve_load", result))


if __name__ == "__main__":
    main()
