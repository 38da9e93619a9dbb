"""Latency of one input, in-process: embed one image, embed one stroke file, classify one image.

    python benchmarks/encoder_latency.py [--image-encoder omniglot-conv4@1]
        [--sequence-encoders omniglot-strokes-gru@1,omniglot-strokes-fusion@1] [--threads 1] [--json out.json]

What a user waits for once the encoder is loaded (a library caller, or the HTTP service):
``Encoder.embed([file])`` for one PNG from Omniglot and one Omniglot stroke file (read,
parse, preprocess, forward: the shifts of ``tta_shift`` included), and
``FewShotIndex.classify([file])`` on an index of 20 classes (embed + nearest prototype).
The measurements are interleaved (``--rounds`` rounds of ``--calls`` calls each, after 5
warm-up calls) so a burst of load from other processes hits all of them alike; each row
gives the median and the fastest call (the cost without contention). Encoders are named
by version (``@1``) so a later run against new weights compares with this baseline.
Target (issue 18): one image's classify under 50 ms in-process on this CPU.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from scale_common import machine, write_json

from fewshot import encoders
from fewshot.fewshot_index import FewShotIndex

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def extract(zip_path: Path, suffix: str, n: int, out: Path) -> list[Path]:
    """The first ``n`` files ending in ``suffix`` (sorted names), extracted to ``out``."""
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(suffix) and "__MACOSX" not in m)[:n]
        zf.extractall(out, names)
    return [out / m for m in names]


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in alternating rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(5):
            fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--image-encoder", default="omniglot-conv4@1")
    p.add_argument("--sequence-encoders", default="omniglot-strokes-gru@1,omniglot-strokes-fusion@1")
    p.add_argument("--classes", type=int, default=20, help="classes of the index classify runs against")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    start = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = extract(a.data / "images_background.zip", ".png", 20 * a.classes, Path(tmp) / "img")
        strokes = extract(a.data / "strokes_background_small1.zip", ".txt", 1, Path(tmp) / "strokes")
        image = encoders.load(a.image_encoder)
        query = images[1]  # another drawing of the first class's character
        fns = {("embed one image", a.image_encoder): lambda: image.embed([query])}
        for name in a.sequence_encoders.split(","):
            enc = encoders.load(name)
            fns[("embed one stroke file", name)] = lambda enc=enc: enc.embed([strokes[0]])
        with FewShotIndex.create(Path(tmp) / "idx", encoder=image) as idx:
            # one example per class: each character's first drawing (20 drawings per character)
            idx.add_many([(f"{images[20 * c].parent.name}/{c}", [images[20 * c]]) for c in range(a.classes)])
            fns[(f"classify one image ({a.classes} classes)", a.image_encoder)] = lambda: idx.classify([query])
            times = interleaved(fns, a.rounds, a.calls)
    for (what, name), ts in times.items():
        rows.append({"what": what, "encoder": name, "fingerprint": encoders.load(name).fingerprint,
                     "median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "calls": len(ts)})
    for r in rows:
        print(f"{r['what']:<34} {r['encoder']:<28} median {r['median_ms']:7.2f} ms, fastest {r['min_ms']:7.2f} ms")
    print(f"load average {start['load_avg_1_5_15']} -> {machine()['load_avg_1_5_15']}, {a.threads} thread(s)")
    out = write_json(a.json, "encoder_latency", {"machine_start": start, "machine_end": machine(),
                                                 "threads": a.threads, "rows": rows,
                                                 "target_classify_ms": 50.0})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
