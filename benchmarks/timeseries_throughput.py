"""Embedding speed of ts-rocket and ts-gru on time series, against the RNN of the old time-series demo in the same run.

    python benchmarks/timeseries_throughput.py --json --out benchmarks/results/timeseries_throughput.json

Series per second of ``encoder.embed(arrays)`` (batch ``--batch-size``, ``--threads``
threads) on ``--n`` random series of ``--length`` steps and ``--channels``
channel(s); best of ``--repeats`` rounds, the encoders alternating within each
round so that load from other jobs hits them alike. ``ts-rocket``, ``ts-gru``: the
shipped encoders (with ``--random``: unfitted / random weights of the same
architectures; the speed is the same). ``demo-gru``: the encoder of the previous demos/timeseries_one_shot.py
(bidirectional GRU, 64 hidden, attention pooling, per-feature standardisation, no
resampling). The load average is printed with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--random", action="store_true", help="unfitted ts-rocket, random ts-gru (no shipped file needed)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import torch

    from fewshot.encoders.registry import load
    from fewshot.encoders.sequence import SequenceRNN, TorchSequenceEncoder
    from fewshot.encoders.timeseries import new_ts_encoder
    from fewshot.sequences import SequencePreprocess

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = list(np.random.default_rng(0).normal(size=(a.n, a.length, a.channels)).astype(np.float32))
    rocket = new_ts_encoder(arch="ts-rocket") if a.random else load("ts-rocket")
    ts = new_ts_encoder() if a.random else load("ts-gru")
    pre = SequencePreprocess(kind="series", n_features=a.channels, mean=(0.0,) * a.channels,
                             std=(1.0,) * a.channels, max_length=10 ** 6)
    arch = {"in_features": a.channels, "hidden": 64, "layers": 1, "cell": "gru", "bidirectional": True,
            "pooling": "attention", "dim": 64}
    demo = TorchSequenceEncoder("demo-gru", SequenceRNN(**arch), 64, pre, "rnn", arch)
    encs = {"ts-rocket": rocket, "ts-gru": ts, "demo-gru": demo}
    for e in encs.values():
        e.threads = a.threads
        e.embed(x[: a.batch_size], batch_size=a.batch_size)  # warm-up
    best = {k: float("inf") for k in encs}
    load_start = os.getloadavg()
    for _ in range(a.repeats):
        for k, e in encs.items():
            t = time.perf_counter()
            e.embed(x, batch_size=a.batch_size)
            best[k] = min(best[k], time.perf_counter() - t)
    out = {"n": a.n, "length": a.length, "channels": a.channels, "batch_size": a.batch_size, "threads": a.threads,
           "series_per_s": {k: round(a.n / v, 1) for k, v in best.items()},
           "load_avg_start": [round(v, 2) for v in load_start],
           "load_avg_end": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
           "torch": torch.__version__}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out["series_per_s"].items():
            print(f"{k:<10} {v:>9.1f} series/s  ({a.n} x {a.length} steps x {a.channels} ch, batch {a.batch_size}, "
                  f"{a.threads} thread(s))")
        print(f"load average {out['load_avg_start']} -> {out['load_avg_end']}")


if __name__ == "__main__":
    main()
