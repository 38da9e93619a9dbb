"""Embedding throughput on pen strokes: ``encoder.embed(files)`` against the raw module's forward pass.

    python benchmarks/sequence_throughput.py                      # shipped omniglot-strokes-gru
    python benchmarks/sequence_throughput.py --n 2048 --json

End to end, ``embed`` reads each Omniglot stroke file, parses it, turns it into
pen offsets (normalised, resampled by arc length), packs batches of unequal
lengths and runs the RNN. The reference is the module's forward pass alone on
the very same packed batches, prepared beforehand. The ratio of the two times
is the cost of everything that is not the network (target: at most 1.2).
Throughputs use the best of ``--repeats`` paired rounds (raw forward, embed files,
embed arrays, back to back); the ratios are medians of the per-round ratios, so a
load spike from other jobs on a shared machine affects both sides of a ratio alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import zipfile
from pathlib import Path

DEFAULT_DATA = "../shared/data/omniglot/strokes_background_small1.zip"


def extract(zip_path: Path, n: int, out: Path) -> list[Path]:
    """The first ``n`` stroke files of the zip, written as plain files (as a user would have them)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(x for x in zf.namelist() if x.endswith(".txt") and "__MACOSX" not in x)
        if not names:
            raise SystemExit(f"error: no stroke files in {zip_path}")
        files = []
        for i in range(n):
            name = names[i % len(names)]
            p = out / f"{i:05d}_{Path(name).name}"
            p.write_bytes(zf.read(name))
            files.append(p)
    return files


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--encoder", default="omniglot-strokes-gru")
    p.add_argument("--n", type=int, default=1024, help="stroke files to embed")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="paired rounds (raw, files, arrays)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import numpy as np
    import torch

    from fewshot import encoders
    from fewshot.inputs import InputItem
    from fewshot.sequences import load_sequence

    if a.threads:
        torch.set_num_threads(a.threads)
    enc = encoders.load(a.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        files = extract(Path(a.data), a.n, Path(tmp))
        items = [InputItem(f, str(f)) for f in files]
        bs = a.batch_size
        batches = [enc.prepare_batch(items[i:i + bs]) for i in range(0, len(items), bs)]
        steps = sum(int(b.batch_sizes.shape[0]) for b in batches) / len(batches)

        def raw_forward() -> None:
            with torch.inference_mode():
                for b in batches:
                    enc.module(b)

        raws = [load_sequence(it) for it in items]
        arrays = [enc.preprocess.apply(r) for r in raws]
        raw_forward()  # warm-up
        enc.embed(files[:bs], batch_size=bs)
        # paired rounds: raw, files and arrays back to back, so a load spike from other jobs on a
        # shared machine hits all three alike; the ratio is the median of the per-round ratios
        rounds = []
        for _ in range(a.repeats):
            t_raw = timed(raw_forward)
            t_files = timed(lambda: enc.embed(files, batch_size=bs))
            t_arrays = timed(lambda: enc.embed(raws, batch_size=bs))
            rounds.append((t_raw, t_files, t_arrays))
        t_parse = timed(lambda: [enc.prepare_batch(items[i:i + bs]) for i in range(0, len(items), bs)])
    med = lambda xs: float(np.median(xs))  # noqa: E731
    t_raw, t_files, t_arrays = (min(r[i] for r in rounds) for i in range(3))
    res = {"encoder": enc.name, "fingerprint": enc.fingerprint, "n": a.n, "batch_size": bs,
           "mean_padded_steps_per_batch": round(steps, 1),
           "mean_steps": round(sum(len(x) for x in arrays) / len(arrays), 1),
           "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "raw_forward_seq_per_s": round(a.n / t_raw, 1),
           "embed_files_seq_per_s": round(a.n / t_files, 1),
           "embed_arrays_seq_per_s": round(a.n / t_arrays, 1),
           "read_and_preprocess_only_seq_per_s": round(a.n / t_parse, 1),
           "ratio_files_vs_raw": round(med([f / r for r, f, _ in rounds]), 3),
           "ratio_arrays_vs_raw": round(med([x / r for r, _, x in rounds]), 3),
           "rounds": [[round(v, 3) for v in r] for r in rounds],
           "load_average_1min": round(os.getloadavg()[0], 2)}
    if a.json:
        print(json.dumps(res))
        return
    print(f"{enc.name}: {a.n} stroke files, batch {bs}, torch threads {res['torch_threads']}")
    print(f"  raw module forward          {res['raw_forward_seq_per_s']:>9.1f} seq/s")
    print(f"  embed(files)                {res['embed_files_seq_per_s']:>9.1f} seq/s   "
          f"ratio {res['ratio_files_vs_raw']:.3f} (target <= 1.2)")
    print(f"  embed(arrays in memory)     {res['embed_arrays_seq_per_s']:>9.1f} seq/s   "
          f"ratio {res['ratio_arrays_vs_raw']:.3f}")
    print(f"  read+preprocess alone       {res['read_and_preprocess_only_seq_per_s']:>9.1f} seq/s")
    print(f"  (median of {a.repeats} paired rounds; 1-min load average {res['load_average_1min']})")


if __name__ == "__main__":
    main()
