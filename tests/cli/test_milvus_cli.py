"""The CLI flow (init, add, classify, search --label, reindex, remove, info) on every backend.

FAISS, Milvus Lite (``--uri x.db``) and a Milvus server (``--uri http://...``)
must give the same answers to the same commands.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import glyph_folders, ok, run
from milvus_support import BACKENDS, make_maker, milvus_http_uri  # noqa: F401 - fixture


def _needs_patched_cli() -> None:
    if "--backend" not in run("init", "--help").output:
        pytest.skip("fewshot/cli.py does not have --backend/--index-type yet (notes/issue6_cli.patch)")


@pytest.fixture(params=BACKENDS)
def stores(request, tmp_path: Path):
    yield from make_maker(request, tmp_path)


@pytest.fixture
def images(tmp_path: Path) -> dict[str, list[Path]]:
    return glyph_folders(tmp_path / "imgs", one_jitter=True)


def init_args(stores, path: Path) -> list[str]:
    kw = stores.store_kwargs(path)
    args = ["--backend", kw["backend"]]
    if "uri" in kw:
        args += ["--uri", kw["uri"]]
    return args


def test_cli_flow_gives_the_same_answers_on_every_backend(stores, tmp_path: Path, images) -> None:
    _needs_patched_cli()
    idx = tmp_path / "idx"
    info = json.loads(ok("init", idx, *init_args(stores, idx), "--json").output)
    assert info["backend"] == ("milvus" if stores.is_milvus else "faiss")
    for name, files in images.items():
        ok("add", idx, "--label", name, files[0], files[1])
    preds = json.loads(ok("classify", idx, *(f[2] for f in images.values()), "--json").output)
    assert [p["label"] for p in preds] == list(images)  # added, then classified at once
    res = json.loads(ok("search", idx, images["diag"][2], "-k", "3", "--label", "vbar", "--label", "two",
                        "--json").output)
    assert {n["label"] for n in res[0]["neighbors"]} <= {"vbar", "two"} and len(res[0]["neighbors"]) == 3
    ok("reindex", idx, "--index-type", "hnsw", "--ef-search", "64")
    info = json.loads(ok("info", idx, "--json").output)
    assert info["count"] == 8 and info["index"]["index_type"] == "hnsw"
    again = json.loads(ok("classify", idx, *(f[2] for f in images.values()), "--json").output)
    assert [p["label"] for p in again] == list(images)
    out = json.loads(ok("remove", idx, "--label", "two", "--json").output)
    assert out["removed"] == 2 and out["count"] == 6
    assert json.loads(ok("classify", idx, images["two"][2], "--json").output)[0]["label"] != "two"
    if stores.is_milvus:
        with stores.open(idx) as store:  # so teardown drops the collections
            pass


def test_cli_errors_are_one_line(stores, tmp_path: Path) -> None:
    _needs_patched_cli()
    if stores.backend != "faiss":
        pytest.skip("backend-independent usage errors")
    r = run("init", tmp_path / "a", "--uri", "http://127.0.0.1:1")
    assert r.exit_code == 2 and r.stderr.startswith("error:") and "--backend milvus" in r.stderr
    r = run("init", tmp_path / "b", "--index-type", "annoy")
    assert r.exit_code == 2 and r.stderr.startswith("error:")


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    _needs_patched_cli()
    from milvus_support import _free_port, have_pymilvus

    if not have_pymilvus():
        pytest.skip("pymilvus not installed")
    r = run("init", tmp_path / "x", "--backend", "milvus", "--uri", f"http://127.0.0.1:{_free_port()}")
    assert r.exit_code == 1
    assert r.stderr.startswith("error:") and "cannot reach Milvus" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
