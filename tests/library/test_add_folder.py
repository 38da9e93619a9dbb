"""``fewshot add --from-folder`` says what it does (issue 16, item 12).

An empty class folder is skipped with a warning (not an abort); files in nested
sub-folders join their top class folder's label, with a warning; symbolic links are
followed, with a warning; exact duplicates are said, and left out with
``--skip-duplicates``; ``--json`` returns the new ids.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fewshot.fewshot_index import FewShotIndex, FolderNoticeWarning
from helpers import drawing, fails_cleanly, run


def folder(root: Path, layout: dict[str, list[int]]) -> Path:
    """``root/<class>/<n>.png`` for each seed n; a class with no seeds is an empty folder."""
    for cls, seeds in layout.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for s in seeds:
            drawing(s).save(root / cls / f"{s}.png")
    return root


def add_json(ix, *args):
    r = run("add", ix, *args, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_an_empty_class_folder_is_skipped_with_a_warning(ix, tmp_path):
    root = folder(tmp_path / "data", {"cat": [101, 102], "empty": [], "dog": [103]})
    out, err = add_json(ix, "--from-folder", root)
    assert out["labels"] == {"cat": 2, "dog": 1} and out["added"] == 3
    assert err.startswith("warning: skipped 1 empty class folder(s)") and "empty" in err
    assert err.count("\n") == 1


def test_json_returns_the_new_ids(ix, tmp_path):
    root = folder(tmp_path / "data", {"cat": [111, 112], "dog": [113]})
    out, _ = add_json(ix, "--from-folder", root)
    assert isinstance(out["ids"], list) and len(out["ids"]) == 3
    with FewShotIndex.open(ix, readonly=True) as idx:
        got = {r.id: r.label for r in idx.store.records()}
    assert sorted(got[i] for i in out["ids"]) == ["cat", "cat", "dog"]


def test_nested_folders_join_their_top_class_with_a_warning(ix, tmp_path):
    root = folder(tmp_path / "data", {"cat": [121], "cat/kittens": [122, 123]})
    out, err = add_json(ix, "--from-folder", root)
    assert out["labels"] == {"cat": 3}
    assert "2 file(s) in nested sub-folders" in err and "cat/kittens/122.png" in err


def test_symlinked_files_are_followed_with_a_warning(ix, tmp_path):
    root = folder(tmp_path / "data", {"cat": [131]})
    drawing(132).save(tmp_path / "elsewhere.png")
    os.symlink(tmp_path / "elsewhere.png", root / "cat" / "link.png")
    out, err = add_json(ix, "--from-folder", root)
    assert out["labels"] == {"cat": 2}
    assert "1 file(s) are symbolic links" in err and "cat/link.png" in err


def test_duplicates_are_said_and_can_be_skipped(ix, tmp_path):
    root = folder(tmp_path / "data", {"cat": [141, 142]})
    out, err = add_json(ix, "--from-folder", root)
    assert out["added"] == 2 and err == ""
    drawing(143).save(root / "cat" / "143.png")
    (root / "cat" / "copy_of_143.png").write_bytes((root / "cat" / "143.png").read_bytes())
    out, err = add_json(ix, "--from-folder", root, "--skip-duplicates")
    assert out["added"] == 1 and out["labels"] == {"cat": 1}
    assert len(out["skipped"]) == 3 and "3 file(s) are exact duplicates" in err and "skipped" in err
    out, err = add_json(ix, "--from-folder", root)  # without the flag: added again, but said
    assert out["added"] == 4 and "added again" in err and "--skip-duplicates" in err
    p = root / "cat" / "141.png"  # the same for --label FILE...
    out, err = add_json(ix, "--label", "cat", p, "--skip-duplicates")
    assert out["added"] == 0 and out["ids"] == [] and "1 file(s) are exact duplicates" in err


def test_a_removed_class_is_not_a_duplicate(ix, tmp_path):
    root = folder(tmp_path / "data", {"cat": [151]})
    add_json(ix, "--from-folder", root)
    assert run("remove", ix, "--label", "cat").exit_code == 0  # its stored copy stays until check --repair
    out, err = add_json(ix, "--from-folder", root, "--skip-duplicates")
    assert out["added"] == 1 and err == ""


def test_all_empty_is_still_an_error(ix, tmp_path):
    root = folder(tmp_path / "data", {"a": [], "b": []})
    fails_cleanly(ix, "add", ix, "--from-folder", root, match="every class folder is empty")


def test_library_add_folder_warns(ix, encoder, tmp_path):
    root = folder(tmp_path / "data", {"cat": [161], "empty": []})
    with FewShotIndex.open(ix, encoder=encoder) as idx:
        with pytest.warns(FolderNoticeWarning, match="empty class folder"):
            assert idx.add_folder(root) == {"cat": 1}
