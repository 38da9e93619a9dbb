"""FaissStore.top_classes: the fast classification path (blocks, BLAS vs FAISS, ties, empty)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import FaissStore, faiss_util
from index import prototypes as proto_mod

DIM = 16


def reference(queries: np.ndarray, protos: np.ndarray, names: list[str], k: int, t: float):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = q.astype(np.float64) @ protos.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    z = np.exp((s - s.max(axis=1, keepdims=True)) / t)
    p = z / z.sum(axis=1, keepdims=True)
    return ([[names[j] for j in row] for row in order], np.take_along_axis(s, order, 1),
            np.take_along_axis(p, order, 1))


@pytest.mark.parametrize("n_queries", [1, 5, faiss_util.SMALL_BATCH + 7])
def test_blocks_and_engines_agree_with_reference(tmp_path: Path, monkeypatch, n_queries: int) -> None:
    rng = np.random.default_rng(0)
    with FaissStore.create(tmp_path / "ix", DIM) as store:
        store.add(rng.normal(size=(300, DIM)), [f"c{i % 60:02d}" for i in range(300)])
        names, protos = store.prototypes()
        queries = rng.normal(size=(n_queries, DIM))
        monkeypatch.setattr(proto_mod, "SCORE_BLOCK", 60 * 4)  # 4 queries per block: several blocks
        for t in (None, 0.05):
            m = store.top_classes(queries, 5, temperature=t)
            labels, scores, probs = reference(queries, protos, names, 5, t or 1.0)
            assert m.labels == labels and m.n_classes == 60
            np.testing.assert_allclose(m.scores, scores, atol=1e-5)
            if t is None:
                assert m.probabilities is None
            else:
                np.testing.assert_allclose(m.probabilities, probs, rtol=1e-4, atol=1e-7)
        # search_prototypes is the same ranking, as Hits with counts
        hits = store.search_prototypes(queries, 5)
        assert [[h.label for h in row] for row in hits] == labels
        assert all(h.metadata == {"count": 5} for row in hits for h in row)


def test_ties_are_ordered_by_label_on_every_path(tmp_path: Path) -> None:
    with FaissStore.create(tmp_path / "ix", 4) as store:
        # three classes with the same prototype, added in non-alphabetical order
        store.add(np.tile([1.0, 0, 0, 0], (3, 1)), ["zeta", "alpha", "mid"])
        store.add(np.array([[0, 1.0, 0, 0]]), ["other"])
        one = np.array([1.0, 0.1, 0, 0])
        many = np.tile(one, (faiss_util.SMALL_BATCH + 1, 1))
        for q in (one, many):
            for t in (None, 0.1):
                m = store.top_classes(q, 3, temperature=t)
                assert all(row == ["alpha", "mid", "zeta"] for row in m.labels)
                if t is not None:  # equal scores, equal probabilities
                    assert np.allclose(m.probabilities[0], m.probabilities[0][0])


def test_empty_store_and_empty_queries(tmp_path: Path) -> None:
    with FaissStore.create(tmp_path / "ix", 4) as store:
        m = store.top_classes(np.ones(4), 3, temperature=0.1)
        assert m.n_classes == 0 and m.labels == [[]] and m.scores.shape == (1, 0)
        store.add(np.eye(4), list("abcd"))
        m = store.top_classes(np.zeros((0, 4)), 3)
        assert m.labels == [] and m.scores.shape[0] == 0 and m.n_classes == 4


def test_sees_a_class_added_by_another_connection(tmp_path: Path) -> None:
    with FaissStore.create(tmp_path / "ix", 4) as writer:
        writer.add(np.eye(4)[:2], ["a", "b"])
        reader = FaissStore.open(tmp_path / "ix", readonly=True)
        try:
            assert reader.top_classes(np.eye(4)[2], 1).labels == [["a"]]  # a tie at 0: by label
            writer.add(np.eye(4)[2:3], ["new"])
            assert reader.top_classes(np.eye(4)[2], 1).labels == [["new"]]
            assert reader.top_classes(np.eye(4)[2], 1, temperature=0.1).labels == [["new"]]
        finally:
            reader.close()


@pytest.mark.parametrize("n", [3, 50, 5000, 40_000, 40_000 + 517])
@pytest.mark.parametrize("k", [1, 5, 12, 20])
def test_top_k_equals_a_full_sort(n: int, k: int) -> None:
    """Every top-k route (argsort, argpartition, k argmax, chunk maxima): the k best, best first."""
    rng = np.random.default_rng(n + k)
    scores = rng.normal(size=(7, n)).astype(np.float32)
    scores[3, -1] = 50.0  # a winner in the ragged tail
    scores[4, :] = 1.0  # all tied: column order
    before = scores.copy()
    k = min(k, n)
    cols, vals = proto_mod.top_k(scores, k)
    assert np.array_equal(scores, before), "scores must be left unchanged"
    assert np.array_equal(vals, np.take_along_axis(scores, cols, axis=1))
    assert np.array_equal(vals, -np.sort(-scores, axis=1)[:, :k]), "the k best, in descending order"
    assert cols[4].tolist() == sorted(cols[4].tolist()), "equal scores in column order"
    if k <= 16 and 4 * k < n:  # the argmax routes take the first of equal scores (argpartition: any)
        assert cols[4].tolist() == list(range(k))
    assert all(len(set(row)) == k for row in cols.tolist()), "k distinct columns"
