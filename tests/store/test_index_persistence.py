"""Persistence: round-trips, generation files, cache rebuilds and damaged indexes."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from index import (
    FORMAT_VERSION,
    CorruptIndexError,
    FaissStore,
    FormatVersionError,
    NotAnIndexError,
    StoreError,
    ValidationError,
    create_store,
    is_index_dir,
    open_store,
)

DIM = 8


def make_store(path: Path, metric: str = "cosine", n: int = 20, seed: int = 0, **kw) -> FaissStore:
    rng = np.random.default_rng(seed)
    store = FaissStore.create(path, DIM, metric, extra={"encoder": "toy"}, **kw)
    labels = ["cat", "dog", "../etc/passwd", "a/b", "猫 ü"]
    store.add(rng.normal(size=(n, DIM)), [labels[i % len(labels)] for i in range(n)],
              [{"i": i, "src": f"img{i}.png"} for i in range(n)])
    return store


def faiss_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.faiss"))


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_close_reopen_gives_identical_results(tmp_path: Path, metric: str) -> None:
    store = make_store(tmp_path / "ix", metric)
    store.remove([3, 4])
    queries = np.random.default_rng(1).normal(size=(4, DIM))
    before = (store.search(queries, 6), store.search_prototypes(queries, 3), store.prototypes(),
              store.labels(), list(store.records()))
    store.close()
    with open_store(tmp_path / "ix", readonly=True) as again:
        after = (again.search(queries, 6), again.search_prototypes(queries, 3), again.prototypes(),
                 again.labels(), list(again.records()))
        assert again.metric == metric and again.dim == DIM and again.extra == {"encoder": "toy"}
    assert after[0] == before[0] and after[1] == before[1]
    assert after[2][0] == before[2][0] and np.array_equal(after[2][1], before[2][1])
    assert after[3] == before[3] and after[4] == before[4]


def test_labels_and_metadata_round_trip_exactly(tmp_path: Path) -> None:
    labels = ["../x", "a/b", "C:\\temp", "猫", "ünïcødé", " padded ", "x" * 200]
    metas = [{"k": [1, 2.5, None, True], "nested": {"s": "é"}}] * len(labels)
    store = FaissStore.create(tmp_path / "ix", DIM)
    ids = store.add(np.eye(DIM)[: len(labels)] + 0.1, labels, metas)
    store.close()
    with FaissStore.open(tmp_path / "ix") as again:
        records = again.get(ids)
        assert [r.label for r in records] == labels
        assert [r.metadata for r in records] == metas
        assert set(again.labels()) == set(labels)
    assert sorted(p.name for p in (tmp_path / "ix").iterdir() if p.is_dir()) == []  # labels never become paths


def test_generation_files_follow_commits(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store = make_store(path)
    assert store.generation == 1
    assert faiss_files(path) == ["prototypes-1.faiss", "vectors-1.faiss"]
    store.set_extra(temperature=0.5)
    assert store.generation == 2
    assert faiss_files(path) == ["prototypes-2.faiss", "vectors-2.faiss"]
    m = manifest(path)
    assert m["format_version"] == FORMAT_VERSION and m["generation"] == 2 and m["backend"] == "faiss"
    assert m["count"] == 20 and m["n_labels"] == 5 and m["dim"] == DIM and m["metric"] == "cosine"
    assert m["extra"] == {"encoder": "toy", "temperature": 0.5}
    assert set(m["files"]) == {"prototypes-2.faiss", "vectors-2.faiss"}
    assert store.remove([999]) == 0 and store.generation == 2  # no-op writes do not bump
    store.close()


def test_autosave_off_writes_files_only_on_flush_and_sqlite_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    store = FaissStore.open(path, autosave=False)
    store.add(np.ones((2, DIM)), ["new", "new"])
    store.remove_label("cat")
    assert faiss_files(path) == ["prototypes-1.faiss", "vectors-1.faiss"]
    expected = store.search(np.ones(DIM), 5)
    # Another process (fresh object) sees the committed state without any flush.
    with FaissStore.open(path, readonly=True) as reader:
        assert reader.generation == 3
        assert reader.search(np.ones(DIM), 5) == expected
        assert "cat" not in reader.labels()
    store.flush()
    assert faiss_files(path) == ["prototypes-3.faiss", "vectors-3.faiss"]
    assert manifest(path)["generation"] == 3
    store.close()


def test_stale_faiss_file_is_detected_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store = make_store(path)
    old = (path / "vectors-1.faiss").read_bytes()
    store.remove_label("dog")
    queries = np.random.default_rng(2).normal(size=(3, DIM))
    expected = store.search(queries, 7)
    store.close()
    # Put an older generation's index under the current name: checksum mismatch.
    (path / "vectors-2.faiss").write_bytes(old)
    with FaissStore.open(path, readonly=True) as reader:
        assert any("checksum mismatch" in p for p in reader.verify())
        assert reader.search(queries, 7) == expected  # rebuilt from SQLite
    assert (path / "vectors-2.faiss").read_bytes() == old  # readers never write
    with FaissStore.open(path) as writer:  # a writer writes the rebuilt cache back
        assert writer.verify() == []
        assert writer.search(queries, 7) == expected


def test_missing_faiss_files_are_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store = make_store(path, "l2")
    expected = store.search(np.zeros(DIM), 4)
    store.close()
    for f in path.glob("*.faiss"):
        f.unlink()
    with FaissStore.open(path) as again:
        assert again.search(np.zeros(DIM), 4) == expected
        assert faiss_files(path) == ["prototypes-1.faiss", "vectors-1.faiss"]
        assert again.verify() == []


def test_stale_manifest_generation_means_rebuild(tmp_path: Path) -> None:
    """A crash between the SQLite commit and the cache write leaves an old manifest."""
    path = tmp_path / "ix"
    store = make_store(path)
    saved_manifest = (path / "manifest.json").read_bytes()
    saved_files = {p.name: p.read_bytes() for p in path.glob("*.faiss")}
    store.add(np.ones(DIM), ["late"])
    expected = store.search(np.ones(DIM), 3)
    store.close()
    for f in path.glob("*.faiss"):
        f.unlink()
    for name, data in saved_files.items():
        (path / name).write_bytes(data)
    (path / "manifest.json").write_bytes(saved_manifest)
    with FaissStore.open(path, readonly=True) as reader:
        assert reader.search(np.ones(DIM), 3) == expected
        assert reader.labels()["late"] == 1


def test_writer_open_removes_orphans_reader_does_not(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    orphans = [path / ".vectors-9.faiss.abc.tmp", path / "vectors-0.faiss", path / "prototypes-7.faiss"]
    for f in orphans:
        f.write_bytes(b"junk")
    FaissStore.open(path, readonly=True).close()
    assert all(f.exists() for f in orphans)
    FaissStore.open(path).close()
    assert not any(f.exists() for f in orphans)
    assert faiss_files(path) == ["prototypes-1.faiss", "vectors-1.faiss"]


def test_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for p in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(NotAnIndexError, match="not a fewshot index.*fewshot init"):
            FaissStore.open(p)
        with pytest.raises(NotAnIndexError):
            open_store(p)
        assert not is_index_dir(p)
    make_store(tmp_path / "ix").close()
    assert is_index_dir(tmp_path / "ix")


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    m = manifest(path)
    m["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatVersionError, match=r"index format 99 is newer than this fewshot supports \(1\); upgrade"):
        FaissStore.open(path)
    with pytest.raises(FormatVersionError):
        open_store(path, readonly=True)


def test_newer_format_version_in_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    (path / "manifest.json").unlink()
    with sqlite3.connect(path / "meta.sqlite") as conn:
        conn.execute("UPDATE meta SET value='2' WHERE key='format_version'")
    with pytest.raises(FormatVersionError, match="index format 2"):
        FaissStore.open(path)


def test_garbage_sqlite_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    for suffix in ("-wal", "-shm"):
        (path / f"meta.sqlite{suffix}").unlink(missing_ok=True)
    (path / "meta.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptIndexError) as info:
        FaissStore.open(path)
    assert "\n" not in str(info.value) and "meta.sqlite" in str(info.value)


def test_manifest_without_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    (path / "meta.sqlite").unlink()
    with pytest.raises(CorruptIndexError, match="no meta.sqlite"):
        FaissStore.open(path)


def test_unreadable_manifest_falls_back_to_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    (path / "manifest.json").write_text("{not json")
    with FaissStore.open(path, readonly=True) as reader:
        assert reader.count() == 20
        assert any("not valid JSON" in p for p in reader.verify())
    with FaissStore.open(path) as writer:
        assert writer.verify() == []
        assert manifest(path)["count"] == 20


def test_create_rules(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hi")
    with pytest.raises(StoreError, match="not empty"):
        FaissStore.create(junk, DIM)
    assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]
    nested = tmp_path / "a" / "b" / "ix"
    FaissStore.create(nested, DIM).close()
    with pytest.raises(StoreError, match="already holds a fewshot index"):
        FaissStore.create(nested, DIM)
    with FaissStore.create(nested, DIM, exist_ok=True) as same:
        assert same.dim == DIM
    with pytest.raises(ValidationError, match="has dim 8"):
        FaissStore.create(nested, DIM + 1, exist_ok=True)
    with pytest.raises(ValidationError, match="metric"):
        FaissStore.create(tmp_path / "m", DIM, "dot")
    with pytest.raises(ValidationError, match="dim"):
        create_store(tmp_path / "d", 0)
    with pytest.raises(ValidationError, match="backend"):
        create_store(tmp_path / "b", DIM, backend="annoy")


def test_readonly_and_closed_stores_refuse_writes(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    make_store(path).close()
    reader = FaissStore.open(path, readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        reader.add(np.ones(DIM), ["x"])
    with pytest.raises(StoreError, match="read-only"):
        reader.set_extra(a=1)
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        reader.count()


def test_copied_index_directory_still_opens(tmp_path: Path) -> None:
    make_store(tmp_path / "ix").close()
    shutil.copytree(tmp_path / "ix", tmp_path / "copy")
    with FaissStore.open(tmp_path / "copy") as copy:
        assert copy.count() == 20 and copy.verify() == []
