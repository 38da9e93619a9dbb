"""Random operation sequences checked against a brute-force numpy reference.

The reference keeps every record in a dict and answers searches and
prototypes by direct computation, so any drift in the incremental FAISS /
running-sum bookkeeping shows up as a mismatch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index import FaissStore

DIM = 6
LABEL_POOL = ["a", "b", "c", "../x", "ü/猫"]
TOL = 1e-5


class Reference:
    """Brute-force model of a store."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.rows: dict[int, tuple[str, np.ndarray, dict]] = {}

    def prep(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.metric == "cosine":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)

    def add(self, ids, vecs, labels, metas) -> None:
        for i, v, lab, m in zip(ids, self.prep(vecs), labels, metas):
            self.rows[int(i)] = (lab, v, m)

    def remove(self, ids) -> int:
        return sum(self.rows.pop(int(i), None) is not None for i in ids)

    def remove_label(self, label: str) -> int:
        return self.remove([i for i, (lab, _, _) in list(self.rows.items()) if lab == label])

    def scores(self, q: np.ndarray, ids: list[int]) -> np.ndarray:
        if not ids:
            return np.zeros(0)
        mat = np.stack([self.rows[i][1] for i in ids]).astype(np.float64)
        q = q.astype(np.float64)
        if self.metric == "cosine":
            return mat @ q
        return -((mat - q) ** 2).sum(axis=1)

    def search(self, q: np.ndarray, k: int, labels=None) -> list[tuple[int, float]]:
        ids = sorted(i for i, (lab, _, _) in self.rows.items() if labels is None or lab in labels)
        s = self.scores(q, ids)
        order = sorted(range(len(ids)), key=lambda j: (-s[j], ids[j]))[:k]
        return [(ids[j], float(s[j])) for j in order], dict(zip(ids, s.tolist()))

    def labels(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lab, _, _ in self.rows.values():
            out[lab] = out.get(lab, 0) + 1
        return dict(sorted(out.items()))

    def prototypes(self) -> tuple[list[str], np.ndarray]:
        labels = sorted(self.labels())
        protos = []
        for lab in labels:
            mean = np.mean([v.astype(np.float64) for l2, v, _ in self.rows.values() if l2 == lab], axis=0)
            if self.metric == "cosine":
                mean = mean / np.linalg.norm(mean)
            protos.append(mean)
        return labels, np.array(protos).reshape(len(labels), DIM)


def check_search(store: FaissStore, ref: Reference, queries: np.ndarray, k: int, labels=None) -> None:
    results = store.search(queries, k, labels=labels)
    assert len(results) == len(queries)
    for q, hits in zip(ref.prep(queries), results):
        expected, all_scores = ref.search(q, k, labels)
        assert len(hits) == len(expected)
        got_ids = [h.id for h in hits]
        assert len(set(got_ids)) == len(got_ids)
        assert all(i >= 0 for i in got_ids)
        # Each reported score is the true score of that record, and the score
        # profile equals the reference top-k (robust to exact ties).
        for h in hits:
            assert h.id in all_scores
            assert h.label == ref.rows[h.id][0]
            assert h.metadata == ref.rows[h.id][2]
            assert h.score == pytest.approx(all_scores[h.id], rel=TOL, abs=TOL)
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], rtol=TOL, atol=TOL)
        # Where the reference ranking has clear gaps, ids must match exactly.
        ref_scores = sorted(all_scores.values(), reverse=True)
        gaps = np.diff(ref_scores[: len(expected) + 1])
        if len(gaps) == 0 or np.all(np.abs(gaps) > 1e-4):
            assert got_ids == [i for i, _ in expected]


def check_state(store: FaissStore, ref: Reference) -> None:
    assert store.count() == len(ref.rows)
    assert store.labels() == ref.labels()
    labels, protos = store.prototypes()
    ref_labels, ref_protos = ref.prototypes()
    assert labels == ref_labels
    assert protos.dtype == np.float32 and protos.shape == (len(labels), DIM)
    np.testing.assert_allclose(protos, ref_protos, rtol=TOL, atol=TOL)
    check_prototype_search(store, ref, np.random.default_rng(len(ref.rows)).uniform(-1, 1, size=(2, DIM)))


def check_prototype_search(store: FaissStore, ref: Reference, queries: np.ndarray) -> None:
    ref_labels, ref_protos = ref.prototypes()
    counts = ref.labels()
    for q, hits in zip(ref.prep(queries), store.search_prototypes(queries, len(LABEL_POOL) + 2)):
        p = ref_protos.astype(np.float64)
        scores = p @ q if ref.metric == "cosine" else -((p - q) ** 2).sum(axis=1)
        order = np.argsort(-scores, kind="stable")
        assert len(hits) == len(ref_labels)
        assert sorted(h.label for h in hits) == ref_labels
        np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=TOL, atol=TOL)
        for h in hits:
            assert h.id == -1 and h.metadata == {"count": counts[h.label]}
            assert h.score == pytest.approx(scores[ref_labels.index(h.label)], rel=TOL, abs=TOL)


