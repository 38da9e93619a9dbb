"""Milvus-specific behaviour the backend is designed around (see index/milvus_store.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from index import LockTimeoutError, StoreError, ValidationError, create_store, open_store
from milvus_support import ROOT, _free_port, have_pymilvus, milvus_http_uri  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(not have_pymilvus(), reason="pymilvus/milvus-lite not installed "
                                                           "(pip install 'fewshot[milvus]')")
DIM = 8


def child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_lite_file_is_single_process_and_close_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store = create_store(path, DIM, backend="milvus", uri=str(tmp_path / "one.db"))
    store.add(np.eye(DIM)[:2], ["a", "b"])
    probe = f"""
        from index import open_store
        try:
            with open_store({str(path)!r}, readonly=True) as s:
                print("OPENED", s.count())
        except Exception as e:
            print("REFUSED", type(e).__name__, e)
    """
    out = child(probe).stdout
    assert "REFUSED LockTimeoutError" in out and "single-process" in out, out
    store.close()  # stops the embedded server: the file lock is free again
    out = child(probe).stdout
    assert "OPENED 2" in out, out


def test_two_handles_in_one_process_share_the_lite_file(tmp_path: Path) -> None:
    store = create_store(tmp_path / "ix", DIM, backend="milvus", uri=str(tmp_path / "two.db"))
    other = open_store(tmp_path / "ix", readonly=True)
    store.add(np.eye(DIM)[0], ["a"])
    store.close()  # the other handle keeps the embedded server alive
    assert other.labels() == {"a": 1}
    other.close()


def test_lite_uri_must_be_a_db_file_and_token_is_never_stored(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"\.db"):
        create_store(tmp_path / "ix", DIM, backend="milvus", uri=str(tmp_path / "data"))
    assert not (tmp_path / "ix").exists()
    store = create_store(tmp_path / "iy", DIM, backend="milvus", token="user:secret")
    manifest = (tmp_path / "iy" / "manifest.json").read_text()
    assert "secret" not in manifest and json.loads(manifest)["uri"] == "milvus.db"  # relative: movable
    store.close()


def test_unreachable_server_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    t = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach Milvus at http://127.0.0.1"):
        create_store(tmp_path / "ix", DIM, backend="milvus", uri=f"http://127.0.0.1:{_free_port()}", timeout=2)
    assert time.monotonic() - t < 30
    assert not (tmp_path / "ix").exists()


def test_faiss_options_are_refused_for_milvus_and_vice_versa(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="only for the milvus backend"):
        create_store(tmp_path / "f", DIM, backend="faiss", uri="http://127.0.0.1:19530")


def test_server_counts_exclude_deleted_rows_and_unknown_ids(milvus_http_uri: str, tmp_path: Path) -> None:
    """A server reports deleted rows in its statistics and 'deletes' ids that never existed."""
    store = create_store(tmp_path / "ix", DIM, backend="milvus", uri=milvus_http_uri)
    try:
        ids = store.add(np.random.default_rng(0).normal(size=(6, DIM)), ["a", "a", "b", "b", "c", "c"])
        assert store.remove([int(ids[0]), int(ids[1]), 42]) == 2
        assert store.count() == 4 and store.labels() == {"b": 2, "c": 2}
        assert store.remove([int(ids[0])]) == 0
        assert store.verify() == []
    finally:
        store.drop()
        store.close()


def test_read_your_writes_across_processes(milvus_http_uri: str, tmp_path: Path) -> None:
    """`fewshot add` in one process, then classify in another: the new class is seen at once.

    The reader learns of the write only through the index directory's session
    file (the mutation timestamp), not through pymilvus' per-process cache.
    """
    path = tmp_path / "ix"
    store = create_store(path, DIM, backend="milvus", uri=milvus_http_uri)
    store.add(np.eye(DIM)[:3], ["a", "b", "c"])
    store.close()
    reader = open_store(path, readonly=True)
    assert reader.search_prototypes(np.eye(DIM)[5], 1)[0][0].label in {"a", "b", "c"}
    out = child(f"""
        import numpy as np
        from index import open_store
        with open_store({str(path)!r}) as s:
            s.add(np.eye({DIM})[5], ["new"])
        print("ADDED")
    """)
    assert "ADDED" in out.stdout, out.stdout + out.stderr
    assert reader.search_prototypes(np.eye(DIM)[5], 1)[0][0].label == "new"
    assert reader.labels()["new"] == 1
    reader.close()
    with open_store(path) as s:
        s.drop()
