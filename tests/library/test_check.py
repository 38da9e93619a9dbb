"""`fewshot check [--repair]`: every kind of damage is found, derived parts are rebuilt, the rest is reported.

Indexes are built with the shipped encoder (omniglot-conv4) on small synthetic
ink drawings; damage is done the way it happens (a truncated file, a bit-rotted
vector, a deleted example copy, leftovers of a killed add).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from fewshot.check import check
from fewshot.cli import cli
from fewshot.commands.check import command as check_command
from fewshot.fewshot_index import FewShotIndex
from helpers import assert_one_line_error, drawing, run, tree_digest
from index import BlobStore

cli.add_command(check_command)  # the lead registers it in cli.py; harmless if already there


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, encoder) -> Path:
    """An index with 3 classes x 2 examples, built once; tests work on copies."""
    root = tmp_path_factory.mktemp("check")
    files = []
    for i in range(6):
        p = root / f"img{i}.png"
        drawing(i).save(p)
        files.append(p)
    idx = FewShotIndex.create(root / "idx", encoder=encoder)
    for c, label in enumerate(["alpha", "beta", "ünï/猫"]):
        idx.add(label, files[2 * c:2 * c + 2])
    idx.close()
    return root / "idx"


def stored(path: Path, encoder) -> dict[int, tuple[str, np.ndarray, str]]:
    with FewShotIndex.open(path, encoder=encoder, readonly=True) as idx:
        return {r.id: (r.label, r.vector.copy(), r.metadata["blob"]) for r in idx.store.records()}


def test_healthy_index(ix, encoder):
    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        report = check(idx, sample=None)
    assert report["healthy"] and report["problems"] == [] and report["remaining"] == []
    s = report["stats"]
    assert (s["records"], s["labels"], s["blobs_checked"], s["reembedded"]) == (6, 3, 6, 6)
    assert s["max_vector_error"] < 1e-4 and s["orphan_blobs"] == 0 and s["temp_files"] == 0
    before = tree_digest(ix)
    r = run("check", ix, "--json", "--sample", "all")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["healthy"] is True
    r = run("check", ix)
    assert r.exit_code == 0 and r.stdout.strip().endswith("healthy")
    assert tree_digest(ix) == before  # checking never writes


def test_sample_option(ix):
    r = run("check", ix, "--sample", "0", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["stats"]["reembedded"] == 0
    assert json.loads(run("check", ix, "--sample", "2", "--json").stdout)["stats"]["reembedded"] == 2
    assert_one_line_error(run("check", ix, "--sample", "-3"), code=2)
    assert_one_line_error(run("check", ix, "--sample", "many"), code=2)


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage-manifest", "no-manifest"])
def test_damaged_faiss_files_are_reported_then_rebuilt(ix, encoder, damage):
    want = stored(ix, encoder)
    faiss_files = sorted(ix.glob("*.faiss"))
    assert len(faiss_files) == 2
    if damage == "truncate":
        data = faiss_files[0].read_bytes()
        faiss_files[0].write_bytes(data[: len(data) // 3])
    elif damage == "delete":
        for f in faiss_files:
            f.unlink()
    elif damage == "garbage-manifest":
        (ix / "manifest.json").write_text("{ not json")
    else:
        (ix / "manifest.json").unlink()
    before = tree_digest(ix)
    msg = assert_one_line_error(run("check", ix))
    assert "repair" in msg
    assert tree_digest(ix) == before
    r = run("check", ix, "--repair", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["problems"] and report["remaining"] == [] and report["healthy"]
    assert run("check", ix).exit_code == 0
    assert stored(ix, encoder).keys() == want.keys()
    assert all(stored(ix, encoder)[i][0] == want[i][0] for i in want)


def test_well_formed_but_wrong_faiss_file_is_caught_by_its_checksum(ix, encoder):
    """A valid FAISS file with the right ids but other vectors: only the manifest checksum tells."""
    import faiss

    [pf] = ix.glob("prototypes-*.faiss")
    good = faiss.read_index(str(pf))
    ids = faiss.vector_to_array(good.id_map).astype(np.int64)
    flat = faiss.IndexFlatIP(good.d)
    bad = faiss.IndexIDMap2(flat)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(ids), good.d)).astype(np.float32)
    bad.add_with_ids(vecs / np.linalg.norm(vecs, axis=1, keepdims=True), ids)
    faiss.write_index(bad, str(pf))
    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        [pred] = idx.classify([drawing(0)])  # served from the records, not from the bad file
        assert pred.label == "alpha"
        labels, protos = idx.store.prototypes()
        assert check(idx)["problems"] and any("checksum" in p for p in check(idx)["problems"])
    from fewshot.prototypes import class_prototypes

    recs = stored(ix, encoder)
    want_labels, want = class_prototypes(np.stack([v[1] for v in recs.values()]), [v[0] for v in recs.values()])
    assert labels == want_labels
    np.testing.assert_allclose(protos, want, atol=1e-5)
    assert check(str(ix), repair=True)["healthy"]


def test_silently_damaged_vectors_are_found_by_reembedding_and_repaired(ix, encoder):
    """Swap two records' vectors in a self-consistent way: only re-embedding the stored examples can tell."""
    want = stored(ix, encoder)
    with FewShotIndex.open(ix, encoder=encoder) as idx:
        recs = list(idx.store.records())
        vecs = np.stack([r.vector for r in recs])
        vecs[[0, 5]] = vecs[[5, 0]]
        idx.store.rewrite_vectors([r.id for r in recs], vecs)
        assert idx.store.verify() == []  # the store alone sees nothing wrong
    report = check(str(ix), sample=None)
    assert not report["healthy"]
    assert any("re-embedded" in p for p in report["problems"]), report["problems"]
    report = check(str(ix), sample=None, repair=True)
    assert report["healthy"], report
    assert any("re-embedded all 6" in r for r in report["repaired"])
    got = stored(ix, encoder)
    for i, (label, vec, blob) in want.items():
        assert got[i][0] == label and got[i][2] == blob
        np.testing.assert_allclose(got[i][1], vec, atol=1e-5)


