"""Sentences per second of text encoders on CPU (batch 64), on CLINC150 test queries.

    python benchmarks/text_throughput.py --encoders minilm,text-gru --n 1024

Each encoder is loaded, warmed up on one batch, then timed embedding ``--n``
queries in batches of 64 (the encoder's own ``embed``: reading, tokenising,
forward). Report the load average with the numbers: the machine is shared.
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
    a = ap.parse_args()
    from fewshot import encoders

    texts = [t for t, _ in json.loads(a.data.read_text())["test"][: a.n]]
    out = {"load_average": os.getloadavg(), "n": len(texts), "batch_size": 64}
    for name in a.encoders.split(","):
        enc = encoders.resolve(name)
        enc.embed(texts[:64])
        t0 = time.perf_counter()
        enc.embed(texts, batch_size=64)
        out[name] = round(len(texts) / (time.perf_counter() - t0), 1)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
