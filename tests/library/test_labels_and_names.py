"""Labels and file names that are not plain text (issue 16, items 4 and 14).

A label that is not valid UTF-8, holds control characters (C0 or C1), bidirectional
overrides or isolates, or only zero-width characters is refused before anything is
written, naming the label. A file name that is not valid UTF-8 is added (its source
is stored with ``\\xff`` escapes). Labels are NFC-normalised, and labels an older index
stored in NFD still match what a user types. The human (tab-separated) output escapes
tabs, newlines and control codes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from fewshot.errors import InputError
from fewshot.fewshot_index import FewShotIndex
from index.validation import escape_for_display
from helpers import REPO, drawing, fails_cleanly, one_line, run, tree_digest

NFD, NFC = "Cafe\u0301", "Caf\u00e9"


@pytest.fixture()
def png(tmp_path) -> Path:
    p = tmp_path / "new_example.png"
    drawing(4321).save(p)
    return p


# --------------------------------------------------------------------------- item 4: bytes that are not UTF-8


def test_non_utf8_label_is_refused_before_anything_is_written(ix, png):
    # what click hands over for the argument b"lab\xff" on Linux (surrogateescape)
    msg = fails_cleanly(ix, "add", ix, "--label", "lab\udcff", png, match="not valid UTF-8")
    assert "lab\\xff" in msg


def test_non_utf8_label_through_the_library_is_an_input_error(ix, encoder, png):
    before = tree_digest(ix)
    with FewShotIndex.open(ix, encoder=encoder) as idx:
        with pytest.raises(InputError, match="not valid UTF-8") as e:
            idx.add("lab\udcff", [png])
        one_line(e.value)
        with pytest.raises(InputError, match="UTF-8"):
            idx.add("x\ud800y", [png])  # a lone surrogate from broken UTF-16
    assert tree_digest(ix) == before


def test_non_utf8_file_name_is_added_and_shown_escaped(ix, tmp_path):
    p = Path(os.fsdecode(str(tmp_path).encode() + b"/q\xff.png"))
    drawing(77).save(p)
    r = run("add", ix, "--label", "bytes", p, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["labels"] == {"bytes": 1}
    r = run("search", ix, p, "-k", "1", "--json")
    assert r.exit_code == 0, r.stderr
    [res] = json.loads(r.stdout)
    assert res["input"].endswith("q\\xff.png") and res["neighbors"][0]["source"].endswith("q\\xff.png")
    r = run("classify", ix, p)
    assert r.exit_code == 0 and r.stdout.startswith(str(tmp_path)) and "q\\xff.png\tbytes" in r.stdout
    assert run("check", ix, "--sample", "all").exit_code == 0


def test_non_utf8_argv_in_a_real_process(tmp_path, pristine):  # noqa: F811
    """Real bytes on the command line (not what a test runner fakes): one error line, nothing written."""
    import shutil

    ix = tmp_path / "idx"
    shutil.copytree(pristine, ix)
    png = tmp_path / "a.png"
    drawing(5).save(png)
    before = tree_digest(ix)
    env = {**os.environ, "PYTHONPATH": str(REPO), "FEWSHOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "fewshot.cli", "add", str(ix), "--label", b"lab\xff", str(png)],
                       capture_output=True, env=env, timeout=300)
    err = p.stderr.decode()
    assert p.returncode == 1 and p.stdout == b"" and err.count("\n") == 1, err
    assert err.startswith("error: label 'lab\\xff' is not valid UTF-8"), err
    assert tree_digest(ix) == before


# --------------------------------------------------------------------------- item 14: label rules


@pytest.mark.parametrize("label,match", [
    ("a\x85b", "control characters"), ("esc\x9b[31m", "control characters"), ("bell\x07", "control characters"),
    ("abc\u202eexe.png", "bidirectional"), ("x\u2066y\u2069", "bidirectional"), ("\u202dx", "bidirectional"),
    ("\u200b", "empty"), ("\u200b\u200d \ufeff", "empty"), ("\u2060\u200c", "empty"),
])
def test_control_bidi_and_invisible_labels_are_refused(ix, png, label, match):
    msg = fails_cleanly(ix, "add", ix, "--label", label, png, match=match)
    assert "\x85" not in msg and "\u202e" not in msg and "\x9b" not in msg  # named, but escaped


def test_labels_are_nfc_normalised(ix, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    drawing(81).save(a)
    drawing(82).save(b)
    r = run("add", ix, "--label", NFD, a, "--json")  # a macOS folder name arrives in NFD
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["labels"] == {NFC: 1}
    assert run("add", ix, "--label", NFC, b).exit_code == 0  # the typed label: the same class
    labels = json.loads(run("info", ix, "--json").stdout)["labels"]
    assert labels[NFC] == 2 and NFD not in labels
    [pred] = json.loads(run("classify", ix, a, "--json").stdout)
    assert pred["label"] == NFC


def test_an_older_index_with_nfd_labels_still_matches(ix, encoder, tmp_path):
    """Labels an older fewshot stored in NFD: typed NFC labels join, filter and remove them."""
    with FewShotIndex.open(ix, encoder=encoder) as idx:  # the store keeps labels as given
        idx.store.add(encoder.embed([drawing(91)]), [NFD], [{"source": "old"}])
    a = tmp_path / "a.png"
    drawing(92).save(a)
    assert run("add", ix, "--label", NFC, a).exit_code == 0
    labels = json.loads(run("info", ix, "--json").stdout)["labels"]
    assert labels.get(NFD) == 2 and NFC not in labels
    r = run("search", ix, a, "--label", NFC, "-k", "5", "--json")
    assert r.exit_code == 0, r.stderr
    assert {n["label"] for n in json.loads(r.stdout)[0]["neighbors"]} == {NFD}
    r = run("remove", ix, "--label", NFC, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["removed"] == 2
    assert unicodedata.normalize("NFC", NFD) not in json.loads(run("info", ix, "--json").stdout)["labels"]


# --------------------------------------------------------------------------- item 14: human output


def test_human_output_escapes_tabs_newlines_and_control_codes(ix, tmp_path):
    p = tmp_path / "tab\there\nnew\x1b[2Jline.png"
    drawing(31).save(p)
    r = run("classify", ix, p)
    assert r.exit_code == 0, r.stderr
    line = r.stdout.rstrip("\n")
    assert "\n" not in line and line.count("\t") == 3 and "\x1b" not in line
    assert "tab\\there\\nnew\\x1b[2Jline.png" in line
    r = run("search", ix, p, "-k", "1")
    assert r.exit_code == 0 and "\x1b" not in r.stdout and len(r.stdout.splitlines()) == 2
    assert escape_for_display("a\tb\x85\u202e\udcff") == "a\\tb\\x85\\u202e\\xff"
