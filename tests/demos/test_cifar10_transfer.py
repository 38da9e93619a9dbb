"""A smoke run of demos/cifar10_transfer.py on a handful of synthetic photos (the real numbers: README)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import jpeg_bytes

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_end_to_end_on_a_tiny_photo_folder(tmp_path):
    classes = ["b1", "b2", "n1", "n2", "n3", "n4", "n5"]
    for ci, c in enumerate(classes):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for i in range(8):
            (tmp_path / "photos" / c / f"{i}.jpg").write_bytes(jpeg_bytes(100 * ci + i))
    png = tmp_path / "plot.png"
    r = subprocess.run([sys.executable, "demos/cifar10_transfer.py", "--data", str(tmp_path / "photos"),
                        "--base", "b1,b2", "--novel", "n1,n2,n3,n4,n5", "--shots", "1", "--queries", "3",
                        "--epochs", "1", "--episodes", "5", "--train-episodes", "1", "--ft-steps", "2",
                        "--scratch-steps", "2", "--threads", "1", "--json", "--plot", str(png)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert 0 <= d["tutorial_10class"]["accuracy"] <= 1 and d["tutorial_10class"]["test_photos"] == 7
    for method in ("a_features", "b_finetune", "c_scratch", "d_pixels"):
        assert set(d[method]) == {"1"}
        for k in ("1",):
            row = d[method][k]
            assert 0 <= row["accuracy"] <= 1 and {"ci95", "precision", "recall", "f1"} <= set(row)
    assert d["a_features"]["1"]["episodes"] == 5 and d["c_scratch"]["1"]["episodes"] == 1
    assert d["encoder"]["name"] == "cifar-cnn" and len(d["load_average"]) == 3
    # the paired comparisons run over the episodes both methods ran (one trained episode here)
    assert d["b_minus_a"]["1"]["episodes"] == d["a_minus_c"]["1"]["episodes"] == 1
    assert abs(d["a_minus_c"]["1"]["difference"]) <= 1 and d["a_minus_c"]["1"]["ci95"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # parts run apart merge into one result: numbers kept, seconds summed
    (tmp_path / "run.json").write_text(r.stdout)
    m = subprocess.run([sys.executable, "demos/cifar10_transfer.py", "--merge", str(tmp_path / "run.json"),
                        str(tmp_path / "run.json"), "--shots", "1", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert m.returncode == 0, m.stderr[-2000:]
    merged = json.loads(m.stdout)
    assert merged["a_features"] == d["a_features"] and merged["seconds"] == round(2 * d["seconds"], 1)


def test_paired_differences_run_over_the_episodes_both_methods_ran(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "demos"))
    from cifar10_transfer import paired_differences

    per = {"a_features": {1: [0.5, 0.6, 0.7, 0.1]}, "c_scratch": {1: [0.4, 0.4]}, "b_finetune": {1: [0.6, 0.6]}}
    d = paired_differences(per, [1])
    # a - c over the 2 trained episodes: 0.1 and 0.2 -> mean 0.15, CI 1.96 * 0.0707 / sqrt(2)
    assert d["a_minus_c"]["1"] == {"difference": 0.15, "ci95": 0.098, "episodes": 2}
    assert d["b_minus_a"]["1"]["difference"] == 0.05
    assert paired_differences({"a_features": {1: [0.5]}}, [1]) == {}


def test_choosing_the_finetune_recipe_sees_only_base_classes(tmp_path):
    classes = ["b1", "b2", "b3", "b4", "b5"]  # no novel class exists here: the choice cannot touch one
    for ci, c in enumerate(classes):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for i in range(30):
            (tmp_path / "photos" / c / f"{i}.jpg").write_bytes(jpeg_bytes(100 * ci + i))
    r = subprocess.run([sys.executable, "demos/cifar10_transfer.py", "--data", str(tmp_path / "photos"),
                        "--base", ",".join(classes), "--novel", ",".join(classes), "--left-out", "b1",
                        "--select-finetune", "1e-4:2,1e-3:2:nomirror", "--shots", "1", "--queries", "2",
                        "--retrain-epochs", "1", "--train-episodes", "2", "--threads", "1", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    assert [(x["shots"], x["setting"]) for x in rows] == [(1, "1e-4:2"), (1, "1e-3:2:nomirror")]
    for x in rows:
        assert x["episodes"] == 2 and 0 <= x["a"] <= 1 and 0 <= x["b"] <= 1
        assert abs(x["b_minus_a"] - (x["b"] - x["a"])) < 1e-3
