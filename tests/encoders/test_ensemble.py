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
