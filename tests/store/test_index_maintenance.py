"""rewrite_vectors, filtered search, verify/repair, extra fields and record access."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from index import FaissStore, ValidationError

DIM = 8


def filled(path: Path, metric: str = "cosine", n: int = 40, seed: int = 0) -> tuple[FaissStore, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    store = FaissStore.create(path, DIM, metric, extra={"encoder": "v1"})
    labels = [["cat", "dog", "bird", "fish"][i % 4] for i in range(n)]
    ids = store.add(rng.normal(size=(n, DIM)), labels, [{"i": i} for i in range(n)])
    return store, ids, labels


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_filtered_search_is_exact_and_only_returns_requested_labels(tmp_path: Path, metric: str) -> None:
    store, _ids, _labels = filled(tmp_path / "ix", metric)
    records = list(store.records())
    queries = np.random.default_rng(5).normal(size=(3, DIM))
    wanted = {"dog", "fish"}
    subset = [r for r in records if r.label in wanted]
    mat = np.stack([r.vector for r in subset]).astype(np.float64)
    for q, hits in zip(queries, store.search(queries, 7, labels=sorted(wanted))):
        qq = normalise(q).astype(np.float64) if metric == "cosine" else q.astype(np.float32).astype(np.float64)
        scores = mat @ qq if metric == "cosine" else -((mat - qq) ** 2).sum(axis=1)
        order = np.argsort(-scores)[:7]
        assert [h.id for h in hits] == [subset[j].id for j in order]
        np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=1e-5, atol=1e-5)
        assert {h.label for h in hits} <= wanted
    assert store.search(queries[0], 5, labels=["nope"]) == [[]]
    [only_cats] = store.search(queries[0], 100, labels=["cat"])
    assert len(only_cats) == 10 and {h.label for h in only_cats} == {"cat"}
    store.close()


def test_rewrite_vectors_changes_dim_atomically(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store, ids, labels = filled(path)
    other = FaissStore.open(path, readonly=True)
    assert other.dim == DIM
    new_dim = 5
    new = np.random.default_rng(9).normal(size=(len(ids), new_dim))
    perm = np.random.default_rng(1).permutation(len(ids))  # order of ids does not matter
    store.rewrite_vectors(ids[perm], new[perm], dim=new_dim, extra={"encoder": "v2", "fingerprint": "abc"})
    assert store.dim == new_dim and other.dim == new_dim  # the other object reloads
    assert store.extra == {"encoder": "v2", "fingerprint": "abc"}
    stored = {r.id: r.vector for r in store.records()}
    for i, rid in enumerate(ids):
        np.testing.assert_allclose(stored[int(rid)], normalise(new[i]), atol=1e-6)
    names, protos = other.prototypes()
    assert names == sorted(set(labels)) and protos.shape == (4, new_dim)
    for name, proto in zip(names, protos):
        rows = normalise(new[[j for j, lab in enumerate(labels) if lab == name]])
        np.testing.assert_allclose(proto, normalise(rows.astype(np.float64).mean(axis=0)), atol=1e-5)
    [hits] = other.search(new[3], 1)
    assert hits[0].id == ids[3] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValidationError, match="dimension 5, got 8"):
        other.search(np.ones(DIM), 1)
    store.close()
    other.close()
    with FaissStore.open(path) as again:
        assert again.dim == new_dim and again.verify() == []
        assert json.loads((path / "manifest.json").read_text())["dim"] == new_dim


def test_rewrite_vectors_must_cover_every_record(tmp_path: Path) -> None:
    store, ids, _labels = filled(tmp_path / "ix")
    before = (store.generation, list(store.records()))
    with pytest.raises(ValidationError, match="1 record\\(s\\) missing"):
        store.rewrite_vectors(ids[1:], np.ones((len(ids) - 1, 3)), dim=3)
    with pytest.raises(ValidationError, match="unknown id"):
        store.rewrite_vectors(np.append(ids[1:], 10_000), np.ones((len(ids), 3)), dim=3)
    with pytest.raises(ValidationError, match="duplicates"):
        store.rewrite_vectors(np.append(ids, ids[0]), np.ones((len(ids) + 1, 3)), dim=3)
    with pytest.raises(ValidationError, match="ids but"):
        store.rewrite_vectors(ids, np.ones((2, 3)), dim=3)
    assert (store.generation, list(store.records())) == before and store.dim == DIM
    store.close()


def test_verify_detects_tampered_prototype_sum_and_repair_fixes_it(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store, _ids, _labels = filled(path)
    assert store.verify() == []
    good_labels, good_protos = store.prototypes()
    with sqlite3.connect(path / "meta.sqlite") as conn:
        conn.execute("UPDATE classes SET vsum = ? WHERE label = 'dog'", (np.full(DIM, 7.0).tobytes(),))
        conn.execute("UPDATE classes SET count = 99 WHERE label = 'cat'")
    problems = store.verify()
    assert any("'dog' prototype sum differs" in p for p in problems)
    assert any("'cat' count is 99" in p for p in problems)
    fixed = store.repair()
    assert set(fixed) == set(problems)
    assert store.verify() == []
    labels, protos = store.prototypes()
    assert labels == good_labels
    np.testing.assert_allclose(protos, good_protos, atol=1e-6)
    store.close()


def test_verify_detects_missing_file_and_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store, ids, _labels = filled(path)
    (path / f"vectors-{store.generation}.faiss").unlink()
    with sqlite3.connect(path / "meta.sqlite") as conn:  # a record vanishes behind the store's back
        conn.execute("DELETE FROM records WHERE id = ?", (int(ids[0]),))
    problems = store.verify()
    assert any("missing" in p for p in problems)
    assert any("in-memory FAISS index holds 40" in p for p in problems)
    assert any("'cat' count is 10 but it has 9" in p for p in problems)
    assert store.repair()
    assert store.verify() == [] and store.count() == 39
    store.close()


def test_set_extra_merges_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store, _ids, _labels = filled(path)
    store.set_extra(temperature=0.07, fingerprint="f1")
    store.set_extra(fingerprint="f2")
    extra = store.extra
    extra["mutated"] = True  # a copy: does not leak into the store
    assert store.extra == {"encoder": "v1", "temperature": 0.07, "fingerprint": "f2"}
    store.close()
    assert json.loads((path / "manifest.json").read_text())["extra"]["fingerprint"] == "f2"
    with FaissStore.open(path, readonly=True) as again:
        assert again.extra["temperature"] == 0.07


def test_records_streams_in_id_order_across_pages(tmp_path: Path) -> None:
    store = FaissStore.create(tmp_path / "ix", 2, "l2")
    n = 1100  # more than one page
    vecs = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32)
    labels = ["even" if i % 2 == 0 else "odd" for i in range(n)]
    ids = store.add(vecs, labels)
    store.remove(ids[:10])
    all_records = list(store.records())
    assert [r.id for r in all_records] == ids[10:].tolist()
    np.testing.assert_array_equal(np.stack([r.vector for r in all_records]), vecs[10:])
    odd = list(store.records("odd"))
    assert len(odd) == 545 and all(r.label == "odd" for r in odd)
    assert [r.id for r in odd] == sorted(r.id for r in odd)
    got = store.get([ids[20], ids[15]])
    assert [r.id for r in got] == [ids[20], ids[15]]
    assert got[0].metadata == {} and got[0].created > 0
    store.close()
