"""Backends for the store contract tests: FAISS, Milvus Lite, and Milvus over http://.

Imported by test modules (not a conftest, so the Milvus machinery only loads
where it is used). Backends:

* ``faiss``: the default store.
* ``milvus-lite``: a Milvus Lite ``*.db`` file in the test's tmp dir; the store
  releases the embedded server (and its file lock) on close.
* ``milvus-http``: a Milvus **server** reached by ``http://``. Either
  ``FEWSHOT_MILVUS_URI`` names one (``.ci/run`` starts the Milvus 2.3.5
  standalone server from its own virtual environment), or a session fixture
  starts one on loopback: the 2.3.5 standalone server when
  ``FEWSHOT_MILVUS_SERVER`` (or ``.venv-milvus/bin/milvus-server``) exists,
  else the Milvus Lite gRPC server (``milvus-lite server``). Skipped, with the
  reason, when neither is available.

Each test gets fresh collections (random names) and drops them at teardown.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["faiss", "milvus-lite", "milvus-http"]


def have_pymilvus() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(uri: str, proc: subprocess.Popen | None, deadline_s: float) -> None:
    from pymilvus import MilvusClient

    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Milvus server exited with code {proc.returncode}")
        try:
            client = MilvusClient(uri=uri, timeout=5)
            client.list_collections(timeout=5)
            client.close()
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(1.0)
    raise RuntimeError(f"Milvus at {uri} did not become ready in {deadline_s:.0f}s: {last}")


def _server_binary() -> str | None:
    explicit = os.environ.get("FEWSHOT_MILVUS_SERVER")
    if explicit:
        return explicit if Path(explicit).exists() else None
    default = ROOT / ".venv-milvus" / "bin" / "milvus-server"
    return str(default) if default.exists() else None


_SERVER: dict = {}  # one server per test process, whichever module asks first


@pytest.fixture(scope="session")
def milvus_http_uri() -> str:
    """URI of a Milvus server on loopback (see the module docstring).

    Test modules import this fixture, and pytest keeps one copy per module, so
    the server itself is a process-wide singleton stopped at exit.
    """
    if not have_pymilvus():
        pytest.skip("pymilvus/milvus-lite not installed (pip install 'fewshot[milvus]')")
    if "error" in _SERVER:
        pytest.fail(_SERVER["error"])
    if "uri" not in _SERVER:
        try:
            _SERVER["uri"] = _start_server()
        except RuntimeError as exc:
            _SERVER["error"] = str(exc)
            pytest.fail(str(exc))
    return _SERVER["uri"]


def _start_server() -> str:
    uri = os.environ.get("FEWSHOT_MILVUS_URI")
    if uri:
        try:
            _wait_ready(uri, None, 60)
        except RuntimeError as exc:
            raise RuntimeError(f"FEWSHOT_MILVUS_URI={uri} is set but unusable: {exc}") from None
        return uri
    data = Path(tempfile.mkdtemp(prefix="fewshot-milvus-server-"))
    port = _free_port()
    binary = _server_binary()
    if binary is not None:
        cmd = [binary, "--data", str(data), "--proxy-port", str(port)]
        ready_s = 180
    else:
        lite = shutil.which("milvus-lite") or str(Path(sys.executable).with_name("milvus-lite"))
        if not Path(lite).exists():
            pytest.skip("no Milvus server: set FEWSHOT_MILVUS_URI, or install milvus==2.3.5 in .venv-milvus, "
                        "or milvus-lite")
        cmd = [lite, "server", "--data-dir", str(data / "lite"), "--host", "127.0.0.1", "--port", str(port)]
        ready_s = 60
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    atexit.register(_stop, proc, data)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(uri, proc, ready_s)
    except RuntimeError as exc:
        raise RuntimeError(f"could not start {' '.join(cmd)}: {exc} (log: {data / 'server.log'})") from None
    return uri


def _stop(proc: subprocess.Popen, data: Path | None = None) -> None:
    """Stop the server we started: its whole process group (milvus-server forks the real binary)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            break
        proc.poll()
        time.sleep(0.5)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.poll()
    if data is not None:
        shutil.rmtree(data, ignore_errors=True)


class StoreMaker:
    """Creates and reopens stores of one backend; closes (and drops) them all at teardown."""

    def __init__(self, backend: str, tmp_path: Path, http_uri: str | None) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.http_uri = http_uri
        self._open: list = []
        self._n = 0

    @property
    def is_milvus(self) -> bool:
        return self.backend != "faiss"

    def store_kwargs(self, path: Path) -> dict:
        """Keyword arguments for create_store / FewShotIndex.create on this backend."""
        if self.backend == "faiss":
            return {"backend": "faiss"}
        if self.backend == "milvus-lite":
            return {"backend": "milvus", "uri": str(path.parent / f"{path.name}.db")}
        return {"backend": "milvus", "uri": self.http_uri}

    def create(self, dim: int, metric: str = "cosine", extra: dict | None = None, name: str | None = None,
               **kw):
        from index import create_store

        self._n += 1
        path = self.tmp_path / (name or f"ix{self._n}")
        store = create_store(path, dim, metric, extra, **self.store_kwargs(path), **kw)
        self._open.append(store)
        return store

    def reopen(self, store, readonly: bool = False):
        from index import open_store

        store.close()
        again = open_store(store.path, readonly=readonly)
        self._open.append(again)
        return again

    def open(self, path: Path, readonly: bool = False):
        from index import open_store

        store = open_store(path, readonly=readonly)
        self._open.append(store)
        return store

    def close_all(self) -> None:
        from index import open_store

        dropped: set[str] = set()
        for store in self._open:
            store.close()
        if self.is_milvus:
            for store in self._open:
                if str(store.path) in dropped or not Path(store.path, "manifest.json").exists():
                    continue
                dropped.add(str(store.path))
                try:
                    with open_store(store.path) as s:
                        s.drop()
                except Exception:  # best effort: the server goes away with the session anyway
                    pass


def make_maker(request, tmp_path: Path) -> Iterator[StoreMaker]:
    """Shared body of the ``stores`` fixtures: request.param is the backend name."""
    backend = request.param
    http_uri = None
    if backend != "faiss":
        if not have_pymilvus():
            pytest.skip("pymilvus/milvus-lite not installed (pip install 'fewshot[milvus]')")
        if backend == "milvus-http":
            http_uri = request.getfixturevalue("milvus_http_uri")
    maker = StoreMaker(backend, tmp_path, http_uri)
    try:
        yield maker
    finally:
        maker.close_all()


Factory = Callable[..., object]
