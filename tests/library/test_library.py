"""The Python library: FewShotIndex, PrototypeClassifier, inputs and the encoder registry."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot import FewShotIndex, PrototypeClassifier, encoders
from fewshot.errors import EncoderError, InputError
from fewshot.inputs import InputItem, expand_inputs, to_pil
from fewshot.prototypes import class_prototypes, class_sums, prototype_scores, softmax
from helpers import DEFAULT_DIM


def glyph(seed: int, kind: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((28, 28), np.uint8)
    if kind == 0:
        a[12 + rng.integers(-2, 3):16, 4:24] = 255
    elif kind == 1:
        a[4:24, 12 + rng.integers(-2, 3):16] = 255
    else:
        for i in range(4, 24):
            a[i, i - 2:i + 2] = 255
    return a


# --- prototype maths ---------------------------------------------------------------------------
def test_prototypes_by_hand():
    x = np.array([[3, 4], [0, 2], [1, 0]], np.float32)
    classes, protos = class_prototypes(x, ["a", "a", "b"], "cosine")
    assert classes == ["a", "b"]
    mean_a = np.array([0.6 + 0.0, 0.8 + 1.0]) / 2  # mean of the normalised vectors
    np.testing.assert_allclose(protos[0], mean_a / np.linalg.norm(mean_a), atol=1e-6)
    np.testing.assert_allclose(protos[1], [1, 0], atol=1e-6)
    classes, protos = class_prototypes(x, ["a", "a", "b"], "l2")
    np.testing.assert_allclose(protos[0], [1.5, 3.0])
    s = prototype_scores(np.array([[1.5, 3.0]]), protos, "l2")
    np.testing.assert_allclose(s, [[0.0, -(0.5 ** 2 + 3.0 ** 2)]], atol=1e-5)


def test_softmax_temperature():
    p = softmax(np.array([[1.0, 0.0]]), 0.5)
    np.testing.assert_allclose(p, [[np.exp(2) / (np.exp(2) + 1), 1 / (np.exp(2) + 1)]], rtol=1e-6)
    with pytest.raises(ValueError):
        softmax(np.zeros((1, 2)), 0)


def test_class_sums_match_row_order_sums_whatever_the_label_order():
    """The grouped ``reduceat`` adds each class's rows in their original order, as ``np.add.at``
    does, so prototypes are bit-identical to the plain sums however the labels are ordered."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 7)).astype(np.float32)
    labels = rng.choice(["c", "a", "b"], 40)
    classes, inverse = np.unique(labels, return_inverse=True)
    expected = np.zeros((3, 7))
    np.add.at(expected, inverse, x)
    assert np.array_equal(class_sums(x, inverse, np.bincount(inverse)), expected)
    sorted_rows = np.argsort(inverse, kind="stable")
    assert np.array_equal(class_sums(x[sorted_rows], inverse[sorted_rows], np.bincount(inverse)), expected)
    assert class_sums(np.zeros((0, 7), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0, 7)
    _, protos = class_prototypes(x, labels, "l2")
    np.testing.assert_allclose(protos, expected / np.bincount(inverse)[:, None], rtol=1e-6)


def test_prototype_classifier_sklearn_shape():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    X = np.concatenate([c + rng.normal(size=(20, 8)) * 0.3 for c in centres])
    y = np.repeat(["x", "y", "z"], 20)
    clf = PrototypeClassifier(metric="l2").fit(X, y)
    assert clf.score(X, y) == 1.0
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert list(clf.classes_) == ["x", "y", "z"]
    assert PrototypeClassifier().fit(X, y).predict(X[:1])[0] == "x"
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        PrototypeClassifier().fit(np.full((2, 2), np.nan), ["a", "b"])
    with pytest.raises(RuntimeError, match="not fitted"):
        PrototypeClassifier().predict(X)
    with pytest.raises(ValueError, match="temperature"):
        PrototypeClassifier(temperature=-1).fit(X, y)


# --- inputs --------------------------------------------------------------------------------------
def test_inputs_accept_paths_folders_pil_arrays_tensors(tmp_path):
    Image.fromarray(glyph(0, 0)).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(glyph(1, 1)).save(tmp_path / "sub" / "b.png")
    items = expand_inputs([tmp_path, Image.fromarray(glyph(2, 2)), glyph(3, 0), torch.zeros(1, 28, 28)])
    assert len(items) == 5
    for it in items:
        im = to_pil(it)
        assert im.mode in ("L", "RGB") and im.size == (28, 28)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "CMYK", "P", "1"])
