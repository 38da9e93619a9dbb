"""`fewshot classify/search/add/info --server URL`: the same output as the local command, without torch."""
from __future__ import annotations

import json
import shutil
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


INTENTS = [("balance", ["how much money do I have", "what is my account balance", "show my balance"]),
           ("transfer", ["send money to bob", "move cash to my savings", "transfer 20 dollars to alice"])]


@pytest.fixture(scope="module")
def served(tmp_path_factory, omniglot_alphabet):
    """An image index and a text index (the shipped text-gru: no download), served by one process."""
    root = tmp_path_factory.mktemp("client")
    path, text = root / "korean", root / "intents"
    with FewShotIndex.create(path) as idx:
        idx.add_many([(f"k{i}", [omniglot_alphabet / f"character{i:02d}"]) for i in range(1, 4)])
    with FewShotIndex.create(text, encoder="text-gru") as idx:
        idx.add_many(INTENTS)
    with serve_process([path, text], env=repo_env(ROOT), cwd=ROOT) as (proc, url):
        yield path, url


@pytest.fixture()
def twin(served, tmp_path):
    """``twin(index_dir)``: a copy of a served index under the same name, for the local side of a write."""
    def copy(index_dir: Path) -> Path:
        out = tmp_path / "local" / index_dir.name
        shutil.copytree(index_dir, out, ignore=shutil.ignore_patterns("*.lock"))
        return out

    return copy


def both(args: list[str], index_dir: Path, local_dir: Path, url: str) -> tuple[tuple, tuple]:
    """(the command on ``local_dir``, the same command on ``index_dir`` through the server)."""
    local = [str(local_dir) if a == str(index_dir) else a for a in args]
    return run_all(local), run_all(args + ["--server", url])


def same_output(a: tuple[int, str, str], b: tuple[int, str, str]) -> bool:
    """Two CLI results print the same thing; a --json output's floats may differ in the 7th digit.

    The sentence encoder's sums run in another order on the server's one torch thread than in a
    local process with two, so a cosine can move by 1e-7: the same answer, not a different output.
    """
    if a[0] != b[0] or a[2] != b[2]:
        return False
    try:
        return _close(json.loads(a[1]), json.loads(b[1]))
    except ValueError:  # not JSON: the text output shows rounded scores
        return a[1] == b[1]


def _close(x, y) -> bool:
    """Equal JSON values, floats within 1e-6 (pytest.approx does not take nested structures)."""
    if isinstance(x, float) or isinstance(y, float):
        return isinstance(x, (int, float)) and isinstance(y, (int, float)) and abs(x - y) <= 1e-6
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(map(_close, x, y))
    return x == y


def run_all(args: list[str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, args)
    return r.exit_code, r.stdout, r.stderr


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
                 ["search", str(path), *queries, "--label", "k2", "--label", "k3", "-k", "2", "--json"],
                 ["info", str(path), "--json"], ["info", str(path)]):
        local = run_all(args)
        assert local[0] == 0
        # the server's one torch thread sums in another order than a local process with two (same_output)
        assert same_output(run_all(args + ["--server", url]), local), args
        r = CliRunner(env={"FEWSHOT_SERVER": url}).invoke(cli, args)
        assert same_output((r.exit_code, r.stdout, r.stderr), local), args


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
    text = str(path.parent / "intents")
    code = ("import sys; from fewshot.cli import cli; "
            f"rc = cli.main(['search', {text!r}, '--text', 'hi', '--label', 'balance', '--server', {url!r}], "
            "standalone_mode=False); assert rc == 0, rc; "
            f"rc = cli.main(['classify', {str(path)!r}, {q!r}, '--server', {url!r}, '--json'], standalone_mode=False); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], env=repo_env(ROOT), cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])[0]["label"] == "k2"
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fewshot.cli", "classify", str(path), q, "--server", url],
                       env=repo_env(ROOT), cwd=ROOT, check=True, capture_output=True, timeout=60)
        times.append(time.perf_counter() - t)
    print(f"`fewshot classify --server` end to end: {min(times):.3f} s (best of 3)")
    assert min(times) < 5.0  # 0.2-0.4 s on a quiet machine; generous under load


def test_add_from_folder_prints_what_the_local_command_prints(served, twin, omniglot_alphabet, tmp_path):
    """Two classes (one holding a duplicate file) in one atomic write on the server; the local report."""
    path, url = served
    folder = tmp_path / "classes"
    for label, char in (("folder-a", 7), ("folder-b", 8)):
        (folder / label).mkdir(parents=True)
        for f in sorted((omniglot_alphabet / f"character{char:02d}").glob("*.png"))[:2]:
            shutil.copy(f, folder / label / f.name)
    shutil.copy(next((folder / "folder-a").iterdir()), folder / "folder-b" / "same.png")
    local_dir = twin(path)
    for args in (["add", str(path), "--from-folder", str(folder), "--json"],
                 ["add", str(path), "--label", "solo", str(folder / "folder-a"), "--json"]):
        local, remote = both(args, path, local_dir, url)
        assert local[0] == 0 and remote == local, args
    assert json.loads(local[1])["warnings"]  # the duplicate was said, by both
    blobs = [sorted(p.name for p in (d / "examples").rglob("*") if p.is_file()) for d in (path, local_dir)]
    assert blobs[0] == blobs[1]  # the uploads are stored byte for byte as the files themselves
    for label in ("folder-a", "folder-b", "solo"):
        assert CliRunner().invoke(cli, ["remove", str(path), "--label", label]).exit_code == 0


def test_a_text_index_through_the_server(served, twin, tmp_path):
    """--text, --from-file and .txt files: classify, search and add print what the local command prints."""
    path, url = served
    text = path.parent / "intents"
    queries = tmp_path / "q.txt"
    queries.write_text("what's my balance\nplease send 5 dollars to carol\n")
    one = tmp_path / "one.txt"
    one.write_text("how much is in my account")
    for args in (["classify", str(text), "--text", "how much money is left", "--json"],
                 ["classify", str(text), "--from-file", str(queries), str(one), "--top-k", "1"],
                 ["search", str(text), "--text", "wire money to dave", "--label", "transfer", "-k", "2"],
                 ["info", str(text), "--json"]):
        local = run_all(args)
        assert local[0] == 0 and same_output(run_all(args + ["--server", url]), local), args
    table = tmp_path / "more.csv"
    table.write_text("text,label\nfreeze my card,card\nmy card was stolen,card\n")
    local_dir = twin(text)
    for args in (["add", str(text), "--label", "greeting", "--text", "hello there", "--text", "hi", "--json"],
                 ["add", str(text), "--from-file", str(table)]):
        local, remote = both(args, text, local_dir, url)
        assert local[0] == 0 and remote == local, args
    # text options on an image index: the local command's own error, before any request
    args = ["classify", str(path), "--text", "hello"]
    local, remote = run_all(args), run_all(args + ["--server", url])
    assert local[0] == 1 and remote == local
    for label in ("greeting", "card"):
        assert CliRunner().invoke(cli, ["remove", str(text), "--label", label]).exit_code == 0


def test_an_add_over_the_servers_limit_names_the_alternatives(served, omniglot_alphabet, tmp_path):
    path, url = served
    files = [str(p) for p in sorted(omniglot_alphabet.rglob("*.png"))[:70]]  # the server takes 64 a request
    code, out, err = run_all(["add", str(path), "--label", "many", *files, "--server", url])
    assert code == 1 and err.startswith("error: server: 70 files in one request; at most 64")
    assert "--max-batch" in err and "smaller parts" in err
    with FewShotIndex.open(path, readonly=True) as idx:
        assert "many" not in idx.labels()
