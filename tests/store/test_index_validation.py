"""Every input rule raises ValidationError with a message that says what to fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import FaissStore, RecordNotFoundError, StoreError, ValidationError

DIM = 4


@pytest.fixture
def store(tmp_path: Path) -> FaissStore:
    s = FaissStore.create(tmp_path / "ix", DIM)
    s.add(np.eye(DIM), ["a", "b", "c", "d"])
    yield s
    s.close()


def test_validation_error_is_a_value_error_and_store_error() -> None:
    assert issubclass(ValidationError, ValueError) and issubclass(ValidationError, StoreError)


@pytest.mark.parametrize(
    "vectors, message",
    [
        (np.ones((2, 8)), "expected vectors of dimension 4, got 8"),
        (np.ones(8), "expected vectors of dimension 4, got 8"),
        (np.ones((1, 2, 4)), "must be 2-D"),
        (np.array([[1, 2, 3, 4], [1, 2, 3, np.nan]] + [[1, 1, 1, 1]] * 2), r"NaN or inf \(row 1\)"),
        (np.array([[1, 1, 1, 1]] * 3 + [[np.inf, 0, 0, 0]]), r"NaN or inf \(row 3\)"),
        (np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]), "row 1 is all zeros"),
        (np.array([["a", "b", "c", "d"]] * 4), "numeric"),
    ],
)
def test_bad_vectors(store: FaissStore, vectors, message: str) -> None:
    n = len(vectors) if np.ndim(vectors) >= 2 else 1
    with pytest.raises(ValidationError, match=message):
        store.add(vectors, ["x"] * n)
    assert store.count() == 4


def test_huge_values_cosine_normalises_l2_refuses(tmp_path: Path) -> None:
    with FaissStore.create(tmp_path / "cos", DIM) as s:
        [rid] = s.add(np.full(DIM, 1e300), ["big"])
        [rid2] = s.add(np.full(DIM, 1e-310), ["tiny"])
        for r in s.get([rid, rid2]):
            np.testing.assert_allclose(r.vector, np.full(DIM, 0.5), atol=1e-7)
    with FaissStore.create(tmp_path / "l2", DIM, "l2") as s:
        with pytest.raises(ValidationError, match="too large for float32"):
            s.add(np.full(DIM, 1e300), ["big"])


def test_zero_vector_is_fine_for_l2(tmp_path: Path) -> None:
    with FaissStore.create(tmp_path / "l2", DIM, "l2") as s:
        s.add(np.zeros(DIM), ["origin"])
        [[hit]] = s.search(np.ones(DIM), 1)
        assert hit.label == "origin" and hit.score == pytest.approx(-4.0)


def test_one_dimensional_vector_is_one_row(store: FaissStore) -> None:
    ids = store.add(np.array([1.0, 2, 3, 4]), ["row"])
    assert len(ids) == 1 and store.get(ids)[0].label == "row"


def test_length_mismatches(store: FaissStore) -> None:
    with pytest.raises(ValidationError, match="2 vectors but 1 labels"):
        store.add(np.ones((2, DIM)), ["a"])
    with pytest.raises(ValidationError, match="2 vectors but 3 metadata"):
        store.add(np.ones((2, DIM)), ["a", "b"], [{}, {}, {}])
    with pytest.raises(ValidationError, match="one entry per vector"):
        store.add(np.ones((2, DIM)), "ab")


@pytest.mark.parametrize(
    "label, message",
    [
        ("", "label must not be empty"),
        ("   ", "label must not be empty"),
        ("x" * 201, "at most 200 characters"),
        ("tab\there", "control characters"),
        ("nul\x00", "control characters"),
        ("del\x7f", "control characters"),
        ("new\nline", "control characters"),
        (3, "label must be a str"),
        (None, "label must be a str"),
    ],
)
def test_bad_labels(store: FaissStore, label, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        store.add(np.ones(DIM), [label])
    assert store.count() == 4


@pytest.mark.parametrize("label", ["../x", "a/b", "/abs", "猫", "ünï", "x" * 200, "C:\\dir"])
def test_path_like_and_unicode_labels_are_allowed(store: FaissStore, label: str) -> None:
    [rid] = store.add(np.ones(DIM), [label])
    assert store.get([rid])[0].label == label
    assert store.labels()[label] == 1
    assert [h.label for h in store.search(np.ones(DIM), 1, labels=[label])[0]] == [label]


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"x": object()}, "JSON-serialisable"),
        ({"x": float("nan")}, "JSON-serialisable"),
        (["not", "a", "dict"], "must be a dict"),
        ("str", "must be a dict"),
    ],
)
def test_bad_metadata(store: FaissStore, meta, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        store.add(np.ones(DIM), ["a"], [meta])


@pytest.mark.parametrize("k, message", [(0, "k must be >= 1"), (-3, "k must be >= 1"), (1.5, "integer"),
                                        (True, "integer"), ("3", "integer")])
def test_bad_k(store: FaissStore, k, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        store.search(np.ones(DIM), k)
    with pytest.raises(ValidationError, match=message):
        store.search_prototypes(np.ones(DIM), k)


def test_k_larger_than_count_returns_fewer_hits(store: FaissStore) -> None:
    [hits] = store.search(np.ones(DIM), 100)
    assert len(hits) == 4 and all(h.id > 0 for h in hits)
    [hits] = store.search(np.ones(DIM), 100, labels=["a", "b"])
    assert sorted(h.label for h in hits) == ["a", "b"]
    [protos] = store.search_prototypes(np.ones(DIM), 100)
    assert len(protos) == 4


def test_bad_queries(store: FaissStore) -> None:
    with pytest.raises(ValidationError, match="expected queries of dimension 4, got 3"):
        store.search(np.ones(3), 1)
    with pytest.raises(ValidationError, match="queries row 0 is all zeros"):
        store.search(np.zeros(DIM), 1)
    with pytest.raises(ValidationError, match="NaN"):
        store.search_prototypes(np.full(DIM, np.nan), 1)
    with pytest.raises(ValidationError, match="single str"):
        store.search(np.ones(DIM), 1, labels="a")


def test_bad_ids(store: FaissStore) -> None:
    with pytest.raises(ValidationError, match="integers"):
        store.remove([1.5])
    with pytest.raises(ValidationError, match="single int"):
        store.get(3)
    with pytest.raises(RecordNotFoundError, match="no record with id 999") as info:
        store.get([1, 999])
    assert isinstance(info.value, KeyError) and isinstance(info.value, StoreError)


def test_bad_extra(store: FaissStore) -> None:
    with pytest.raises(ValidationError, match="JSON-serialisable"):
        store.set_extra(encoder=object())
    with pytest.raises(ValidationError, match="extra must be a dict"):
        FaissStore.create(store.path.parent / "other", DIM, extra=["x"])


def test_bad_lock_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="lock timeout"):
        FaissStore.create(tmp_path / "ix", DIM, lock_timeout=-1)


def test_empty_inputs_are_no_ops(store: FaissStore) -> None:
    generation = store.generation
    assert store.add(np.zeros((0, DIM)), []).tolist() == []
    assert store.remove([]) == 0
    assert store.remove_label("never-seen") == 0
    assert store.search(np.zeros((0, DIM)), 3) == []
    assert store.search(np.ones(DIM), 3, labels=[]) == [[]]
    assert store.generation == generation
