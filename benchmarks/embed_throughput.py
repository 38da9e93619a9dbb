"""Images per second of the embedding pipeline against the raw model's forward pass.

    python benchmarks/embed_throughput.py --n 3000 --batch 64 [--json out.json]

Pipeline = what `fewshot embed` runs per batch: read PNG files, decode, preprocess
(pad, resize, invert), forward, centre. Raw = the model computation alone (`Encoder.forward`:
the module, with its shift averaging when the encoder has `tta_shift`) on the
same, already preprocessed tensors, same batch size, same process, same threads.
Also times the whole `fewshot embed` command (process start and torch import included).
Target (CNN issue): pipeline / raw <= 1.15 at batch 64.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from fewshot import encoders
from fewshot.inputs import expand_inputs

DEFAULT_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot" / "images_background.zip"


def extract(zip_path: Path, n: int, out: Path) -> list[Path]:
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(".png") and "__MACOSX" not in m)[:n]
        zf.extractall(out, names)
    return [out / m for m in names]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_ZIP)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--encoder", default="omniglot-conv4")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    enc = encoders.load(a.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        files = extract(a.data, a.n, Path(tmp))
        items = expand_inputs(files)
        x = enc.preprocess.normalize(enc.load_arrays(items))
        model = getattr(enc, "forward", None) or enc.embed_tensor  # an ensemble: its members' forwards, fused

        @torch.inference_mode()
        def raw() -> None:
            for i in range(0, len(x), a.batch):
                model(x[i:i + a.batch])

        def pipeline() -> None:
            enc.embed(items, batch_size=a.batch)

        raw(), pipeline()  # warm-up
        t_raw = best_of(raw, a.repeats)
        t_pipe = best_of(pipeline, a.repeats)
        exe = Path(sys.executable).with_name("fewshot")
        t = time.perf_counter()
        subprocess.run([str(exe), "embed", *map(str, files), "-o", str(Path(tmp) / "e.npy"),
                        "--batch-size", str(a.batch), "--encoder", a.encoder], check=True, capture_output=True,
                       env={**os.environ, "FEWSHOT_NO_PROGRESS": "1"})
        t_cli = time.perf_counter() - t
        check = np.load(Path(tmp) / "e.npy")
    res = {"encoder": a.encoder, "fingerprint": enc.fingerprint, "n": len(files), "batch": a.batch, "threads": torch.get_num_threads(),
           "raw_img_per_s": len(files) / t_raw, "pipeline_img_per_s": len(files) / t_pipe,
           "ratio_pipeline_over_raw": t_pipe / t_raw, "cli_wall_s": t_cli,
           "cli_img_per_s": len(files) / t_cli, "cli_output_rows": int(check.shape[0])}
    print(f"{'path':<28}{'img/s':>10}")
    print(f"{'raw forward':<28}{res['raw_img_per_s']:>10.0f}")
    print(f"{'pipeline (fewshot embed)':<28}{res['pipeline_img_per_s']:>10.0f}")
    print(f"{'fewshot embed CLI, whole':<28}{res['cli_img_per_s']:>10.0f}   ({t_cli:.1f} s incl. start-up)")
    print(f"ratio pipeline / raw = {res['ratio_pipeline_over_raw']:.3f} (target <= 1.15) at batch {a.batch}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
