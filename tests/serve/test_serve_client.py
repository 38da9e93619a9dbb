"""`fewshot classify/search/add/info --server URL`: the same output as the local command, without torch."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

from click.testing import CliRunner  # noqa: E402

from fewshot.cli import cli  # noqa: E402
from fewshot.fewshot_index import FewShotIndex  # noqa: E402
from fewshot.serve.process import repo_env, serve_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory, omniglot_alphabet):
    path = tmp_path_factory.mktemp("client") / "korean"
    with FewShotIndex.create(path) as idx:
        idx.add_many([(f"k{i}", [omniglot_alphabet / f"character{i:02d}"]) for i in range(1, 4)])
    with serve_process([path], env=repo_env(ROOT), cwd=ROOT) as (proc, url):
        yield path, url


def run(args: list[str], **env: str) -> tuple[int, str]:
    r = CliRunner(env=env or None).invoke(cli, args)
    return r.exit_code, r.stdout


def test_classify_search_info_print_what_the_local_command_prints(served, omniglot_alphabet):
    path, url = served
    queries = [str(omniglot_alphabet / "character01"), str(sorted((omniglot_alphabet / "character05").glob("*"))[0])]
    for args in (["classify", str(path), *queries, "--top-k", "2", "--threshold", "0.8"],
                 ["classify", str(path), *queries, "--json"],
                 ["search", str(path), queries[1], "-k", "3", "--json"],
                 ["search", str(path), queries[1]],
                 ["info", str(path), "--json"], ["info", str(path)]):
        local = run(args)
        assert local[0] == 0
        assert run(args + ["--server", url]) == local, args
        assert run(args, FEWSHOT_SERVER=url) == local, args


def test_add_through_the_server_then_errors_are_one_line(served, omniglot_alphabet):
    path, url = served
    files = [str(p) for p in sorted((omniglot_alphabet / "character06").glob("*.png"))[:2]]
    code, out = run(["add", str(path), "--label", "remote", *files, "--server", url, "--json"])
    assert code == 0 and json.loads(out)["labels"] == {"remote": 2}
    assert "remote" in json.loads(run(["info", str(path), "--json"])[1])["labels"]  # on disk, for every reader
    r = CliRunner().invoke(cli, ["remove", str(path), "--label", "remote"])
    assert r.exit_code == 0
    r = CliRunner().invoke(cli, ["classify", "nope", files[0], "--server", url])
    assert r.exit_code == 1 and r.stderr.startswith("error: server: no index named 'nope'")
    r = CliRunner().invoke(cli, ["classify", str(path), files[0], "--server", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot reach the server")


def test_the_client_path_imports_no_torch_and_is_quick(served, omniglot_alphabet):
    path, url = served
    q = str(sorted((omniglot_alphabet / "character02").glob("*.png"))[3])
    code = ("import sys; from fewshot.cli import cli; "
            f"rc = cli.main(['classify', {str(path)!r}, {q!r}, '--server', {url!r}, '--json'], standalone_mode=False); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], env=repo_env(ROOT), cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["label"] == "k2"
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fewshot.cli", "classify", str(path), q, "--server", url],
                       env=repo_env(ROOT), cwd=ROOT, check=True, capture_output=True, timeout=60)
        times.append(time.perf_counter() - t)
    print(f"`fewshot classify --server` end to end: {min(times):.3f} s (best of 3)")
    assert min(times) < 5.0  # 0.2-0.4 s on a quiet machine; generous under load
