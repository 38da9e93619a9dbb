"""PrototypeClassifier is a proper scikit-learn estimator (issue 16, item 13).

Labels keep their identity and type (``1`` and ``'1'`` are two classes), None
labels are refused with a clear ValueError, it works inside ``make_pipeline``
and ``cross_val_score``, and it passes scikit-learn's own ``check_estimator``.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fewshot.classifier import PrototypeClassifier


def blobs(n_per: int = 10, k: int = 3, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 5
    X = np.concatenate([c + rng.normal(size=(n_per, dim)) * 0.3 for c in centres])
    return X, np.repeat(np.arange(k), n_per)


def test_int_and_str_labels_stay_distinct_and_keep_their_types():
    X, codes = blobs(k=3)
    y = np.array([[1, "1", "a"][c] for c in codes], dtype=object)
    clf = PrototypeClassifier(metric="l2").fit(X, y)
    assert len(clf.classes_) == 3
    assert {(type(c), c) for c in clf.classes_} == {(int, 1), (str, "1"), (str, "a")}
    pred = clf.predict(X)
    assert [(type(p), p) for p in pred] == [(type(t), t) for t in y]
    assert clf.score(X, y) == 1.0


def test_plain_int_labels_come_back_as_ints():
    X, y = blobs()
    clf = PrototypeClassifier().fit(X, list(y))
    assert clf.classes_.tolist() == [0, 1, 2]
    assert (clf.predict(X) == y).all()


def test_none_label_is_a_clear_value_error():
    X, _ = blobs(n_per=2, k=2)
    with pytest.raises(ValueError, match="None"):
        PrototypeClassifier().fit(X, ["a", None, "b", "b"])


def test_not_fitted_is_sklearns_error_and_still_a_runtime_error():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted"):
        PrototypeClassifier().predict(np.ones((1, 3)))
    with pytest.raises(RuntimeError):
        PrototypeClassifier().predict(np.ones((1, 3)))


def test_pipeline_and_cross_validation():
    X, y = blobs(n_per=12)
    pipe = make_pipeline(StandardScaler(), PrototypeClassifier(metric="l2"))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() == pytest.approx(1.0)
    labels = np.array(["x", "y", "z"])[y]
    assert (make_pipeline(StandardScaler(), PrototypeClassifier()).fit(X, labels).predict(X) == labels).all()


@parametrize_with_checks([PrototypeClassifier(), PrototypeClassifier(metric="l2")])
def test_sklearn_check_estimator(estimator, check):
    check(estimator)
