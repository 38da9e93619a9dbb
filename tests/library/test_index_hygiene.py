"""What an index keeps on disk, and what it may delete (issue 16, items 7 to 10).

* ``remove`` deletes the stored copies no record references any more (a
  class removed for privacy reasons takes its images with it), crash-safely:
  a kill between the commit and the deletion leaves what ``check --repair``
  cleans.
* ``check --repair`` deletes only files of the blob store's own shape, never
  follows links, and refuses an index whose ``examples/`` is a link.
* ``reindex`` verifies every stored copy (a regular file hashing to its name)
  before re-embedding it, and names the copy and the record when one is bad.
* Library metadata cannot overwrite the keys the index writes itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fewshot.check import check
from fewshot.cli import cli
from fewshot.errors import InputError
from fewshot.fewshot_index import FewShotIndex
from helpers import child_env, drawing, tree_digest
from helpers import drawing_files as images

OLD = time.time() - 3600  # older than check's 5-minute grace period for leftovers


def blob_files(ix: Path) -> set[str]:
    return {p.relative_to(ix).as_posix() for p in (ix / "examples").rglob("*") if p.is_file()}


def keys_of(idx: FewShotIndex, label: str) -> set[str]:
    return {r.metadata["blob"] for r in idx.store.records(label)}


def age(paths) -> None:
    for p in paths:
        os.utime(p, (OLD, OLD), follow_symlinks=False)


@pytest.fixture()
def index(tmp_path, encoder_a) -> Path:  # noqa: F811 - the fixture above
    ix = tmp_path / "idx"
    files = images(tmp_path / "img", range(6))
    with FewShotIndex.create(ix, encoder=encoder_a) as idx:
        idx.add("keep", files[:3])
        idx.add("private", files[3:])
        idx.add("shared", files[:1])  # the same image as a "keep" example: one stored copy
    return ix


# --------------------------------------------------------------------------- item 7: remove


def test_remove_deletes_the_copies_no_record_references(index):
    with FewShotIndex.open(index) as idx:
        private, shared = keys_of(idx, "private"), keys_of(idx, "shared")
        assert idx.remove("private") == 3
        assert idx.remove("shared") == 1
        assert blob_files(index) == keys_of(idx, "keep")
    assert not private & blob_files(index)
    assert shared <= blob_files(index)  # still the copy of a "keep" example
    report = check(index, sample=None, min_age_s=0)
    assert report["healthy"], report["remaining"]


def test_a_kill_between_the_remove_commit_and_the_deletion_is_cleaned_by_repair(index):
    script = """
        import os, signal, sys
        from index.blobs import BlobStore
        from fewshot.fewshot_index import FewShotIndex
        BlobStore.delete = lambda self, keys: os.kill(os.getpid(), signal.SIGKILL)
        FewShotIndex.open(sys.argv[1]).remove("private")
    """
    with FewShotIndex.open(index, readonly=True) as idx:
        private = keys_of(idx, "private")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(index)], env=child_env())
    assert r.returncode == -9
    with FewShotIndex.open(index, readonly=True) as idx:
        assert "private" not in idx.labels()  # committed
    assert private <= blob_files(index)  # killed before the deletion
    report = check(index, min_age_s=0)
    assert not report["healthy"] and "interrupted add or remove" in report["remaining"][0]
    age(index / k for k in private)
    r = CliRunner().invoke(cli, ["check", str(index), "--repair", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["healthy"]
    assert not private & blob_files(index)


# --------------------------------------------------------------------------- item 8: check --repair's sweep


def test_repair_sweeps_only_the_blob_stores_own_files(index, tmp_path):
    with FewShotIndex.open(index) as idx:
        orphan = index / next(iter(keys_of(idx, "private")))
    with FewShotIndex.open(index) as idx:
        idx.store.remove_label("private")  # store level: the copies stay, like after a killed add
    ex = index / "examples"
    foreign = [ex / "notes.txt", ex / orphan.parent.name / "README", ex / "photos" / "cat.jpg",
               ex / orphan.parent.name / ("0" * 64 + ".png")]  # blob-shaped, but in the wrong folder
    for p in foreign:
        p.parent.mkdir(exist_ok=True)
        p.write_text("not the index's")
    temp = ex / ".incoming.0123456789ab.tmp"
    temp.write_bytes(b"partial")
    age([*foreign, temp, *[p for p in ex.rglob("*") if p.is_file()]])
    r = CliRunner().invoke(cli, ["check", str(index), "--repair", "--json"])
    assert r.exit_code == 0, r.output
    assert all(p.read_text() == "not the index's" for p in foreign)
    assert not orphan.exists() and not temp.exists()


def test_repair_refuses_a_linked_examples_folder_and_never_follows_links(index, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "document.txt").write_text("mine")
    (outside / ("ab" * 32 + ".png")).write_text("mine too")
    ex = index / "examples"
    # A linked hash folder inside examples/ is not followed.
    (ex / "cd").symlink_to(outside, target_is_directory=True)
    age([*(p for p in ex.rglob("*") if p.is_file()), *outside.iterdir()])
    r = CliRunner().invoke(cli, ["check", str(index), "--repair"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in outside.iterdir()) == sorted(["document.txt", "ab" * 32 + ".png"])
    # A linked examples/ is refused outright.
    (ex / "cd").unlink()
    real = tmp_path / "real_examples"
    ex.rename(real)
    ex.symlink_to(real, target_is_directory=True)
    before = tree_digest(real)
    r = CliRunner().invoke(cli, ["check", str(index), "--repair"])
    assert r.exit_code == 1
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "symbolic link" in line
    assert tree_digest(real) == before


# --------------------------------------------------------------------------- item 9: reindex verifies copies


@pytest.mark.parametrize("damage", ["swapped", "linked"])
def test_reindex_refuses_a_damaged_copy_and_names_it(index, tmp_path, damage, encoder_b_file):  # noqa: F811
    with FewShotIndex.open(index, readonly=True) as idx:
        rec = next(iter(idx.store.records("private")))
    copy = index / rec.metadata["blob"]
    other = tmp_path / "other.png"
    drawing(999).save(other)
    copy.unlink()
    if damage == "swapped":
        copy.write_bytes(other.read_bytes())
    else:
        copy.symlink_to(other)
    before = tree_digest(index)
    r = CliRunner().invoke(cli, ["reindex", str(index), "--encoder", str(encoder_b_file)])
    assert r.exit_code == 1, r.output
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert rec.metadata["blob"] in line and f"record {rec.id}" in line and "'private'" in line
    assert ("symbolic link" if damage == "linked" else "SHA-256") in line
    assert rec.metadata["source"] not in line and str(other) not in line
    assert tree_digest(index) == before


# --------------------------------------------------------------------------- item 10: reserved metadata keys


@pytest.mark.parametrize("key", ["blob", "source", "added"])
def test_metadata_cannot_set_the_index_keys(index, tmp_path, key):
    img = tmp_path / "new.png"
    drawing(77).save(img)
    before = tree_digest(index)
    with FewShotIndex.open(index) as idx:
        with pytest.raises(InputError, match=f"'{key}'.*reserved"):
            idx.add("new", [img], metadata={key: "examples/00/" + "0" * 64, "note": 1})
    assert tree_digest(index) == before
    with FewShotIndex.open(index) as idx:
        [rid] = idx.add("new", [img], metadata={"note": 1})
        [rec] = idx.store.get([rid])
        assert rec.metadata["note"] == 1 and rec.metadata["source"] == str(img.resolve())
        idx.reindex()
