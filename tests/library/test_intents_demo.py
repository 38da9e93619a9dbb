"""demos/intents_one_shot.py runs end to end (small: text-gru, one domain); its numbers come from its defaults."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLINC = ROOT.parent / "shared" / "data" / "clinc150" / "clinc150_dev.json"


@pytest.mark.skipif(not CLINC.exists(), reason=f"CLINC150 data not found at {CLINC} (see ../shared/data/README.md)")
def test_the_intents_demo_runs_end_to_end():
    r = subprocess.run([sys.executable, "demos/intents_one_shot.py", "--encoder", "text-gru", "--domains", "meta",
                        "--worst", "2", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["intents"] == 15 and d["queries"] == 15 * 30 and d["domains"] == ["meta"]
    assert len(d["support"]) == 15 and all(isinstance(t, str) and t for t in d["support"].values())
    assert d["accuracy"] > 1 / 15  # one example per intent beats chance
    assert len(d["worst"]) == 2 and all(0 <= w["accuracy"] <= d["accuracy"] for w in d["worst"].values())


def test_the_intents_demo_says_when_the_data_is_missing(tmp_path):
    r = subprocess.run([sys.executable, "demos/intents_one_shot.py", "--data", str(tmp_path / "none.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: CLINC150 data not found")
