"""Run `fewshot serve` as a child process on a free loopback port (tests, benchmarks, scripts).

    with serve_process(["my_index"]) as (proc, url):
        ...  # requests to url; SIGTERM and a bounded wait on exit
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Sequence


@contextlib.contextmanager
def serve_process(index_dirs: Sequence[str | os.PathLike], *args: str, env: dict | None = None,
                  cwd: str | os.PathLike | None = None, stop_timeout: float = 30.0
                  ) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start the server (``python -m fewshot.cli serve ... --port 0 --json``), yield (process, URL).

    The URL is printed once the indexes are open and the socket listens, so the first request
    never races the start. On exit: SIGTERM (in-flight requests finish), then a kill after
    ``stop_timeout`` seconds; stderr stays readable on the process for checks.
    """
    full_env = dict(os.environ if env is None else env, FEWSHOT_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "fewshot.cli", "serve", *map(str, index_dirs), "--port", "0", "--json", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=stop_timeout)
            raise RuntimeError(f"fewshot serve did not start: {proc.stderr.read()[-2000:]}")
        yield proc, json.loads(line)["url"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def repo_env(root: str | Path) -> dict:
    """This environment with ``root`` first on PYTHONPATH (run a checkout's code) and no token set."""
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("FEWSHOT_TOKEN", None)
    return env
