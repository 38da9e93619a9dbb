"""Locking, several writers on one directory, and crash (SIGKILL) safety."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from index import FaissStore, LockTimeoutError

DIM = 4
REPO = Path(__file__).resolve().parents[2]


def hold_lock(path: Path) -> int:
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_lock_timeout_on_open_and_on_write(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    store = FaissStore.create(path, DIM, lock_timeout=0.2)
    store.add(np.ones(DIM), ["a"])
    fd = hold_lock(path)
    try:
        start = time.monotonic()
        with pytest.raises(LockTimeoutError, match="is locked by another writer; try again or raise --lock-timeout"):
            FaissStore.open(path, lock_timeout=0.2)
        assert 0.15 < time.monotonic() - start < 2.0
        with pytest.raises(LockTimeoutError):
            store.add(np.ones(DIM), ["b"])
        # Readers take no lock.
        with FaissStore.open(path, readonly=True) as reader:
            assert reader.labels() == {"a": 1}
        assert store.labels() == {"a": 1}
    finally:
        os.close(fd)
    store.add(np.ones(DIM), ["b"])  # lock released: writes work again
    assert store.labels() == {"a": 1, "b": 1}
    store.close()


def test_two_store_objects_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    a = FaissStore.create(path, DIM)
    b = FaissStore.open(path)
    rng = np.random.default_rng(0)
    ids_a = a.add(rng.normal(size=(3, DIM)), ["x", "y", "x"])
    assert b.count() == 3 and b.labels() == {"x": 2, "y": 1}
    ids_b = b.add(rng.normal(size=(2, DIM)), ["y", "z"])  # b reloads a's write before writing
    assert a.labels() == {"x": 2, "y": 2, "z": 1}
    assert set(ids_a.tolist()).isdisjoint(ids_b.tolist())
    a.remove_label("y")
    b.set_extra(encoder="e2")
    assert a.extra == {"encoder": "e2"}
    for s in (a, b):
        assert s.count() == 3 and s.generation == 4
        [hits] = s.search(rng.normal(size=DIM), 10)
        assert sorted(h.id for h in hits) == sorted([int(ids_a[0]), int(ids_a[2]), int(ids_b[1])])
        _, protos = s.prototypes()
        assert protos.shape == (2, DIM)
    a.close()
    b.close()
    with FaissStore.open(path) as c:
        assert c.verify() == []


def test_autosave_off_writer_and_autosave_writer_interleave(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    FaissStore.create(path, DIM).close()
    lazy = FaissStore.open(path, autosave=False)
    eager = FaissStore.open(path)
    lazy.add(np.ones(DIM), ["lazy"])
    eager.add(np.full(DIM, 2.0), ["eager"])
    lazy.add(np.full(DIM, 3.0), ["lazy"])
    lazy.close()
    eager.close()
    with FaissStore.open(path) as s:
        assert s.labels() == {"eager": 1, "lazy": 2}
        assert s.verify() == []


def _run_child(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_adding_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    FaissStore.create(path, DIM).close()
    code = """
        import numpy as np
        from index import FaissStore
        name = {name!r}
        rng = np.random.default_rng(len(name))
        with FaissStore.open({path!r}, lock_timeout=30) as s:
            for i in range(12):
                s.add(rng.normal(size=(2, {dim})), [name, name], [{{"i": i}}, {{"i": i}}])
                s.search(rng.normal(size={dim}), 3)
        print("done")
    """
    procs = [_run_child(code.format(name=f"p{i}", path=str(path), dim=DIM)) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    with FaissStore.open(path) as s:
        assert s.labels() == {"p0": 24, "p1": 24}
        assert len({r.id for r in s.records()}) == 48
        assert s.generation == 24
        assert s.verify() == []


@pytest.mark.parametrize("delay", [0.0, 0.013])
def test_sigkill_leaves_state_before_or_after_a_write(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "ix"
    FaissStore.create(path, DIM).close()
    code = f"""
        import numpy as np
        from index import FaissStore
        rng = np.random.default_rng(1)
        s = FaissStore.open({str(path)!r})
        n = 0
        while True:
            s.add(rng.normal(size=(3, {DIM})), ["k", "k", "j"])
            n += 3
            print(n, flush=True)
    """
    child = _run_child(code)
    acked = 0
    try:
        while acked < 15:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            acked = int(line)
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    for line in child.stdout.read().split():
        acked = int(line)
    with FaissStore.open(path) as s:
        n = s.count()
        assert n in (acked, acked + 3)  # at most the one in-flight write committed
        assert s.labels() == {"j": n // 3, "k": 2 * n // 3}
        assert s.generation == n // 3
        assert s.verify() == []
        assert not list(path.glob("*.tmp")) and not list(path.glob(".*.tmp"))
