"""Embedding throughput on pen strokes: ``encoder.embed(files)`` against the raw module's forward pass.

    python benchmarks/sequence_throughput.py                      # all 2,720 files, batch 256, 1 thread
    python benchmarks/sequence_throughput.py --json --out benchmarks/results/sequence_throughput.json

End to end, ``embed`` reads each Omniglot stroke file, parses it, turns it into
pen offsets (normalised, resampled by arc length), packs batches of unequal
lengths and runs the RNN. The reference is the module's forward pass alone on
the very same packed batches (``encoder.prepare_batch``), prepared beforehand.
The ratio of the two times is the cost of everything that is not the network
(target: at most 1.2). Throughputs use the best of ``--repeats`` paired rounds
(raw forward, embed files, embed arrays, back to back); the ratios are medians of
the per-round ratios, so a load spike from other jobs on a shared machine affects
both sides of a ratio alike. ``stages_ms`` splits the input handling (done on a
worker thread while the previous batch runs through the network) into its steps,
each the best of the rounds; ``max_abs_diff_vs_raw`` checks that ``embed`` gives
what the raw forward gives.
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
    """The first ``n`` stroke files of the zip (all when ``n <= 0``), written as plain files."""
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(x for x in zf.namelist() if x.endswith(".txt") and "__MACOSX" not in x)
        if not names:
            raise SystemExit(f"error: no stroke files in {zip_path}")
        files = []
        for i in range(n if n > 0 else len(names)):
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
    p.add_argument("--n", type=int, default=0, help="stroke files to embed (0 = every file of the zip)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="paired rounds (raw, files, arrays)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the JSON result to this file")
    a = p.parse_args()

    import numpy as np
    import torch

    from fewshot import encoders
    from fewshot.encoders.sequence import pack_rows
    from fewshot.inputs import InputItem
    from fewshot.sequences import _read_bytes, load_sequence, parse_stroke_files

    if a.threads:
        torch.set_num_threads(a.threads)
    enc = encoders.load(a.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        files = extract(Path(a.data), a.n, Path(tmp))
        n = len(files)
        items = [InputItem(f, str(f)) for f in files]
        bs = a.batch_size
        chunks = [items[i:i + bs] for i in range(0, n, bs)]
        batches = [enc.prepare_batch(c) for c in chunks]
        steps = sum(int(b.batch_sizes.shape[0]) for b in batches) / len(batches)

        def raw_forward() -> list:
            with torch.inference_mode():
                return [enc.module(b) for b in batches]

        raws = [load_sequence(it) for it in items]
        arrays = [enc.preprocess.apply(r) for r in raws]
        ref = torch.cat(raw_forward()).float().numpy()  # warm-up, and what embed must give
        if enc.centre is not None:
            ref = ref - enc.centre
        emb_files, emb_arrays = enc.embed(files, batch_size=bs), enc.embed(raws, batch_size=bs)
        # paired rounds: raw, files and arrays back to back, so a load spike from other jobs on a
        # shared machine hits all three alike; the ratio is the median of the per-round ratios
        rounds = []
        for _ in range(a.repeats):
            t_raw = timed(raw_forward)
            t_files = timed(lambda: enc.embed(files, batch_size=bs))
            t_arrays = timed(lambda: enc.embed(raws, batch_size=bs))
            rounds.append((t_raw, t_files, t_arrays))
        # the input handling alone, step by step (serially, on this thread)
        stage = {k: [] for k in ("read", "parse", "features", "pack", "prepare_batch")}
        for _ in range(a.repeats):
            datas = []
            stage["read"].append(timed(lambda: datas.extend([_read_bytes(it.value, it.name) for it in c]
                                                              for c in chunks)))
            parsed = []
            stage["parse"].append(timed(lambda: parsed.extend(
                parse_stroke_files(d, [it.name for it in c]) for d, c in zip(datas, chunks))))
            split = [[rows[e - k:e] for e, k in zip(np.cumsum(lens), lens)] for rows, lens in parsed]
            feats = []
            stage["features"].append(timed(lambda: feats.extend(
                enc.preprocess.apply_batch(s, [it.name for it in c]) for s, c in zip(split, chunks))))
            stage["pack"].append(timed(lambda: [pack_rows(r, ln) for r, ln in feats]))
            stage["prepare_batch"].append(timed(lambda: [enc.prepare_batch(c) for c in chunks]))
    med = lambda xs: float(np.median(xs))  # noqa: E731
    t_raw, t_files, t_arrays = (min(r[i] for r in rounds) for i in range(3))
    t_prep = min(stage["prepare_batch"])
    res = {"encoder": enc.name, "fingerprint": enc.fingerprint, "n": n, "batch_size": bs,
           "mean_padded_steps_per_batch": round(steps, 1),
           "mean_steps": round(sum(len(x) for x in arrays) / len(arrays), 1),
           "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(),
           "raw_forward_seq_per_s": round(n / t_raw, 1),
           "embed_files_seq_per_s": round(n / t_files, 1),
           "embed_arrays_seq_per_s": round(n / t_arrays, 1),
           "read_and_preprocess_only_seq_per_s": round(n / t_prep, 1),
           "ratio_files_vs_raw": round(med([f / r for r, f, _ in rounds]), 3),
           "ratio_arrays_vs_raw": round(med([x / r for r, _, x in rounds]), 3),
           "stages_ms": {k: round(min(v) * 1e3, 1) for k, v in stage.items()},
           "max_abs_diff_vs_raw": {"files": float(np.abs(emb_files - ref).max()),
                                   "arrays": float(np.abs(emb_arrays - ref).max())},
           "rounds": [[round(v, 3) for v in r] for r in rounds],
           "load_average_1min": round(os.getloadavg()[0], 2)}
    if a.out:
        Path(a.out).write_text(json.dumps(res) + "\n")
    if a.json:
        print(json.dumps(res))
        return
    print(f"{enc.name}: {n} stroke files, batch {bs}, torch threads {res['torch_threads']}")
    print(f"  raw module forward          {res['raw_forward_seq_per_s']:>9.1f} seq/s")
    print(f"  embed(files)                {res['embed_files_seq_per_s']:>9.1f} seq/s   "
          f"ratio {res['ratio_files_vs_raw']:.3f} (target <= 1.2)")
    print(f"  embed(arrays in memory)     {res['embed_arrays_seq_per_s']:>9.1f} seq/s   "
          f"ratio {res['ratio_arrays_vs_raw']:.3f}")
    print(f"  read+preprocess alone       {res['read_and_preprocess_only_seq_per_s']:>9.1f} seq/s   "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in res["stages_ms"].items()))
    print(f"  embed vs raw forward: max abs diff {max(res['max_abs_diff_vs_raw'].values()):.2g}")
    print(f"  (median of {a.repeats} paired rounds; 1-min load average {res['load_average_1min']})")


if __name__ == "__main__":
    main()