def test_nan_vector_written_behind_the_stores_back_is_reembedded(ix, encoder):
    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        rid = next(iter(idx.store.records())).id
    con = sqlite3.connect(ix / "meta.sqlite")
    con.execute("UPDATE records SET vector = ? WHERE id = ?", (np.full(encoder.dim, np.nan, np.float32).tobytes(), rid))
    con.commit()
    con.close()
    report = check(str(ix), sample=0)
    assert any("NaN/inf" in p for p in report["problems"]), report["problems"]
    assert assert_one_line_error(run("check", ix, "--sample", "0"))
    report = check(str(ix), sample=0, repair=True)
    assert report["healthy"], report
    assert check(str(ix), sample=None)["healthy"]


@pytest.mark.parametrize("drop_caches", [False, True])
def test_tampered_prototype_sum_is_recomputed(ix, encoder, drop_caches):
    con = sqlite3.connect(ix / "meta.sqlite")
    con.execute("UPDATE classes SET vsum = ? WHERE label = 'beta'", (np.ones(encoder.dim, np.float64).tobytes(),))
    con.commit()
    con.close()
    if drop_caches:  # the served prototypes are then rebuilt from the bad sum
        for f in ix.glob("*.faiss"):
            f.unlink()
    report = check(str(ix))
    assert any("class 'beta' prototype sum differs" in p for p in report["problems"]), report["problems"]
    assert any("prototype of class 'beta' differs" in p for p in report["problems"]) == drop_caches
    assert check(str(ix), repair=True)["healthy"]
    from fewshot.prototypes import class_prototypes

    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        recs = list(idx.store.records())
        want_labels, want = class_prototypes(np.stack([r.vector for r in recs]), [r.label for r in recs])
        labels, protos = idx.store.prototypes()
    assert labels == want_labels
    np.testing.assert_allclose(protos, want, atol=1e-5)


