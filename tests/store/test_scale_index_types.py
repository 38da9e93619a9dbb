"""Index types at small scale: recall against exact search, removals, filters, rebuilds, checkpoints.

Sizes are tiny (a few thousand clustered vectors) so the suite takes seconds;
the same code paths run at 1M vectors in benchmarks/knn_lookup.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from index import FaissStore, ValidationError, checkpoint, faiss_util
from index.faiss_store import FILTER_EXACT_FRACTION
from index.index_config import IndexConfig

DIM = 16


def clustered(n: int, seed: int = 0, centres: int = 50) -> np.ndarray:
    """Embedding-like data: points around random centres (uniform noise makes ANN meaningless)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, DIM))
    return c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, DIM))


def exact_topk(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None):
    v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    qq = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qq @ v.T
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    top = np.argsort(-s, axis=1)[:, :k]
    return [set(ids[row].tolist()) for row in top]


def recall(store, queries, truth, k, **kw) -> float:
    got = store.search(queries, k, **kw)
    return float(np.mean([len({h.id for h in hits} & t) / len(t) for hits, t in zip(got, truth)]))


@pytest.fixture
def data():
    vecs = clustered(4000)
    labels = [f"l{i % 100}" for i in range(4000)]  # 100 labels: each is a 1% filter
    return vecs, labels, clustered(20, seed=9)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf", "ivfpq"])
def test_each_type_finds_the_true_neighbours_and_survives_removal(tmp_path: Path, data, index_type: str) -> None:
    vecs, labels, queries = data
    store = FaissStore.create(tmp_path / "ix", DIM, index_type=index_type)
    ids = store.add(vecs, labels)
    assert store.index_info()["kind"] == index_type
    truth = exact_topk(vecs, ids, queries, 10)
    r = recall(store, queries, truth, 10)
    assert r >= (1.0 if index_type == "flat" else 0.95), r
    gone = ids[::3]
    assert store.remove(gone) == len(gone)
    keep = np.ones(len(ids), bool)
    keep[::3] = False
    got = store.search(queries, 10)
    assert not {h.id for hits in got for h in hits} & set(gone.tolist())
    truth = exact_topk(vecs[keep], ids[keep], queries, 10)
    assert recall(store, queries, truth, 10) >= (1.0 if index_type == "flat" else 0.9)
    assert store.verify() == []
    store.close()
    with FaissStore.open(tmp_path / "ix", readonly=True) as again:
        assert again.index_info()["kind"] == index_type and again.count() == keep.sum()
        assert not {h.id for hits in again.search(queries, 10) for h in hits} & set(gone.tolist())


@pytest.mark.parametrize("index_type", ["hnsw", "ivf", "ivfpq"])
@pytest.mark.parametrize("fraction", [0.01, 0.1, 1.0])
def test_filtered_recall_at_1_10_100_percent(tmp_path: Path, data, index_type: str, fraction: float) -> None:
    """Selective filters go to an exact scan of the matching ids; recall stays >= 0.95."""
    vecs, labels, queries = data
    store = FaissStore.create(tmp_path / "ix", DIM, index_type=index_type)
    ids = store.add(vecs, labels)
    wanted = [f"l{i}" for i in range(int(round(100 * fraction)))]
    allowed = np.isin(np.array(labels), wanted)
    truth = exact_topk(vecs, ids, queries, 10, allowed)
    r = recall(store, queries, truth, 10, labels=wanted)
    assert r >= 0.95, (index_type, fraction, r)
    for hits in store.search(queries, 10, labels=wanted):
        assert {h.label for h in hits} <= set(wanted)
    store.close()


