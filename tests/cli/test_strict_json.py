"""Every command's ``--json`` is strict JSON: no bare NaN / Infinity, which strict parsers reject."""
from __future__ import annotations

import json
import math

import pytest
from helpers import glyph_folders, ok

from fewshot.cli import _emit


def strict(text: str):
    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_emit_writes_null_for_non_finite_numbers(capsys):
    _emit({"a": math.nan, "b": [math.inf, 1.5], "c": -math.inf}, as_json=True)
    assert strict(capsys.readouterr().out) == {"a": None, "b": [None, 1.5], "c": None}


@pytest.fixture()
def index(tmp_path):
    folders = glyph_folders(tmp_path / "imgs")
    idx = tmp_path / "idx"
    strict(ok("init", idx, "--json").stdout)
    for label, files in folders.items():
        strict(ok("add", idx, "--label", label, *files[:2], "--json").stdout)
    return idx, folders


def test_every_command_prints_strict_json(index, tmp_path):
    idx, folders = index
    query = next(iter(folders.values()))[2]
    outputs = [
        ok("classify", idx, query, "--top-k", "2", "--json").stdout,
        ok("search", idx, query, "-k", "2", "--json").stdout,
        ok("info", idx, "--json").stdout,
        ok("embed", query, "-o", tmp_path / "e.npy", "--json").stdout,
        ok("encoders", "--json").stdout,
        ok("check", idx, "--json").stdout,
        ok("reindex", idx, "--json").stdout,
        ok("remove", idx, "--label", next(iter(folders)), "--json").stdout,
    ]
    for out in outputs:
        assert strict(out) is not None