def test_image_modes_work(tmp_path, mode):
    base = Image.fromarray(255 - glyph(0, 2))
    if mode == "I;16":
        im = Image.fromarray((np.asarray(base).astype(np.uint16) * 257))
    else:
        im = base.convert(mode)
    ext = ".tif" if mode == "CMYK" else ".png"
    im.save(tmp_path / f"x{ext}")
    out = to_pil(InputItem(tmp_path / f"x{ext}", "x"))
    arr = np.asarray(out.convert("L"))
    assert arr.shape == (28, 28) and arr.min() < 50 and arr.max() > 200


def test_bad_images_are_input_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    buf = io.BytesIO()
    Image.fromarray(glyph(0, 0)).save(buf, format="PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[:40])
    for name in ("empty.png", "text.png", "trunc.png"):
        with pytest.raises(InputError, match=name):
            to_pil(InputItem(tmp_path / name, name))
    with pytest.raises(InputError, match="not found"):
        expand_inputs(tmp_path / "missing.png")
    with pytest.raises(InputError, match="unsupported input"):
        expand_inputs([object()])


# --- encoders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["omniglot-ensemble", "omniglot-conv4"])
def test_shipped_encoder_embeds_consistently(name):
    enc = encoders.load(name)
    assert enc.dim == (DEFAULT_DIM if name == encoders.DEFAULT_IMAGE_ENCODER else 128)
    assert enc.input_kind == "image" and len(enc.fingerprint) == 16
    a = enc.embed([glyph(0, 0), glyph(1, 1)])
    assert a.shape == (2, enc.dim) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(enc.embed([glyph(0, 0)]), a[:1], atol=1e-5)
    # the same drawing as a white-background PNG (as Omniglot ships) embeds the same
    inverted = Image.fromarray(255 - glyph(0, 0))
    np.testing.assert_allclose(enc.embed(inverted), a[:1], atol=1e-4)


def test_encoder_save_load_roundtrip(tmp_path):
    enc = encoders.load("omniglot-conv4")
    path = enc.save(tmp_path / "copy.pt")
    again = encoders.load(str(path))
    assert again.fingerprint == enc.fingerprint
    assert json.loads(path.with_suffix(".json").read_text())["fingerprint"] == enc.fingerprint
    with torch.no_grad():
        next(again.module.parameters()).add_(0.01)
    again.invalidate()
    assert again.fingerprint != enc.fingerprint


def test_torchvision_backbone_from_local_state_dict(tmp_path):
    import torchvision

    sd_path = tmp_path / "mnv3.pt"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), sd_path)
    enc = encoders.load("mobilenet_v3_small", weights=str(sd_path))
    rnd = encoders.load("mobilenet_v3_small", weights="none")
    assert enc.dim == rnd.dim == 576
    out = enc.embed([np.full((40, 30, 3), 128, np.uint8)])
    assert out.shape == (1, 576)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/fewshot_pwned",))


def test_malicious_pickle_is_refused_never_run(tmp_path):
    if os.path.exists("/tmp/fewshot_pwned"):
        os.remove("/tmp/fewshot_pwned")
    bad = tmp_path / "evil.pt"
    torch.save({"config": _Boom(), "state_dict": {}}, bad)
    with pytest.raises(EncoderError, match="refused"):
        encoders.load(str(bad))
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(EncoderError):
        encoders.load(str(raw))
    assert not os.path.exists("/tmp/fewshot_pwned")