def test_missing_and_damaged_example_copies_are_reported_not_invented(ix, encoder):
    keys = sorted({v[2] for v in stored(ix, encoder).values()})
    blobs = BlobStore(ix)
    blobs.path(keys[0]).unlink()
    blobs.path(keys[1]).write_bytes(b"bit rot")
    report = check(str(ix), repair=True)
    assert not report["healthy"]
    text = " | ".join(report["remaining"])
    assert "missing" in text and "damaged" in text
    msg = assert_one_line_error(run("check", ix, "--repair"))
    assert "re-add" in msg
    # Everything else still works: the vectors are intact.
    with FewShotIndex.open(ix, encoder=encoder, readonly=True) as idx:
        assert idx.store.verify() == []


def test_leftovers_of_interrupted_adds(ix, encoder):
    blobs = BlobStore(ix)
    orphan = blobs.put_bytes(b"an example copied by an add that was killed before committing", ".png")
    tmp = ix / "examples" / ".incoming.deadbeef0000.tmp"
    tmp.write_bytes(b"half a file")
    top_tmp = ix / ".manifest.json.0123456789ab.tmp"
    top_tmp.write_text("{")
    # Young leftovers may belong to a write in progress: noted, kept, still healthy.
    report = check(str(ix), repair=True)
    assert report["healthy"] and report["stats"]["orphan_blobs"] == 1 and report["stats"]["temp_files"] == 2
    assert any("kept" in n for n in report["notes"])
    assert blobs.exists(orphan) and tmp.exists()
    old = time.time() - 3600
    for p in (blobs.path(orphan), tmp, top_tmp):
        os.utime(p, (old, old))
    report = check(str(ix))
    assert not report["healthy"] and len(report["problems"]) == 2
    report = check(str(ix), repair=True)
    assert report["healthy"], report
    assert not blobs.exists(orphan) and not tmp.exists() and not top_tmp.exists()
    assert check(str(ix))["stats"]["orphan_blobs"] == 0


def test_encoder_problems_are_reported_and_the_store_still_checked(ix, tmp_path, encoder):
    enc_file = tmp_path / "enc.pt"
    encoder.save(enc_file)
    idx_dir = tmp_path / "own"
    with FewShotIndex.create(idx_dir, encoder=str(enc_file)) as idx:
        idx.add("x", [drawing(7)])
    import torch

    from fewshot import encoders

    other = encoders.from_file(enc_file)
    with torch.no_grad():
        next(other.module.parameters()).add_(0.01)
    other.invalidate()
    [enc_file] = idx_dir.glob("encoder-*.pt")  # the index keeps its own copy (issue 16 item 15)
    other.save(enc_file)  # the file the index names now holds different weights
    report = check(str(idx_dir))
    assert not report["healthy"] and report["remaining"][0].startswith("encoder: ")
    assert report["stats"]["records"] == 1 and report["stats"]["reembedded"] == 0
    msg = assert_one_line_error(run("check", idx_dir))
    assert "fingerprint" in msg


def test_check_of_something_that_is_not_an_index(tmp_path):
    assert "not a fewshot index" in assert_one_line_error(run("check", tmp_path / "nope"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hi")
    before = tree_digest(tmp_path / "d")
    assert_one_line_error(run("check", tmp_path / "d", "--repair"))
    assert tree_digest(tmp_path / "d") == before
    assert not (tmp_path / "nope").exists()


def test_garbage_sqlite_cannot_be_repaired_and_is_left_alone(ix):
    data = bytearray((ix / "meta.sqlite").read_bytes())
    data[:100] = os.urandom(100)
    (ix / "meta.sqlite").write_bytes(bytes(data))
    before = tree_digest(ix)
    msg = assert_one_line_error(run("check", ix, "--repair"))
    assert "backup" in msg
    assert tree_digest(ix) == before
