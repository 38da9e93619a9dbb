"""Indexes written by an earlier release open and answer as they did then.

``tests/fixtures/indexes/`` holds an image index and a stroke index built by commit 15779ce
(``make_old_indexes.py`` there says how), and that release's ``classify --json`` /
``search --json`` answers. The fixtures are copied before use: opening an index for writing may
tidy it, and the committed copy must stay the old release's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import REPO, ok

FIXTURES = REPO / "tests" / "fixtures" / "indexes"
ANSWERS = json.loads((FIXTURES / "answers_v15779ce.json").read_text())


@pytest.fixture(params=sorted(ANSWERS))
def old(request, tmp_path) -> tuple[Path, dict]:
    dst = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, dst)
    return dst, ANSWERS[request.param]


def _queries(answers: dict) -> list[Path]:
    return [FIXTURES / q for q in answers["queries"]]


def test_classify_answers_as_the_release_that_wrote_it(old):
    idx, answers = old
    now = json.loads(ok("classify", idx, *_queries(answers), "--top-k", "3", "--json").stdout)
    for new, then in zip(now, answers["classify"]):
        assert new["label"] == then["label"]
        assert [c["label"] for c in new["candidates"]] == [c["label"] for c in then["candidates"]]
        assert new["score"] == pytest.approx(then["score"], abs=1e-5)
        assert new["probability"] == pytest.approx(then["probability"], abs=1e-5)


def test_search_answers_as_the_release_that_wrote_it(old):
    idx, answers = old
    now = json.loads(ok("search", idx, *_queries(answers), "-k", "3", "--json").stdout)
    for new, then in zip(now, answers["search"]):
        assert [(n["id"], n["label"]) for n in new["neighbors"]] == [(n["id"], n["label"]) for n in then["neighbors"]]
        assert [n["score"] for n in new["neighbors"]] == pytest.approx([n["score"] for n in then["neighbors"]], abs=1e-5)


def test_info_check_and_a_new_class(old):
    idx, answers = old
    info = json.loads(ok("info", idx, "--json").stdout)
    for key in ("encoder", "fingerprint", "input_kind", "dim", "metric", "temperature", "count", "labels"):
        assert info[key] == answers["info"][key], key
    ok("check", idx, "--sample", "all")
    query = _queries(answers)[0]
    ok("add", idx, "--label", "new", query)
    assert json.loads(ok("classify", idx, query, "--json").stdout)[0]["label"] == "new"
    ok("check", idx, "--sample", "all")
