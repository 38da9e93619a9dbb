"""Metrics by hand, episodic evaluation, and the `fewshot evaluate` command."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fewshot.classifier import PrototypeClassifier
from fewshot.data import LabelledSet, load_dataset
from fewshot.episodes import EpisodeSampler
from fewshot.evaluation import _shift, embed_dataset, evaluate, evaluate_embeddings
from fewshot.metrics import confusion_matrix, mean_ci95, precision_recall_f1
from helpers import cli_with, invoke


# --- metrics, worked by hand ------------------------------------------------------------------
# y_true 0 0 0 1 1 2, y_pred 0 1 0 1 2 2  ->  confusion [[2,1,0],[0,1,1],[0,0,1]]
# precision: 2/2, 1/2, 1/2            -> macro 2/3
# recall:    2/3, 1/2, 1/1            -> macro 13/18
# F1:        0.8, 0.5, 2/3            -> macro 59/90
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 1, 0, 1, 2, 2]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, labels=[0, 1, 2])
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert cm.dtype == np.int64
    # label order is respected, string labels work
    cm2 = confusion_matrix(["b", "a", "a"], ["a", "a", "b"], labels=["b", "a"])
    np.testing.assert_array_equal(cm2, [[0, 1], [1, 1]])


def test_macro_precision_recall_f1_by_hand():
    p, r, f = precision_recall_f1(Y_TRUE, Y_PRED, labels=[0, 1, 2])
    assert p == pytest.approx(2 / 3)
    assert r == pytest.approx(13 / 18)
    assert f == pytest.approx(59 / 90)


def test_metrics_agree_with_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    t, q = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    labels = [0, 1, 2, 3, 4, 5]  # class 5 never occurs: it counts as 0 in the macro average
    p, r, f = precision_recall_f1(t, q, labels)
    assert p == pytest.approx(skm.precision_score(t, q, labels=labels, average="macro", zero_division=0))
    assert r == pytest.approx(skm.recall_score(t, q, labels=labels, average="macro", zero_division=0))
    assert f == pytest.approx(skm.f1_score(t, q, labels=labels, average="macro", zero_division=0))
    np.testing.assert_array_equal(confusion_matrix(t, q, labels), skm.confusion_matrix(t, q, labels=labels))


def test_unpredicted_class_and_bad_input():
    p, r, f = precision_recall_f1([0, 1], [0, 0], labels=[0, 1])  # class 1 never predicted
    assert (p, r) == (pytest.approx(0.25), pytest.approx(0.5))
    assert f == pytest.approx((2 * 0.5 * 1 / 1.5 + 0) / 2)
    with pytest.raises(ValueError, match="not in labels"):
        confusion_matrix([0, 1], [0, 2], labels=[0, 1])
    with pytest.raises(ValueError, match="equal length"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="unique"):
        confusion_matrix([0], [0], labels=[0, 0])


def test_mean_ci95_by_hand():
    m, ci = mean_ci95([0.5, 1.0])
    assert m == pytest.approx(0.75)
    assert ci == pytest.approx(1.96 * np.std([0.5, 1.0], ddof=1) / math.sqrt(2))  # the one convention: ddof=1
    assert mean_ci95([0.9] * 10) == (pytest.approx(0.9), 0.0)


# --- episodes on given embeddings -------------------------------------------------------------
def clustered(n_classes=8, per_class=10, dim=16, noise=0.05, seed=0, n_groups=2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = [f"k{i}" for i in range(n_classes) for _ in range(per_class)]
    emb = np.repeat(centres, per_class, 0) + noise * rng.normal(size=(n_classes * per_class, dim))
    groups = [f"g{int(lab[1:]) % n_groups}" for lab in labels]
    ds = LabelledSet(np.zeros((len(labels), 4, 4), np.uint8), labels, groups)
    return emb.astype(np.float32), ds


def test_separable_clusters_score_perfectly():
    emb, ds = clustered()
    r = evaluate_embeddings(emb, ds, ways=5, shots=1, queries=4, episodes=20, seed=0)
    assert r.accuracy == 1.0 and r.ci95 == 0.0 and r.f1 == 1.0 and r.precision == 1.0
    assert r.confusion_kind == "class" and r.confusion_labels == ds.classes
    assert r.confusion.sum() == 20 * 5 * 4 and np.trace(r.confusion) == r.confusion.sum()
    assert len(r.episode_accuracies) == 20
    d = r.to_dict()
    assert {"accuracy", "ci95", "precision", "recall", "f1", "protocol", "encoder", "fingerprint"} <= set(d)
    assert d["protocol"]["ways"] == 5 and d["protocol"]["queries"] == 4


def test_noise_gives_chance_and_matches_prototype_classifier():
    emb, ds = clustered(noise=50.0, seed=1)  # labels carry almost no signal
    r = evaluate_embeddings(emb, ds, ways=4, shots=2, queries=3, episodes=300, seed=5, within_group=True)
    assert abs(r.accuracy - 0.25) < 4 * r.ci95 + 0.02
    # each episode's accuracy is the same as PrototypeClassifier's (the code `classify` uses)
    sampler = EpisodeSampler(ds.labels, 4, 2, 3, ds.groups, True, 5)
    for i in range(5):
        ep = sampler.episode(i)
        clf = PrototypeClassifier(metric="cosine").fit(emb[ep.support.ravel()], np.repeat(np.arange(4), 2))
        acc = clf.score(emb[ep.query.ravel()], np.repeat(np.arange(4), 3))
        assert r.episode_accuracies[i] == pytest.approx(acc)


def test_many_classes_give_position_confusion():
    emb, ds = clustered(n_classes=40, per_class=3)
    r = evaluate_embeddings(emb, ds, ways=6, shots=1, queries=2, episodes=10, seed=0)
    assert r.confusion_kind == "position" and r.confusion.shape == (6, 6)
    assert r.confusion.sum() == 10 * 6 * 2


def test_evaluate_embeddings_checks_shapes():
    emb, ds = clustered()
    with pytest.raises(ValueError, match="one embedding row per example"):
        evaluate_embeddings(emb[:-1], ds, 5, 1, 1, 1, 0)
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate_embeddings(emb, ds, 5, 1, 1, 0, 0)


def test_shift_moves_pixels_without_wrapping():
    a = np.zeros((1, 4, 4), np.uint8)
    a[0, 0, 3] = 255
    right = _shift(a, 0, 1, fill_edge=False)
    assert right.sum() == 0, "a pixel shifted off the edge is gone, not wrapped round"
    down = _shift(a, 1, 0, fill_edge=False)
    assert down[0, 1, 3] == 255 and down.sum() == 255
    rgb = np.full((1, 3, 3, 3), 7, np.uint8)
    assert (_shift(rgb, -1, 1, fill_edge=True) == 7).all()


# --- with the shipped encoder -----------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder():
    from fewshot import encoders

    return encoders.load(encoders.DEFAULT_IMAGE_ENCODER)


@pytest.fixture(scope="module")
def tiny_digits():
    ds = load_dataset("digits")
    keep = [i for i, lab in enumerate(ds.labels) if lab in "01234"]
    by = {}
    idx = [i for i in keep if by.setdefault(ds.labels[i], []).append(i) or len(by[ds.labels[i]]) <= 6]
    return ds.subset(idx)  # 5 classes x 6 images


def test_embed_dataset_matches_the_index_path(encoder, tiny_digits):
    emb = embed_dataset(encoder, tiny_digits, progress=False)
    direct = encoder.embed(list(tiny_digits.items))  # what FewShotIndex.add/classify compute
    np.testing.assert_allclose(emb, direct, rtol=1e-5, atol=1e-5)
    tta = embed_dataset(encoder, tiny_digits, tta=True, progress=False)
    assert tta.shape == emb.shape and not np.allclose(tta, emb)


def test_evaluate_end_to_end_with_shipped_encoder(encoder, tiny_digits):
    r = evaluate(encoder, tiny_digits, ways=5, shots=1, queries=3, episodes=8, seed=0, progress=False,
                 dataset_name="tiny digits")
    assert 0.0 <= r.accuracy <= 1.0 and r.ci95 >= 0 and 0.0 <= r.f1 <= 1.0
    assert r.accuracy > 0.3, "the shipped encoder is far above chance (0.2) on digits"
    assert r.encoder == encoder.name and r.fingerprint == encoder.fingerprint
    assert r.protocol["dataset"] == "tiny digits" and r.protocol["n_images"] == 30
    with pytest.raises(ValueError, match="at most 5 queries"):
        evaluate(encoder, tiny_digits, ways=5, shots=1, queries=6, episodes=2, seed=0, progress=False)


# --- the CLI ----------------------------------------------------------------------------------
@pytest.fixture()
def cli():
    from fewshot.commands.evaluate import command

    yield from cli_with(command)


def small_folder(root: Path, n_classes=4, per_class=3) -> Path:
    """``root/class<c>/<k>.png``: one random stroke per class, jittered per image, dark on white."""
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True)
        x0, y0, x1, y1 = (int(v) for v in rng.integers(5, 35, 4))
        for k in range(per_class):
            j = int(rng.integers(-2, 3))
            im = Image.new("L", (40, 40), 255)
            ImageDraw.Draw(im).line([(x0 + j, y0), (x1, y1 + j)], fill=0, width=3)
            im.save(root / f"class{c}" / f"{k}.png")
    return root


def test_cli_evaluate_json(cli, tmp_path):
    data = small_folder(tmp_path / "glyphs", n_classes=5, per_class=6)
    r = invoke(cli, ["evaluate", "--data", str(data), "--ways", "5", "--episodes", "3", "--seed", "1", "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"accuracy", "ci95", "precision", "recall", "f1", "protocol", "encoder", "fingerprint"}
    assert 0 <= out["accuracy"] <= 1 and out["ci95"] >= 0
    p = out["protocol"]
    assert (p["ways"], p["shots"], p["queries"], p["episodes"], p["seed"]) == (5, 1, 5, 3, 1)
    assert p["dataset"] == str(data) and p["within_group"] is False and p["fingerprint"] == out["fingerprint"]
    assert p["n_images"] == 30 and out["encoder"] == "omniglot-ensemble"


def test_cli_evaluate_human_plot_and_query_clipping(cli, tmp_path):
    data = small_folder(tmp_path / "glyphs", n_classes=4, per_class=3)
    png = tmp_path / "eval.png"
    r = invoke(cli, ["evaluate", "--data", str(data), "--ways", "3", "--episodes", "4", "--plot", str(png)])
    assert r.exit_code == 0, r.stderr
    assert "only 2 queries per class fit" in r.stderr  # 3 images: 1 shot + 2 queries
    assert "3-way 1-shot, 2 queries/class" in r.stdout and "accuracy" in r.stdout
    assert "5-shot point left out" in r.stderr  # 5 shots do not fit in 3 images
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_evaluate_errors(cli, tmp_path):
    r = invoke(cli, ["evaluate", "--data", str(tmp_path / "nope"), "--json"])
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "dataset not found" in r.stderr
    assert "Traceback" not in r.output and r.stdout == ""
    r = invoke(cli, ["evaluate", "--data", "digits", "--ways", "20", "--episodes", "2"])
    assert r.exit_code == 1 and "only 10 classes" in r.stderr
    r = invoke(cli, ["evaluate", "--data", "digits", "--alphabets", "Greek"])
    assert r.exit_code == 1 and "Omniglot data only" in r.stderr
    r = invoke(cli, ["evaluate", "--data", "digits", "--ways", "1"])
    assert r.exit_code == 2 and r.stderr.startswith("error: ")
