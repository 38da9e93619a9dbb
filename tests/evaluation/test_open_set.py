"""Open-set evaluation: the episode metrics on synthetic embeddings, and ``evaluate --open-set`` (CLI smoke)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fewshot.episodes import EpisodeSampler
from fewshot.evaluation.oos import open_set_episodes
from helpers import ok


def test_open_set_episodes_on_separable_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 16))
    emb = (np.repeat(centres, 12, 0) + 0.3 * rng.normal(size=(144, 16))).astype(np.float32)
    labels = [f"c{i}" for i in np.repeat(np.arange(12), 12)]
    sampler = EpisodeSampler(labels, 8, 5, 5, seed=0)  # 5 taught + 3 untaught classes
    res = open_set_episodes(emb, sampler, 5, 40, target_accept=0.9, temperature=0.1)
    m = res["metrics"]
    assert m["auroc"] > 0.9 and m["closed_set_accuracy"] > 0.9
    assert m["known_accept_rate"] == pytest.approx(0.9, abs=0.06)
    assert 0 <= m["fpr_at_95_tpr"] <= 1 and m["known_queries"] == 40 * 25 and m["unknown_queries"] == 40 * 15
    assert m["ece_after"] <= m["ece_before"] + 0.02  # the fitted temperature is no worse than an arbitrary one
    assert len(res["plot"]["known_scores"]) == 1000 and res["plot"]["reliability_after"]


def test_evaluate_open_set_cli(omniglot_alphabet: Path, tmp_path: Path) -> None:
    from fewshot.commands.evaluate import _open_set_lines

    png = tmp_path / "os.png"
    out = json.loads(ok("evaluate", "--data", omniglot_alphabet, "--ways", "5", "--shots", "1",
                        "--episodes", "10", "--open-set", "--unknown-ways", "3", "--plot", png, "--json").output)
    o = out["open_set"]
    for key in ("auroc", "fpr_at_95_tpr", "closed_set_accuracy", "open_set_accuracy", "known_accept_rate",
                "ece_before", "ece_after", "calibration_sources"):
        assert key in o
    assert o["unknown_ways"] == 3 and png.stat().st_size > 1000 and out["plot"]["kind"] == "open-set"
    text = _open_set_lines(o)
    assert "AUROC" in text and "ECE" in text and "open-set accuracy" in text
