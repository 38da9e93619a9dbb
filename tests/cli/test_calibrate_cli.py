"""``fewshot calibrate``, ``classify --threshold auto`` and the ``unknown`` field, ``info`` staleness (CLI)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_one_line_error, fails_cleanly, glyph_folders, ok, run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, list[Path]]:
    return glyph_folders(tmp_path_factory.mktemp("imgs"), one_jitter=True)


def test_calibrate_then_classify_auto(tmp_path: Path, images) -> None:
    idx = tmp_path / "idx"
    ok("init", idx)
    fails_cleanly(idx, "calibrate", idx, match="no examples yet")
    r = run("classify", idx, images["diag"][0], "--threshold", "auto")
    assert "error: " in r.stderr and r.exit_code == 1  # an empty index has no classes; still one clean line
    for name, files in images.items():
        ok("add", idx, "--label", name, files[0], files[1])
    fails_cleanly(idx, "classify", idx, images["diag"][2], "--threshold", "auto", match="not calibrated")
    cal = json.loads(ok("calibrate", idx, "--json").output)
    assert set(cal["sources"]) == {"threshold", "temperature", "false_accept_rate"}
    assert cal["counts"]["classes"] == 4 and cal["counts"]["examples"] == 8 and cal["target_accept"] == 0.95
    assert "T" in cal["date"] and cal["fingerprint"]
    info = json.loads(ok("info", idx, "--json").output)
    assert info["calibration"]["threshold"] == cal["threshold"] and info["calibration_stale"] is False
    assert info["temperature"] == pytest.approx(cal["temperature"])
    assert "calibrated" in ok("info", idx).output
    preds = json.loads(ok("classify", idx, *(f[2] for f in images.values()), "--threshold", "auto",
                          "--json").output)
    for p in preds:
        assert p["unknown"] is (p["score"] < cal["threshold"]) and (p["label"] is None) is p["unknown"]
    preds = json.loads(ok("classify", idx, images["diag"][2], "--threshold", "1.5", "--json").output)
    assert preds[0]["unknown"] is True and preds[0]["label"] is None and preds[0]["candidates"]
    msg = assert_one_line_error(run("classify", idx, images["diag"][2], "--threshold", "sometimes"), code=2)
    assert "auto" in msg
    ok("add", idx, "--label", "new", images["two"][2])
    info = json.loads(ok("info", idx, "--json").output)
    assert info["calibration_stale"] is True and "changed since" in info["calibration_stale_reason"]
    r = ok("classify", idx, images["diag"][2], "--threshold", "auto")
    assert "warning: " in r.stderr and "stale" in r.stderr
    text = ok("calibrate", idx, "--target-accept", "0.9").output
    assert "threshold" in text and "90%" in text


def test_calibrate_one_example_per_class_uses_the_encoder_calibration(tmp_path: Path, images) -> None:
    idx = tmp_path / "idx"
    ok("init", idx)
    for name, files in images.items():
        ok("add", idx, "--label", name, files[0])
    cal = json.loads(ok("calibrate", idx, "--json", "--unknown-data", str(images["two"][1])).output)
    assert cal["sources"]["threshold"].startswith("encoder omniglot-ensemble")
    assert cal["counts"]["unknown_data"] == 1
    fails_cleanly(idx, "calibrate", idx, "--target-accept", "1.0", match="target-accept", code=2)
