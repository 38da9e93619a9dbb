"""BlobStore: content addressing, dedup, key safety and sweeping."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from index import BlobStore, ValidationError


def test_put_file_dedups_identical_content(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "ix")
    a = tmp_path / "a.JPG"
    b = tmp_path / "copy.jpg"
    a.write_bytes(b"pixels")
    b.write_bytes(b"pixels")
    digest = hashlib.sha256(b"pixels").hexdigest()
    key_a = blobs.put_file(a)
    key_b = blobs.put_file(b)
    assert key_a == key_b == f"examples/{digest[:2]}/{digest}.jpg"
    assert blobs.exists(key_a) and blobs.path(key_a).read_bytes() == b"pixels"
    assert blobs.put_bytes(b"pixels", ".jpg") == key_a
    stored = [p for p in (tmp_path / "ix" / "examples").rglob("*") if p.is_file()]
    assert len(stored) == 1  # one copy, no temp leftovers


def test_suffix_rules(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    weird = tmp_path / "x.tar~gz"
    weird.write_bytes(b"1")
    assert blobs.put_file(weird).endswith(hashlib.sha256(b"1").hexdigest())  # odd extension dropped
    assert blobs.put_bytes(b"2", "PNG").endswith(".png")
    assert blobs.put_bytes(b"3").endswith(hashlib.sha256(b"3").hexdigest())
    with pytest.raises(ValidationError, match="suffix"):
        blobs.put_bytes(b"4", ".../x")
    with pytest.raises(ValidationError, match="suffix"):
        blobs.put_bytes(b"4", ".abcdefghijk")
    with pytest.raises(ValidationError, match="suffix"):
        blobs.put_bytes(b"4", ".png\n")
    with pytest.raises(ValidationError, match="not a readable file"):
        blobs.put_file(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "key",
    [
        "../outside.png",
        "examples/../../etc/passwd",
        "/etc/passwd",
        "examples/ab/" + "0" * 64,  # directory does not match the hash
        "examples/00/" + "0" * 63,
        "examples/00/" + "0" * 64 + "/../x",
        "examples\\00\\" + "0" * 64,
        "examples/00/" + "0" * 64 + "\n",
        "",
    ],
)
def test_keys_that_escape_or_are_malformed_are_rejected(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValidationError, match="invalid blob key"):
        BlobStore(tmp_path).path(key)


def test_sweep_removes_unreferenced_and_stale_temps(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    keep = blobs.put_bytes(b"keep", ".png")
    drop = blobs.put_bytes(b"drop", ".png")
    stale_tmp = blobs.root / ".incoming.0123456789ab.tmp"  # the blob store's own temp-file shape
    stale_tmp.write_bytes(b"partial")
    fresh = blobs.put_bytes(b"fresh", ".png")
    old = time.time() - 3600
    for key in (keep, drop):
        os.utime(blobs.path(key), (old, old))
    os.utime(stale_tmp, (old, old))
    # Young unreferenced blobs survive the default grace period (a writer may be mid-add).
    assert blobs.sweep({keep}) == 2
    assert blobs.exists(keep) and blobs.exists(fresh)
    assert not blobs.exists(drop) and not stale_tmp.exists()
    assert blobs.sweep({keep}, min_age_s=0) == 1
    assert not blobs.exists(fresh) and blobs.exists(keep)
    assert not blobs.path(drop).parent.exists()  # emptied sub-directories go too


def test_restoring_existing_blob_protects_it_from_sweep(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    key = blobs.put_bytes(b"again", ".wav")
    old = time.time() - 3600
    os.utime(blobs.path(key), (old, old))
    assert blobs.put_bytes(b"again", ".wav") == key  # refreshes age
    assert blobs.sweep(set()) == 0 and blobs.exists(key)


def test_sweep_without_blob_dir(tmp_path: Path) -> None:
    assert BlobStore(tmp_path / "nothing").sweep(set()) == 0
