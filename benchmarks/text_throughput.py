"""Sentences per second of text encoders on CPU (batch 64), on CLINC150 test queries.

    python benchmarks/text_throughput.py --encoders minilm,text-gru --n 1024

Each encoder is loaded, warmed up on one batch, then timed embedding ``--n``
queries in batches of 64 (the encoder's own ``embed``: reading, tokenising,
forward), ``--repeats`` times, the best pass kept; ``NAME_per_cpu_s`` divides by the
process's CPU time instead of wall time, which other users' load does not inflate (with
``--threads 1`` it is the speed on one idle core). Report the load average: the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clinc150" / "clinc150_dev.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoders", default="minilm,text-gru")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeats", type=int, default=1, help="timed passes; the best is kept")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    from fewshot import encoders

    texts = [t for t, _ in json.loads(a.data.read_text())["test"][: a.n]]
    out = {"load_average": os.getloadavg(), "n": len(texts), "batch_size": 64}
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    for name in a.encoders.split(","):
        enc = encoders.resolve(name)
        enc.embed(texts[:64])
        wall, cpu = [], []
        for _ in range(a.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            enc.embed(texts, batch_size=64)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out[name] = round(len(texts) / min(wall), 1)
        out[name + "_per_cpu_s"] = round(len(texts) / min(cpu), 1)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
