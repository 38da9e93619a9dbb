"""`fewshot train`: a few steps on a tiny synthetic Omniglot, checkpoints, resume, export."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import cli_with, invoke


def tiny_omniglot(path: Path, spec: dict[str, int], drawings: int = 6) -> Path:
    """An Omniglot-layout zip: ``spec[alphabet]`` characters, ``drawings`` jittered drawings each."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for alpha, n_chars in spec.items():
            for c in range(1, n_chars + 1):
                strokes = rng.integers(15, 90, (2, 4))
                for k in range(1, drawings + 1):
                    im = Image.new("L", (105, 105), 255)
                    d = ImageDraw.Draw(im)
                    for x0, y0, x1, y1 in strokes + rng.integers(-4, 5, (2, 4)):
                        d.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=0, width=6)
                    buf = io.BytesIO()
                    im.convert("1").save(buf, format="PNG")
                    zf.writestr(f"images_background/{alpha}/character{c:02d}/{c:02d}_{k:02d}.png", buf.getvalue())
        zf.writestr("__MACOSX/images_background/._x.png", b"junk")
    return path


@pytest.fixture()
def cli():
    from fewshot.commands.train import command

    yield from cli_with(command)


@pytest.fixture()
def data(tmp_path):
    return tiny_omniglot(tmp_path / "tiny.zip", {"Alpha": 3, "Beta": 3, "Held": 3})


def base_args(data, out, steps):
    return ["train", "--data", str(data), "--out", str(out), "--width", "8", "--ways", "4", "--shots", "1",
            "--queries", "2", "--steps", str(steps), "--held-out", "Held", "--threads", "1", "--json"]


def test_train_checkpoints_resumes_and_exports(cli, data, tmp_path):
    import torch

    from fewshot import encoders

    out = tmp_path / "run"
    r = invoke(cli, base_args(data, out, 2))
    assert r.exit_code == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["resumed_from"] == 0 and first["steps"] == 2
    assert first["train_classes"] == 6 and first["val_classes"] == 3 and first["held_out"] == ["Held"]
    assert 0.0 <= first["best_val_acc"] <= 1.0
    for f in ("last.pt", "best.pt", "encoder.pt", "log.jsonl", "train_args.json"):
        assert (out / f).is_file(), f
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2

    r = invoke(cli, base_args(data, out, 3))  # same run, one more step: resumes
    assert r.exit_code == 0, r.stderr
    second = json.loads(r.stdout)
    assert second["resumed_from"] == 2
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    steps_logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps_logged == [2, 3]

    enc = encoders.load(str(out / "encoder.pt"))  # usable anywhere an encoder path is
    assert enc.dim == 8 and enc.fingerprint == second["fingerprint"] and enc.name == "run"
    vecs = enc.embed([np.zeros((28, 28), np.uint8), np.eye(28, dtype=np.uint8) * 255])
    assert vecs.shape == (2, 8) and np.isfinite(vecs).all()


def test_train_refuses_to_resume_with_another_shape(cli, data, tmp_path):
    out = tmp_path / "run"
    assert invoke(cli, base_args(data, out, 1)).exit_code == 0
    args = base_args(data, out, 2)
    args[args.index("--width") + 1] = "16"
    r = invoke(cli, args)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "--width 8" in r.stderr
    (out / "train_args.json").unlink()  # a run started elsewhere: the weights themselves are checked
    r = invoke(cli, args)
    assert r.exit_code == 1 and "another shape than --arch conv --width 16" in r.stderr
    (out / "last.pt").write_bytes(b"truncated")
    r = invoke(cli, base_args(data, out, 2))
    assert r.exit_code == 1 and "cannot resume from" in r.stderr and "Traceback" not in r.output


def test_train_errors(cli, data, tmp_path):
    r = invoke(cli, base_args(tmp_path / "missing.zip", tmp_path / "o", 1))
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.output
    args = base_args(data, tmp_path / "o2", 1)
    args[args.index("--ways") + 1] = "40"  # 6 classes x 4 rotations = 24
    r = invoke(cli, args)
    assert r.exit_code == 1 and "--ways 40" in r.stderr and "24" in r.stderr
    args = base_args(data, tmp_path / "o3", 1)
    args[args.index("--held-out") + 1] = "Nowhere"
    r = invoke(cli, args)
    assert r.exit_code == 1 and "unknown --held-out group(s) Nowhere" in r.stderr and "Alpha, Beta, Held" in r.stderr


def test_train_device_option(cli, data, tmp_path):
    """``--device`` picks where the steps run; a bad or absent device is one error line, before any work."""
    import torch

    r = invoke(cli, base_args(data, tmp_path / "bad", 1) + ["--device", "gpu0"])
    assert r.exit_code == 1 and r.stderr.startswith("error: unknown device 'gpu0'") and "Traceback" not in r.output
    assert not (tmp_path / "bad" / "last.pt").exists()
    if not torch.cuda.is_available():
        r = invoke(cli, base_args(data, tmp_path / "none", 1) + ["--device", "cuda"])
        assert r.exit_code == 1 and "sees no CUDA GPU" in r.stderr and "--device cpu or auto" in r.stderr
    r = invoke(cli, base_args(data, tmp_path / "auto", 1) + ["--device", "auto"])
    assert r.exit_code == 0, r.stderr
    cfg = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert cfg["device"] == "auto" and json.loads(r.stdout)["steps"] == 1