def test_selective_filters_take_the_exact_path(tmp_path: Path, data, monkeypatch) -> None:
    vecs, labels, queries = data
    store = FaissStore.create(tmp_path / "ix", DIM, index_type="hnsw")
    store.add(vecs, labels)
    calls = {"exact": 0, "ann": 0}
    vi = store._state.vectors
    real_exact, real_ann = vi.search_exact, vi.search
    monkeypatch.setattr(vi, "search_exact", lambda *a, **k: calls.__setitem__("exact", calls["exact"] + 1)
                        or real_exact(*a, **k))
    monkeypatch.setattr(vi, "search", lambda *a, **k: calls.__setitem__("ann", calls["ann"] + 1)
                        or real_ann(*a, **k))
    store.search(queries, 5, labels=["l1"])  # 1%
    assert calls == {"exact": 1, "ann": 0}
    store.search(queries, 5, labels=[f"l{i}" for i in range(int(100 * FILTER_EXACT_FRACTION) + 10)])
    assert calls == {"exact": 1, "ann": 1}
    store.close()


def test_hnsw_removals_are_tombstones_until_compaction(tmp_path: Path, data) -> None:
    vecs, labels, queries = data
    store = FaissStore.create(tmp_path / "ix", DIM, index_type="hnsw")
    ids = store.add(vecs, labels)
    store.remove(ids[:100])
    info = store.index_info()
    assert info["tombstones"] == 100 and info["live"] == 3900
    store.remove(ids[100:1000])  # > 20% dead: rebuilt (synchronously at this size)
    info = store.index_info()
    assert info["kind"] == "hnsw" and info["tombstones"] == 0 and info["live"] == 3000
    assert not {h.id for hits in store.search(queries, 10) for h in hits} & set(ids[:1000].tolist())
    store.close()


def test_auto_switches_to_hnsw_in_the_background_without_blocking_queries(tmp_path: Path, monkeypatch) -> None:
    import index.faiss_state as fst
    import index.faiss_store as fs

    monkeypatch.setattr(fst, "SYNC_BUILD_MAX", 100)  # force the background path at test size
    vecs = clustered(3000)
    store = FaissStore.create(tmp_path / "ix", DIM, index_params={"auto_threshold": 1000})
    store.add(vecs[:900], ["a"] * 900)
    assert store.index_info()["kind"] == "flat"
    gate = threading.Event()
    real_build = fs.VectorIndex.build

    def slow_build(*a, **k):
        gate.wait(10)
        return real_build(*a, **k)

    monkeypatch.setattr(fs.VectorIndex, "build", staticmethod(slow_build))
    ids = store.add(vecs[900:], ["b"] * 2100)  # crosses the threshold: build starts, add returns
    assert store.building and store.index_info()["kind"] == "flat"
    t0 = time.perf_counter()
    hits = store.search(vecs[:3], 5)  # served by the flat index meanwhile
    assert time.perf_counter() - t0 < 2 and all(len(h) == 5 for h in hits)
    late = store.add(vecs[:7], ["late"] * 7)  # written during the build: replayed onto the new index
    store.remove(ids[:5])
    gate.set()
    store.wait_for_build()
    info = store.index_info()
    assert info["kind"] == "hnsw" and info["live"] == 3000 + 7 - 5
    assert store.search(vecs[0], 1, labels=["late"])[0][0].id == int(late[0])
    assert not {h.id for h in store.search(vecs[900:905], 20)[0]} & set(ids[:5].tolist())
    store.close()
    with FaissStore.open(tmp_path / "ix", readonly=True) as again:
        assert again.index_info()["kind"] == "hnsw" and again.count() == 3002


def test_reindex_type_changes_and_search_params(tmp_path: Path, data) -> None:
    vecs, labels, queries = data
    store = FaissStore.create(tmp_path / "ix", DIM, index_type="flat")
    ids = store.add(vecs, labels)
    truth = exact_topk(vecs, ids, queries, 10)
    for kind in ("ivf", "hnsw", "ivfpq", "flat"):
        store.set_index_type(kind)
        assert store.index_info()["kind"] == kind
        assert recall(store, queries, truth, 10) >= (1.0 if kind == "flat" else 0.9)
    store.set_index_type("ivf", nprobe=1)
    assert store.index_info()["nprobe"] == 1
    low = recall(store, queries, truth, 10)
    high = recall(store, queries, truth, 10, nprobe=10_000)  # every list: exact for IVF-Flat
    assert high == 1.0 and high >= low
    with pytest.raises(ValidationError, match="index type"):
        store.set_index_type("annoy")
    with pytest.raises(ValidationError, match="unknown index parameter"):
        store.set_index_type("hnsw", efsearch=3)
    store.close()


