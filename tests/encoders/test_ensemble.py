"""ImageEnsemble: image encoders with one preprocessing, used as one (the default, omniglot-ensemble)."""
from __future__ import annotations

import numpy as np
import pytest

from fewshot import encoders
from fewshot.encoders import builtin
from fewshot.encoders.ensemble import ImageEnsemble
from fewshot.errors import EncoderError


def _drawings() -> list[np.ndarray]:
    """Three little line drawings: a bar, the same bar a pixel lower, and a cross."""
    bar = np.zeros((28, 28), dtype=np.uint8)
    bar[6:22, 13:15] = 255
    cross = bar.copy()
    cross[13:15, 6:22] = 255
    return [bar, np.roll(bar, 1, axis=0), cross]


@pytest.fixture(scope="module")
def members():
    return encoders.load("omniglot-resnet12"), encoders.load("omniglot-conv4")


def _cos(m: np.ndarray) -> np.ndarray:
    u = m / np.linalg.norm(m, axis=1, keepdims=True)
    return u @ u.T


def test_the_ensemble_cosine_is_the_weighted_mean_of_the_members(members):
    images = _drawings()
    ens = ImageEnsemble("e", members, weights=(3, 1))
    vecs = ens.embed(images)
    assert vecs.shape == (3, 256 + 128) and ens.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    want = 0.75 * _cos(members[0].embed(images)) + 0.25 * _cos(members[1].embed(images))
    np.testing.assert_allclose(vecs @ vecs.T, want, atol=1e-5)
    assert ens.temperature == pytest.approx(0.75 * members[0].temperature + 0.25 * members[1].temperature)


def test_the_fingerprint_follows_members_and_weights(members):
    a, b = ImageEnsemble("e", members), ImageEnsemble("other name", members)
    assert a.fingerprint == b.fingerprint  # the name computes nothing
    assert ImageEnsemble("e", members, weights=(2, 1)).fingerprint != a.fingerprint
    assert ImageEnsemble("e", members[::-1]).fingerprint != a.fingerprint


def test_members_must_be_image_encoders_that_read_images_alike(members):
    with pytest.raises(EncoderError, match="at least two"):
        ImageEnsemble("e", members[:1])
    with pytest.raises(EncoderError, match="one preprocessing"):
        ImageEnsemble("e", [members[0], encoders.load("cifar-cnn")])
    with pytest.raises(EncoderError, match="image encoders"):
        ImageEnsemble("e", [members[0], encoders.load("omniglot-strokes-gru")])
    with pytest.raises(EncoderError, match="weight"):
        ImageEnsemble("e", members, weights=(1, -1))


def test_the_shipped_default_is_the_pinned_ensemble(members):
    ens = encoders.load()
    assert encoders.DEFAULT_IMAGE_ENCODER == ens.name == "omniglot-ensemble"
    assert ens.fingerprint == builtin.OMNIGLOT_ENSEMBLE_FINGERPRINT
    assert [m.fingerprint for m in ens.members] == [builtin.OMNIGLOT_RESNET12_FINGERPRINT,
                                                   builtin.OMNIGLOT_CONV4_V3_FINGERPRINT]
    with pytest.raises(EncoderError, match="takes no weights"):
        encoders.load("omniglot-ensemble", weights="x.pt")


def test_finetune_names_the_members_and_an_index_fine_tunes_its_conv4_member(tmp_path):
    """The ensemble is two networks: --encoder omniglot-ensemble is a one-line error that names them;
    fine-tuning a default image index on its own examples starts from the Conv-4 member."""
    from helpers import assert_one_line_error, run

    from fewshot.fewshot_index import FewShotIndex

    msg = assert_one_line_error(run("finetune", "--encoder", "omniglot-ensemble", "--data", "digits",
                                    "--steps", "1", "--out", str(tmp_path / "f.pt")))
    assert "omniglot-resnet12" in msg and "omniglot-conv4" in msg
    with FewShotIndex.create(tmp_path / "idx") as idx:
        for k, image in enumerate(_drawings()):
            idx.add(f"c{k}", [image, np.roll(image, 1, axis=1)])
        res = idx.finetune("index", out=tmp_path / "ft.pt", steps=2, val_fraction=0, progress=False)
        assert res.encoder.arch == "conv" and res.encoder.dim == 128
        assert idx.info()["fingerprint"] == res.encoder.fingerprint and idx.info()["dim"] == 128