def test_not_an_encoder_file(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(EncoderError, match="not a fewshot encoder file"):
        encoders.load(str(p))
    with pytest.raises(EncoderError, match="unknown encoder"):
        encoders.load("nope")


# --- FewShotIndex ------------------------------------------------------------------------------
def test_index_one_shot_add_classify_search_remove(tmp_path):
    idx = FewShotIndex.create(tmp_path / "i")
    idx.add("h", glyph(0, 0))
    idx.add("v", glyph(0, 1))
    idx.add_many([("d", [glyph(0, 2), glyph(5, 2)])])
    assert idx.labels() == {"d": 2, "h": 1, "v": 1}
    preds = idx.classify([glyph(0, 0), glyph(7, 1)], top_k=2)
    assert preds[0].label == "h" and preds[0].score == pytest.approx(1.0, abs=1e-4)
    assert preds[1].label == "v" and len(preds[1].candidates) == 2
    assert 0 < preds[0].probability <= 1
    res = idx.search(glyph(0, 2), k=3)
    assert res[0].neighbors[0].label == "d" and len(res[0].neighbors) == 3
    assert idx.remove("d") == 2
    with pytest.raises(InputError):
        idx.remove("d")
    idx.close()
    with FewShotIndex.open(tmp_path / "i") as again:
        assert again.labels() == {"h": 1, "v": 1}
        assert again.info()["count"] == 2


def test_index_refuses_other_encoder(tmp_path):
    FewShotIndex.create(tmp_path / "i").close()
    enc = encoders.load("omniglot-conv4")
    with torch.no_grad():
        next(enc.module.parameters()).mul_(1.5)
    enc.invalidate()
    with pytest.raises(EncoderError, match="fingerprint"):
        FewShotIndex.open(tmp_path / "i", encoder=enc)


def test_index_rejects_bad_labels_and_keeps_state(tmp_path):
    idx = FewShotIndex.create(tmp_path / "i")
    idx.add("ok", glyph(0, 0))
    before = (tmp_path / "i" / "meta.sqlite").read_bytes()
    for bad in ["", "   ", "x" * 10_000]:
        with pytest.raises((InputError, ValueError)):
            idx.add(bad, glyph(0, 1))
    assert idx.labels() == {"ok": 1}
    assert (tmp_path / "i" / "meta.sqlite").read_bytes() == before
    for label in ["../x", "a/b", "naïve 汉字 ✓"]:
        idx.add(label, glyph(1, 2))
    assert set(idx.labels()) == {"ok", "../x", "a/b", "naïve 汉字 ✓"}
    assert not (tmp_path / "x").exists() and not (tmp_path / "i" / "a").exists()


def test_stored_copies_are_content_addressed(tmp_path):
    src = tmp_path / "my name.png"
    Image.fromarray(glyph(0, 0)).save(src)
    idx = FewShotIndex.create(tmp_path / "i")
    idx.add("a", src)
    idx.add("b", src)
    rec = list(idx.store.records())
    assert rec[0].metadata["blob"] == rec[1].metadata["blob"]
    assert "my name" not in rec[0].metadata["blob"]
    blob = idx.blobs.path(rec[0].metadata["blob"])
    assert blob.read_bytes() == src.read_bytes()
    import hashlib
    assert hashlib.sha256(src.read_bytes()).hexdigest() in blob.name


def test_reindex_to_another_encoder_changes_dim(tmp_path):
    idx = FewShotIndex.create(tmp_path / "i")
    idx.add("h", glyph(0, 0))
    idx.add("v", glyph(0, 1))
    other = encoders.load("mobilenet_v3_small", weights="none")
    out = idx.reindex(other)
    assert out["reembedded"] == 2
    idx.close()
    with FewShotIndex.open(tmp_path / "i", encoder=other) as again:
        assert again.info()["dim"] == 576 and again.info()["fingerprint"] == other.fingerprint
        assert again.classify(glyph(0, 0))[0].label == "h"


def test_help_does_not_import_torch():
    code = "import fewshot.cli, sys; print('torch' in sys.modules)"
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
