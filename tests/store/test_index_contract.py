"""The VectorStore contract, run unchanged on every backend (FAISS, Milvus Lite, Milvus over http).

Answers are checked against a brute-force numpy reference, so the backends are
also checked against each other: same labels, scores within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index import RecordNotFoundError, StoreError, ValidationError
from milvus_support import BACKENDS, make_maker, milvus_http_uri  # noqa: F401 - fixture

DIM = 8
TOL = 1e-5
LABELS = ["cat", "dog", "../x", "猫 ü", 'q"uote\\']


@pytest.fixture(params=BACKENDS)
def stores(request, tmp_path: Path):
    yield from make_maker(request, tmp_path)


def prep(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def ref_scores(q: np.ndarray, mat: np.ndarray, metric: str) -> np.ndarray:
    q, mat = q.astype(np.float64), mat.astype(np.float64)
    if metric == "cosine":
        return mat @ q
    return -((mat - q) ** 2).sum(axis=1)


def filled(stores, metric: str = "cosine", n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    store = stores.create(DIM, metric, extra={"encoder": "toy"})
    vecs = rng.normal(size=(n, DIM))
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    metas = [{"i": i, "src": f"img{i}.png", "ü": [1, None]} for i in range(n)]
    ids = store.add(vecs, labels, metas)
    return store, ids, prep(vecs, metric), labels, metas


def check_search(hits, q, ids, vecs, labels, metas, metric, k, allowed=None):
    keep = [j for j in range(len(ids)) if allowed is None or labels[j] in allowed]
    s = ref_scores(prep(q[None, :], metric)[0], vecs[keep], metric)
    order = np.argsort(-s, kind="stable")[:k]
    assert len(hits) == len(order)
    np.testing.assert_allclose([h.score for h in hits], s[order], rtol=TOL, atol=TOL)
    by_id = {int(ids[j]): j for j in keep}
    for h in hits:
        j = by_id[h.id]
        assert h.label == labels[j] and h.metadata == metas[j]
        assert h.score == pytest.approx(float(ref_scores(prep(q[None, :], metric)[0], vecs[j : j + 1], metric)[0]),
                                        abs=TOL)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_search_and_prototypes_match_reference(stores, metric: str) -> None:
    store, ids, vecs, labels, metas = filled(stores, metric)
    assert ids.dtype == np.int64 and len(set(ids.tolist())) == len(ids)
    assert store.count() == 40 and store.dim == DIM and store.metric == metric
    assert store.labels() == {lab: 8 for lab in sorted(LABELS)}
    queries = np.random.default_rng(1).normal(size=(3, DIM))
    for q, hits in zip(queries, store.search(queries, 6)):
        check_search(hits, q, ids, vecs, labels, metas, metric, 6)
    names, protos = store.prototypes()
    assert names == sorted(LABELS) and protos.dtype == np.float32 and protos.shape == (5, DIM)
    for i, name in enumerate(names):
        mean = vecs[[j for j in range(40) if labels[j] == name]].astype(np.float64).mean(axis=0)
        if metric == "cosine":
            mean /= np.linalg.norm(mean)
        np.testing.assert_allclose(protos[i], mean, rtol=TOL, atol=TOL)
    for q, hits in zip(queries, store.search_prototypes(queries, 3)):
        s = ref_scores(prep(q[None, :], metric)[0], protos, metric)
        order = np.argsort(-s, kind="stable")[:3]
        assert [h.label for h in hits] == [names[j] for j in order]
        np.testing.assert_allclose([h.score for h in hits], s[order], rtol=TOL, atol=TOL)
        assert all(h.id == -1 and h.metadata == {"count": 8} for h in hits)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_top_classes_match_reference(stores, metric: str) -> None:
    """top_classes: the k best classes as arrays, and a softmax over *all* classes."""
    store, _ids, _vecs, _labels, _metas = filled(stores, metric)
    names, protos = store.prototypes()
    queries = np.random.default_rng(1).normal(size=(3, DIM))
    for k in (1, 3, 9):
        m = store.top_classes(queries, k, temperature=0.1)
        assert m.n_classes == 5 and m.scores.shape == m.probabilities.shape == (3, min(k, 5))
        assert m.scores.dtype == np.float32
        for q, labels, scores, probs in zip(queries, m.labels, m.scores, m.probabilities):
            s = ref_scores(prep(q[None, :], metric)[0], protos, metric)
            order = np.argsort(-s, kind="stable")[: min(k, 5)]
            assert labels == [names[j] for j in order]
            np.testing.assert_allclose(scores, s[order], rtol=TOL, atol=TOL)
            z = np.exp((s - s.max()) / 0.1)
            np.testing.assert_allclose(probs, (z / z.sum())[order], rtol=1e-4, atol=1e-6)
    plain = store.top_classes(queries[0], 2)
    assert plain.probabilities is None and plain.labels == [m.labels[0][:2]]
    with pytest.raises(ValidationError):
        store.top_classes(queries, 0)
    with pytest.raises(ValidationError):
        store.top_classes(queries, 2, temperature=0.0)


def test_milvus_answers_equal_faiss_flat(stores, tmp_path: Path) -> None:
    """Same data, same queries: same labels and ids order, scores within 1e-5 of FAISS flat."""
    from index import FaissStore

    store, ids, _vecs, labels, metas = filled(stores, seed=4)
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(40, DIM))
    with FaissStore.create(tmp_path / "flat", DIM, index_type="flat") as flat:
        flat.add(raw, labels, metas)
        queries = np.random.default_rng(5).normal(size=(4, DIM))
        for a, b in zip(store.search(queries, 5), flat.search(queries, 5)):
            assert [h.label for h in a] == [h.label for h in b]
            assert [h.metadata for h in a] == [h.metadata for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=TOL)
        for a, b in zip(store.search_prototypes(queries, 5), flat.search_prototypes(queries, 5)):
            assert [h.label for h in a] == [h.label for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=TOL)


def test_remove_and_remove_label(stores) -> None:
    store, ids, vecs, labels, metas = filled(stores)
    gone = [int(ids[0]), int(ids[1])]
    assert store.remove(gone + [123456789]) == 2
    assert store.remove(gone) == 0  # already gone: nothing removed, whatever the backend reports
    assert store.count() == 38
    assert store.remove_label("dog") == 7
    assert store.remove_label("dog") == 0
    assert "dog" not in store.labels() and store.count() == 31
    keep = [j for j in range(40) if j > 1 and labels[j] != "dog"]
    q = np.random.default_rng(2).normal(size=DIM)
    [hits] = store.search(q, 40)
    assert sorted(h.id for h in hits) == sorted(int(ids[j]) for j in keep)
    check_search(hits[:5], q, ids[keep], vecs[keep], [labels[j] for j in keep], [metas[j] for j in keep],
                 "cosine", 5)
    assert store.labels() == {"../x": 8, "cat": 7, "猫 ü": 8, 'q"uote\\': 8}  # 'cat' lost ids[0]
    assert store.verify() == []


def test_label_filtered_search(stores) -> None:
    store, ids, vecs, labels, metas = filled(stores)
    q = np.random.default_rng(3).normal(size=(2, DIM))
    for allowed in (["猫 ü"], ['q"uote\\', "../x"]):
        for row, hits in zip(q, store.search(q, 4, labels=allowed)):
            assert {h.label for h in hits} <= set(allowed)
            check_search(hits, row, ids, vecs, labels, metas, "cosine", 4, allowed=set(allowed))
    assert store.search(q, 4, labels=["nope"]) == [[], []]
    with pytest.raises(ValidationError):
        store.search(q, 4, labels="cat")


def test_get_and_records_round_trip(stores) -> None:
    store, ids, vecs, labels, metas = filled(stores, n=12)
    got = store.get([int(ids[3]), int(ids[0])])
    assert [r.id for r in got] == [int(ids[3]), int(ids[0])]
    assert got[0].label == labels[3] and got[0].metadata == metas[3]
    np.testing.assert_allclose(got[0].vector, vecs[3], atol=1e-6)
    with pytest.raises(RecordNotFoundError):
        store.get([int(ids[0]), 987654321])
    with pytest.raises(KeyError):
        store.get([987654321])
    recs = list(store.records())
    assert [r.id for r in recs] == sorted(int(i) for i in ids)
    assert [r.id for r in store.records(label="猫 ü")] == [int(ids[j]) for j in range(12) if labels[j] == "猫 ü"]


def test_reopen_gives_identical_results_and_readonly_refuses_writes(stores) -> None:
    store, ids, *_ = filled(stores, metric="l2")
    queries = np.random.default_rng(6).normal(size=(2, DIM))
    before = (store.search(queries, 5), store.search_prototypes(queries, 3), store.labels())
    again = stores.reopen(store, readonly=True)
    assert (again.search(queries, 5), again.search_prototypes(queries, 3), again.labels()) == before
    assert again.extra == {"encoder": "toy"} and again.metric == "l2" and again.dim == DIM
    for write in (lambda: again.add(np.ones(DIM), ["x"]), lambda: again.remove([int(ids[0])]),
                  lambda: again.set_extra(a=1)):
        with pytest.raises(StoreError, match="read-only"):
            write()


def test_rewrite_vectors_changes_dim_atomically_and_merges_extra(stores) -> None:
    store, ids, _vecs, labels, metas = filled(stores, n=10)
    with pytest.raises(ValidationError, match="every record"):
        store.rewrite_vectors(ids[:-1], np.ones((9, 4)), dim=4)
    assert store.dim == DIM and store.count() == 10  # untouched
    new = np.random.default_rng(7).normal(size=(10, 4))
    store.rewrite_vectors(ids, new, dim=4, extra={"encoder": "toy2"})
    assert store.dim == 4 and store.extra == {"encoder": "toy2"}
    assert store.labels() == {lab: 2 for lab in sorted(LABELS)}
    [hits] = store.search(new[3], 1)
    assert hits[0].id == int(ids[3]) and hits[0].label == labels[3] and hits[0].metadata == metas[3]
    again = stores.reopen(store)
    assert again.dim == 4 and again.search(new[3], 1)[0][0].id == int(ids[3])
    assert again.verify() == []


def test_set_extra_persists(stores) -> None:
    store = stores.create(DIM, extra={"encoder": "a"})
    store.set_extra(temperature=0.5, encoder="b")
    assert store.extra == {"encoder": "b", "temperature": 0.5}
    assert stores.reopen(store).extra == {"encoder": "b", "temperature": 0.5}


def test_bad_input_is_refused_the_same_way(stores) -> None:
    store = stores.create(DIM)
    for bad in (np.ones((2, DIM + 1)), np.full((1, DIM), np.nan), np.zeros((1, DIM))):
        with pytest.raises(ValidationError):
            store.add(bad, ["a"] * len(bad))
    with pytest.raises(ValidationError):
        store.add(np.ones((2, DIM)), ["a"])
    with pytest.raises(ValidationError):
        store.add(np.ones((1, DIM)), [""])
    with pytest.raises(ValidationError):
        store.search(np.ones(DIM), 0)
    with pytest.raises(ValidationError):
        store.add(np.ones((1, DIM)), ["a"], [{"x": float("nan")}])
    assert store.count() == 0 and store.search(np.ones(DIM), 3) == [[]]
    assert store.add(np.zeros((0, DIM)), []).tolist() == []


def test_a_new_class_is_visible_at_once_to_another_store_object(stores) -> None:
    """add-then-classify: a second handle on the same index sees the class without waiting."""
    writer = stores.create(DIM)
    writer.add(np.eye(DIM)[:2], ["a", "b"])
    reader = stores.open(writer.path, readonly=True)
    assert [h.label for h in reader.search_prototypes(np.eye(DIM)[1], 1)[0]] == ["b"]
    writer.add(np.eye(DIM)[2], ["new"])
    assert [h.label for h in reader.search_prototypes(np.eye(DIM)[2], 1)[0]] == ["new"]
    assert reader.labels() == {"a": 1, "b": 1, "new": 1}
    writer.remove_label("new")
    assert "new" not in [h.label for h in reader.search_prototypes(np.eye(DIM)[2], 3)[0]]
    assert reader.count() == 2


def test_manifest_names_the_backend(stores) -> None:
    store = stores.create(DIM)
    manifest = json.loads((Path(store.path) / "manifest.json").read_text())
    assert manifest["backend"] == ("milvus" if stores.is_milvus else "faiss")
    assert manifest["dim"] == DIM and manifest["metric"] == "cosine"
    assert store.backend == manifest["backend"]


def test_add_checks_its_expectation_under_the_lock(stores) -> None:
    """``expect``: vectors prepared for another encoder are refused, with nothing written."""
    from index import ConflictError

    writer = stores.create(DIM, extra={"fingerprint": "a"})
    other = stores.open(writer.path)
    other.rewrite_vectors([], np.zeros((0, DIM)), extra={"fingerprint": "b"})  # a reindex by another handle
    with pytest.raises(ConflictError, match="fingerprint is now 'b', not 'a'"):
        writer.add(np.ones((1, DIM)), ["x"], expect={"fingerprint": "a"})
    assert writer.count() == 0
    writer.add(np.ones((1, DIM)), ["x"], expect={"fingerprint": "b"})
    assert other.labels() == {"x": 1}


def test_snapshot_reads_the_state_another_handle_committed(stores) -> None:
    writer = stores.create(DIM, extra={"fingerprint": "a"})
    ids = writer.add(np.eye(DIM)[:2], ["a", "b"])
    reader = stores.open(writer.path, readonly=True)
    with reader.snapshot() as snap:
        assert snap.extra["fingerprint"] == "a"
    writer.rewrite_vectors(ids, np.eye(DIM)[[1, 0]], extra={"fingerprint": "b"})
    with reader.snapshot() as snap:
        assert snap.extra["fingerprint"] == "b"
        assert snap.top_classes(np.eye(DIM)[:1], 1).labels == [["b"]]
        assert [h.label for h in snap.search(np.eye(DIM)[:1], 1)[0]] == ["b"]


def test_remove_deletes_stored_copies_no_record_names(stores) -> None:
    """Copies named by ``metadata["blob"]`` go with the last record naming them; an add needs its copies."""
    from index import BlobStore, MissingBlobError

    store = stores.create(DIM)
    blobs = BlobStore(store.path)
    mine, shared = blobs.put_bytes(b"mine", ".png"), blobs.put_bytes(b"shared", ".png")
    store.add(np.eye(DIM)[:3], ["gone", "gone", "kept"], [{"blob": mine}, {"blob": shared}, {"blob": shared}])
    assert store.remove_label("gone") == 2
    assert not blobs.exists(mine) and blobs.exists(shared)
    with pytest.raises(MissingBlobError):
        store.add(np.eye(DIM)[:1], ["again"], [{"blob": mine}])
    assert store.labels() == {"kept": 1}


def test_rewrite_vectors_fills_records_added_since_the_listing(stores) -> None:
    """A reindex racing with adds and removes: ``fill`` embeds the new records under the lock."""
    store, ids, _vecs, _labels, _metas = filled(stores, n=6)
    other = stores.open(store.path)
    [late] = other.add(np.ones((1, DIM)), ["late"])
    other.remove([int(ids[0])])
    seen = []

    def fill(records):
        seen.extend(r.id for r in records)
        return np.full((len(records), 4), 2.0)

    assert store.rewrite_vectors(ids, np.ones((6, 4)), dim=4, fill=fill) == 6
    assert seen == [int(late)] and store.count() == 6 and store.dim == 4
    assert store.verify() == []
