"""The server as a process: a kill -9 in the middle of writes leaves the index as the crash guarantee says."""
from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

from fewshot.fewshot_index import FewShotIndex  # noqa: E402
from fewshot.serve.process import repo_env, serve_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _post(url: str, body: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except OSError:  # the server died under us
        return -1


def test_sigkill_during_writes_leaves_a_healthy_index_with_whole_additions(tmp_path, omniglot_alphabet):
    from fewshot.check import check

    path = tmp_path / "killed"
    FewShotIndex.create(path).close()
    pngs = sorted(omniglot_alphabet.rglob("*.png"))[:40]
    acked: list[str] = []
    with serve_process([path], env=repo_env(ROOT), cwd=ROOT) as (proc, url):
        def writer() -> None:
            for i, png in enumerate(pngs):  # two examples per class, one request each: all or nothing
                ex = [{"label": f"c{i}", "image_base64": base64.b64encode(p.read_bytes()).decode()}
                      for p in (png, pngs[(i + 1) % len(pngs)])]
                if _post(f"{url}/v1/indexes/killed/examples", {"examples": ex}) != 200:
                    return
                acked.append(f"c{i}")

        t = threading.Thread(target=writer)
        t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 5 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        t.join(timeout=60)
    assert len(acked) >= 5
    report = check(path, sample=0)
    assert report["healthy"], report["remaining"]
    with FewShotIndex.open(path, readonly=True) as idx:
        labels = idx.labels()
    assert set(acked) <= set(labels)  # every acknowledged addition survived
    assert all(n == 2 for n in labels.values())  # and none is half there


def test_sigterm_lets_the_request_in_flight_finish(tmp_path, omniglot_alphabet):
    path = tmp_path / "graceful"
    with FewShotIndex.create(path) as idx:
        idx.add("a", sorted((omniglot_alphabet / "character01").glob("*.png"))[0])
    pngs = sorted(omniglot_alphabet.rglob("*.png"))[:64]
    body = {"inputs": [{"image_base64": base64.b64encode(p.read_bytes()).decode()} for p in pngs]}
    status: list[int] = []
    with serve_process([path], env=repo_env(ROOT), cwd=ROOT) as (proc, url):
        t = threading.Thread(target=lambda: status.append(_post(f"{url}/v1/indexes/graceful/classify", body)))
        t.start()
        time.sleep(0.2)  # the 64-image batch is running (or done) when the signal comes
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=60)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert status == [200]
    assert "Traceback" not in proc.stderr.read()