def test_large_index_checkpoints_lag_and_are_replayed(tmp_path: Path, monkeypatch) -> None:
    """Above EAGER_MAX_VECTORS an add does not rewrite the cache files; openers replay the difference."""
    monkeypatch.setattr(checkpoint, "EAGER_MAX_VECTORS", 100)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_MIN_CHANGES", 50)
    vecs = clustered(600)
    store = FaissStore.create(tmp_path / "ix", DIM, index_type="hnsw")
    ids = store.add(vecs[:500], ["a"] * 500)
    base = store.index_info()["checkpoint_generation"]
    files = sorted(p.name for p in (tmp_path / "ix").glob("*.faiss"))
    new = store.add(vecs[500:510], ["b"] * 10)
    store.remove(ids[:3])
    assert sorted(p.name for p in (tmp_path / "ix").glob("*.faiss")) == files  # no rewrite
    info = store.index_info()
    assert info["checkpoint_generation"] == base and info["pending"] == 13
    assert store.verify() == []  # a lagging checkpoint is not a problem
    expected = store.search(vecs[500:503], 5)
    with FaissStore.open(tmp_path / "ix", readonly=True) as reader:  # replays 10 adds + 3 removals
        assert reader.count() == 507 and reader.search(vecs[500:503], 5) == expected
    store.close()  # below the checkpoint threshold: still no rewrite on close
    assert sorted(p.name for p in (tmp_path / "ix").glob("*.faiss")) == files
    with FaissStore.open(tmp_path / "ix") as writer:
        writer.add(vecs[510:600], ["c"] * 90)  # 103 pending >= 50: checkpoint
        assert writer.index_info()["pending"] == 0
        assert writer.search(vecs[500], 1)[0][0].id == int(new[0])


def test_readonly_open_memory_maps_large_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint, "MMAP_MIN_BYTES", 0)
    vecs = clustered(2000)
    with FaissStore.create(tmp_path / "ix", DIM, index_type="hnsw") as store:
        store.add(vecs, ["a"] * 2000)
    writer = FaissStore.open(tmp_path / "ix", autosave=False)
    added = writer.add(vecs[:2], ["new", "new"])  # uncheckpointed: the reader replays it into a side index
    with FaissStore.open(tmp_path / "ix", readonly=True) as reader:
        info = reader.index_info()
        assert info["memory_mapped"] and info["kind"] == "hnsw" and info["side"] == 2
        assert reader.search(vecs[0], 1, labels=["new"])[0][0].id == int(added[0])
        writer.remove(added[:1])
        assert [h.id for h in reader.search(vecs[0], 5, labels=["new"])[0]] == [int(added[1])]
    writer.close()


def test_thread_rule_is_one_thread_for_small_batches() -> None:
    assert faiss_util.threads_for(1) == 1
    assert faiss_util.threads_for(faiss_util.SMALL_BATCH - 1) == 1
    assert faiss_util.threads_for(1000) == faiss_util._MAX_THREADS
    import faiss

    before = faiss.omp_get_max_threads()
    with faiss_util.threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before


def test_index_config_rules() -> None:
    cfg = IndexConfig()
    assert cfg.kind_for(10) == "flat" and cfg.kind_for(cfg.auto_threshold + 1) == "hnsw"
    assert cfg.nlist_for(1_000_000) == 2000 and cfg.nlist_for(100) == 2
    assert cfg.nprobe_for(2000) == 62 and cfg.pq_m_for(128) == 32 and cfg.pq_m_for(100) == 25
    assert IndexConfig.from_json(cfg.updated(ef_search=7).to_json()).ef_search == 7
    with pytest.raises(ValidationError):
        IndexConfig(ef_search=0)
