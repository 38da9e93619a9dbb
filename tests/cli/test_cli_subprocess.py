"""The installed `fewshot` script, as a user runs it, on real Omniglot drawings."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest


def fewshot_exe() -> list[str]:
    exe = Path(sys.executable).with_name("fewshot")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("fewshot")
    if not found:
        pytest.skip("the fewshot console script is not installed (pip install -e .)")
    return [found]


def sh(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEWSHOT_NO_PROGRESS": "1"}
    p = subprocess.run(fewshot_exe() + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_one_shot_omniglot_flow(tmp_path, omniglot_alphabet):
    chars = sorted(p for p in omniglot_alphabet.iterdir() if p.is_dir())[:20]
    assert len(chars) == 20
    idx = tmp_path / "idx"
    sh("init", idx)
    supports, queries, truth = [], [], []
    one_each = tmp_path / "support"
    for c in chars:
        drawings = sorted(c.glob("*.png"))
        (one_each / c.name).mkdir(parents=True)
        shutil.copy(drawings[0], one_each / c.name / drawings[0].name)
        supports.append(drawings[0])
        for q in drawings[1:4]:
            queries.append(q)
            truth.append(c.name)
    # one class per sub-folder, one drawing each; then one more class through --label
    sh("add", idx, "--from-folder", one_each)
    sh("remove", idx, "--label", chars[-1].name)
    sh("add", idx, "--label", chars[-1].name, supports[-1])
    info = json.loads(sh("info", idx, "--json").stdout)
    assert info["count"] == 20 and info["n_labels"] == 20

    out = json.loads(sh("classify", idx, *supports, "--json").stdout)
    assert [o["label"] for o in out] == [c.name for c in chars]
    assert all(o["score"] == pytest.approx(1.0, abs=1e-4) for o in out)

    preds = json.loads(sh("classify", idx, *queries, "--json", "--top-k", "3").stdout)
    assert len(preds) == len(queries)
    for p, q in zip(preds, queries):
        assert p["input"] == str(q)
        assert set(p) == {"input", "label", "unknown", "score", "probability", "candidates"}
        assert isinstance(p["label"], str) and -1.0 <= p["score"] <= 1.0 + 1e-6 and 0 <= p["probability"] <= 1
        assert len(p["candidates"]) == 3
    acc = sum(p["label"] == t for p, t in zip(preds, truth)) / len(truth)
    # 20-way 1-shot within one held-out alphabet: chance is 5%
    assert acc >= 0.6, acc
    (tmp_path / "accuracy.txt").write_text(f"{acc:.4f}\n")


def test_help_is_fast_and_torch_free():
    code = ("import sys, time; t = time.time(); from fewshot.cli import cli; "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules; print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 0.5
    t = time.time()
    p = sh("--help")
    assert "classify" in p.stdout
    assert time.time() - t < 5  # generous: process start on a loaded CI machine


def test_error_line_and_exit_code(tmp_path):
    p = sh("info", tmp_path / "missing", check=False)
    assert p.returncode == 1
    assert p.stderr.startswith("error:") and len(p.stderr.strip().splitlines()) == 1
    assert p.stdout == ""