operation = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 6), st.integers(0, 2**31 - 1)),
    st.tuples(st.just("remove"), st.integers(0, 4), st.integers(0, 2**31 - 1)),
    st.tuples(st.just("remove_label"), st.sampled_from(LABEL_POOL), st.just(0)),
    st.tuples(st.just("search"), st.integers(1, 12), st.integers(0, 2**31 - 1)),
)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(operation, min_size=1, max_size=14), autosave=st.booleans())
def test_random_sequences_match_reference(metric: str, ops, autosave: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        store = FaissStore.create(path, DIM, metric)
        store.close()
        store = FaissStore.open(path, autosave=autosave)
        ref = Reference(metric)
        for op, n, seed in ops:
            rng = np.random.default_rng(seed)
            if op == "add":
                vecs = rng.uniform(-1, 1, size=(n, DIM))
                if n > 1 and seed % 3 == 0:
                    vecs[-1] = vecs[0]  # exact duplicates exercise ties
                labels = [LABEL_POOL[j] for j in rng.integers(0, len(LABEL_POOL), n)]
                metas = [{"seed": seed, "j": j} for j in range(n)]
                ids = store.add(vecs, labels, metas)
                assert ids.dtype == np.int64 and len(ids) == n
                assert not set(ids.tolist()) & set(ref.rows)
                ref.add(ids, vecs, labels, metas)
            elif op == "remove":
                existing = sorted(ref.rows)
                pick = [existing[j] for j in rng.integers(0, len(existing), n)] if existing else []
                pick.append(10_000_000 + seed % 5)  # unknown ids are ignored
                expected = ref.remove(pick)
                assert store.remove(pick) == expected
            elif op == "remove_label":
                expected = ref.remove_label(n)
                assert store.remove_label(n) == expected
            else:
                queries = rng.uniform(-1, 1, size=(1 + seed % 3, DIM))
                check_search(store, ref, queries, n)
                check_search(store, ref, queries, n, labels=[LABEL_POOL[seed % len(LABEL_POOL)], "zz"])
            check_state(store, ref)
        probe = np.random.default_rng(0).uniform(-1, 1, size=(2, DIM))
        before = store.search(probe, 5)
        store.close()
        with FaissStore.open(path, readonly=True) as again:
            check_state(again, ref)
            check_search(again, ref, probe, 5)
            assert again.search(probe, 5) == before
            assert again.verify() == []


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_prototype_search_matches_reference(tmp_path: Path, metric: str) -> None:
    rng = np.random.default_rng(7)
    store = FaissStore.create(tmp_path / "ix", DIM, metric)
    ref = Reference(metric)
    vecs = rng.normal(size=(30, DIM))
    labels = [LABEL_POOL[i % 4] for i in range(30)]
    ref.add(store.add(vecs, labels), vecs, labels, [{}] * 30)
    check_prototype_search(store, ref, rng.normal(size=(3, DIM)))
    store.remove_label(LABEL_POOL[0])
    ref.remove_label(LABEL_POOL[0])
    check_prototype_search(store, ref, rng.normal(size=(3, DIM)))
    store.close()


def test_single_example_class_scores_one_against_itself(tmp_path: Path) -> None:
    store = FaissStore.create(tmp_path / "ix", DIM)
    vec = np.arange(1, DIM + 1, dtype=np.float32) * 3.0
    store.add(vec, ["solo"])
    store.add(-vec, ["other"])
    [[best, second]] = store.search_prototypes(vec, 2)
    assert best.label == "solo" and best.score == pytest.approx(1.0, abs=1e-6)
    assert second.label == "other" and second.score == pytest.approx(-1.0, abs=1e-6)


def test_large_batch_search_uses_threads_and_matches_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = FaissStore.create(tmp_path / "ix", DIM)
    store.add(rng.normal(size=(200, DIM)), ["a"] * 200)
    queries = rng.normal(size=(100, DIM))  # >= 64 queries: multi-threaded path
    batch = store.search(queries, 3)
    single = [store.search(q, 3)[0] for q in queries[:5]]
    for b, s in zip(batch[:5], single):
        assert [h.id for h in b] == [h.id for h in s]
        np.testing.assert_allclose([h.score for h in b], [h.score for h in s], atol=1e-5)
