"""Open-set calibration: the maths on synthetic scores, and FewShotIndex.calibrate / threshold="auto".

The maths are checked against brute force (prototypes rebuilt without the held-out
example / class) and on synthetic data whose answer is known; the index tests use
the shipped omniglot-conv4 (which ships its own calibration) and a perturbed copy
of it (another fingerprint: no shipped calibration), on FAISS and Milvus Lite.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from fewshot.calibration import (CalibrationError, calibrate_vectors, expected_calibration_error, fit_temperature,
                                 fit_threshold, held_out_scores, load_prior, nll, staleness)
from fewshot.errors import InputError
from fewshot.fewshot_index import FewShotIndex
from fewshot.prototypes import class_prototypes, prototype_scores, softmax
from helpers import glyph_folders, perturbed_copy
from milvus_support import have_pymilvus


def _clusters(rng, n_classes: int, per: int, dim: int = 16, spread: float = 0.35):
    centres = rng.normal(size=(n_classes, dim))
    x = np.repeat(centres, per, 0) + spread * rng.normal(size=(n_classes * per, dim))
    return x.astype(np.float32), [f"c{i}" for i in np.repeat(np.arange(n_classes), per)], centres


# --- maths ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_held_out_scores_equal_brute_force(metric: str) -> None:
    rng = np.random.default_rng(0)
    x, labels, _ = _clusters(rng, 5, 4)
    labels[-1] = "single"  # a one-example class: never a known query, always an unknown one
    ho = held_out_scores(x, labels, metric)
    classes = sorted(set(labels))
    known_rows, unknown = [], []
    for i in range(len(x)):
        keep = [j for j in range(len(x)) if j != i]
        cls, protos = class_prototypes(x[keep], [labels[j] for j in keep], metric)
        if labels[i] in cls:  # leave-one-example-out: scores against every class, own rebuilt without i
            known_rows.append(prototype_scores(x[i:i + 1], protos, metric)[0])
        others = [j for j in range(len(x)) if labels[j] != labels[i]]  # leave-one-class-out
        _, p2 = class_prototypes(x[others], [labels[j] for j in others], metric)
        unknown.append(prototype_scores(x[i:i + 1], p2, metric).max())
    assert len(ho.known_rows) == len(x) - 1 and ho.known_rows.shape[1] == len(classes)
    np.testing.assert_allclose(ho.known_rows, np.array(known_rows), atol=1e-5)
    np.testing.assert_allclose(ho.unknown_best, unknown, atol=1e-5)
    assert [classes[t] for t in ho.known_true] == [lab for lab in labels if lab != "single"]


def test_threshold_is_the_quantile_that_accepts_the_target_share() -> None:
    s = np.random.default_rng(1).normal(size=10_000)
    for target in (0.8, 0.95, 0.99):
        assert (s >= fit_threshold(s, target)).mean() == pytest.approx(target, abs=0.002)
    # weights: two groups weighted equally whatever their sizes
    a, b = np.zeros(100), np.ones(9900)
    w = np.r_[np.full(100, 1 / 100), np.full(9900, 1 / 9900)]
    assert fit_threshold(np.r_[a, b], 0.6, w) == 0.0  # half the weight is at 0: the 0.4 quantile is 0
    assert fit_threshold(np.r_[a, b], 0.6) == 1.0  # unweighted, 99% of the scores are 1
    with pytest.raises(CalibrationError):
        fit_threshold(np.zeros(0))


def test_temperature_recovers_the_one_that_generated_the_labels() -> None:
    rng = np.random.default_rng(2)
    rows = rng.uniform(0.0, 1.0, size=(4000, 6))
    p = softmax(rows, 0.2).astype(np.float64)
    true = np.array([rng.choice(6, p=pi / pi.sum()) for pi in p])
    t = fit_temperature(rows, true)
    assert t == pytest.approx(0.2, rel=0.1)
    assert nll(rows, true, t) <= min(nll(rows, true, 0.1), nll(rows, true, 0.4))


def test_ece_is_small_when_calibrated_and_large_when_overconfident() -> None:
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1.0, 20_000)
    correct = rng.uniform(size=conf.size) < conf
    assert expected_calibration_error(conf, correct) < 0.01
    assert expected_calibration_error(np.full(conf.size, 0.99), correct) > 0.25


def test_calibrated_threshold_accepts_the_target_on_new_queries_of_the_same_classes() -> None:
    rng = np.random.default_rng(4)
    x, labels, centres = _clusters(rng, 10, 30)
    cal = calibrate_vectors(x, labels, target_accept=0.9)
    _, protos = class_prototypes(x, labels)
    fresh = np.repeat(centres, 200, 0) + 0.35 * rng.normal(size=(2000, centres.shape[1]))
    accept = (prototype_scores(fresh, protos).max(1) >= cal.threshold).mean()
    assert accept == pytest.approx(0.9, abs=0.03)
    assert cal.sources["threshold"].startswith("index") and cal.sources["temperature"].startswith("index")
    assert 0 <= cal.false_accept_rate <= 1 and cal.counts["known_queries"] == 300


def test_tiny_inputs_give_clear_errors_without_an_encoder_calibration() -> None:
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(CalibrationError, match="no examples"):
        calibrate_vectors(x[:0], [])
    with pytest.raises(CalibrationError, match="one example"):
        calibrate_vectors(x, ["a", "b", "c"])  # one example per class, no prior
    with pytest.raises(CalibrationError, match="target"):
        calibrate_vectors(x, ["a", "a", "b"], target_accept=1.0)
    one = calibrate_vectors(x[:2], ["a", "a"])  # one class: threshold yes, no false-accept estimate
    assert one.false_accept_rate is None and one.notes and one.sources["temperature"].startswith("unchanged")


def test_staleness() -> None:
    cal = calibrate_vectors(np.eye(4, dtype=np.float32), ["a", "a", "b", "b"], fingerprint="f").to_dict()
    assert staleness(cal, {"a": 2, "b": 2}, "f") == {"stale": False, "reason": None}
    assert staleness(cal, {"a": 2, "b": 3}, "f")["stale"] is True
    assert "encoder" in staleness(cal, {"a": 2, "b": 2}, "g")["reason"]
    assert staleness(None, {}, "f")["stale"] is None


# --- the index ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def glyphs(tmp_path_factory) -> dict[str, list[Path]]:
    return glyph_folders(tmp_path_factory.mktemp("glyphs"), one_jitter=True)


def _backends():
    return ["faiss"] + (["milvus-lite"] if have_pymilvus() else [])


@pytest.mark.parametrize("backend", _backends())
def test_index_calibrates_and_classify_uses_it(tmp_path: Path, glyphs, encoder, backend: str) -> None:
    kw = {} if backend == "faiss" else {"backend": "milvus", "uri": str(tmp_path / "m.db")}
    with FewShotIndex.create(tmp_path / "idx", encoder=encoder, **kw) as idx:
        for name, files in glyphs.items():
            idx.add(name, files[:2])
        with pytest.raises(InputError, match="not calibrated"):
            idx.classify([glyphs["diag"][2]], threshold="auto")
        before = idx.classify([glyphs["diag"][2]])[0]
        cal = idx.calibrate()
        assert load_prior(encoder.fingerprint) is not None
        assert "shifted by encoder omniglot-conv4" in cal["sources"]["threshold"]
        info = idx.info()
        assert info["calibration"]["threshold"] == cal["threshold"] and info["calibration_stale"] is False
        assert idx.temperature == pytest.approx(cal["temperature"])
        p = idx.classify([glyphs["diag"][2]], threshold="auto")[0]
        assert p.unknown is (p.score < cal["threshold"]) and (p.label is None) is p.unknown
        if cal["temperature"] != pytest.approx(before and cal["temperature_before"]):
            assert p.probability != pytest.approx(before.probability, abs=1e-6)  # the calibrated temperature
        assert idx.classify([glyphs["diag"][2]], threshold=-2.0)[0].unknown is False
        assert idx.classify([glyphs["diag"][2]], threshold=2.0)[0].to_dict()["unknown"] is True
        idx.add("extra", glyphs["two"][2:])
        info = idx.info()
        assert info["calibration_stale"] is True and "then 4 classes" in info["calibration_stale_reason"]
        with pytest.warns(UserWarning, match="stale"):
            idx.classify([glyphs["diag"][2]], threshold="auto")
        with pytest.raises(InputError, match="'auto'"):
            idx.classify([glyphs["diag"][2]], threshold="automatic")


def test_tiny_indexes(tmp_path: Path, glyphs, encoder) -> None:
    with FewShotIndex.create(tmp_path / "empty", encoder=encoder) as idx:
        with pytest.raises(InputError, match="no examples yet"):
            idx.calibrate()
        idx.add("only", glyphs["diag"][0])  # one class, one example: the encoder's calibration says it all
        cal = idx.calibrate()
        assert cal["sources"]["threshold"].startswith("encoder omniglot-conv4")
        assert cal["sources"]["false_accept_rate"].startswith("encoder")
        for name, files in glyphs.items():  # one example per class: threshold from the encoder, unknowns from the index
            if name != "diag":
                idx.add(name, files[0])
        cal = idx.calibrate()
        assert cal["counts"]["one_example_classes"] == 4 and cal["sources"]["false_accept_rate"].startswith("index")
        assert cal["sources"]["temperature"].startswith("encoder")
    mine = tmp_path / "mine.pt"
    encoder.save(mine)
    perturbed_copy(encoder, mine)  # another fingerprint: no shipped calibration
    with FewShotIndex.create(tmp_path / "own", encoder=str(mine)) as idx:
        for name, files in glyphs.items():
            idx.add(name, files[0])
        with pytest.raises(InputError, match="add a second example"):
            idx.calibrate()
        assert idx.info()["calibration"] is None
        idx.add("diag", glyphs["diag"][1])
        cal = idx.calibrate()
        assert "no encoder calibration" in cal["sources"]["threshold"]


def test_unknown_data_joins_the_false_accept_estimate(tmp_path: Path, glyphs, encoder) -> None:
    with FewShotIndex.create(tmp_path / "idx", encoder=encoder) as idx:
        for name in ("diag", "hbar"):
            idx.add(name, glyphs[name][:2])
        cal = idx.calibrate(unknown_data=glyphs["two"] + glyphs["vbar"], target_accept=0.9)
        assert cal["counts"]["unknown_data"] == 6 and "unknown data: 6" in cal["sources"]["false_accept_rate"]
        assert cal["target_accept"] == 0.9


def test_reindex_to_another_encoder_makes_the_calibration_unusable(tmp_path: Path, glyphs, encoder) -> None:
    mine = tmp_path / "mine.pt"
    encoder.save(mine)
    perturbed_copy(encoder, mine)
    with FewShotIndex.create(tmp_path / "idx", encoder=encoder) as idx:
        for name, files in glyphs.items():
            idx.add(name, files[:2])
        idx.calibrate()
        idx.reindex(str(mine))
        assert "another encoder" in idx.info()["calibration_stale_reason"]
        with pytest.raises(InputError, match="another encoder"):
            idx.classify([glyphs["diag"][2]], threshold="auto")


def test_many_classes_are_scored_on_a_sample_that_fits_in_memory(monkeypatch) -> None:
    import fewshot.calibration as calib

    monkeypatch.setattr(calib, "MAX_SCORE_CELLS", 300 * 50)  # as if the index had very many classes
    rng = np.random.default_rng(5)
    x, labels, _ = _clusters(rng, 50, 8)
    ho = held_out_scores(x, labels)
    assert len(ho.known_rows) == 300 and len(ho.unknown_best) == 300  # a seeded sample of the 400 examples
    assert calibrate_vectors(x, labels).counts["known_queries"] == 300
