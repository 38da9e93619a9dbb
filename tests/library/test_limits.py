"""Resource limits where input enters (issue 16, item 11).

Oversized files, zip entries, images and sequences are refused with one error
naming the input, from a size known before reading (stat, the zip directory, an
array's shape), so memory stays bounded. Limits are env vars (fewshot.limits).
No test writes a big file: big files are sparse (``truncate``) or the limit is
lowered through its env var.
"""
from __future__ import annotations

import io
import json
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot.errors import InputError
from fewshot.inputs import InputItem, to_pil
from fewshot.limits import LIMITS, limit, read_zip_entry
from helpers import REPO, drawing, fails_cleanly, run


def padded_png(path: Path, size: int) -> Path:
    """A valid 105x105 PNG followed by zeros up to ``size`` bytes (sparse: no disk used)."""
    drawing(3, size=105).save(path)
    with open(path, "r+b") as fh:
        fh.truncate(size)
    return path


def test_defaults_are_documented_and_overridable(monkeypatch):
    assert set(LIMITS) == {"FEWSHOT_MAX_IMAGE_BYTES", "FEWSHOT_MAX_PIXELS", "FEWSHOT_MAX_SEQUENCE_BYTES",
                           "FEWSHOT_MAX_SEQUENCE_POINTS", "FEWSHOT_MAX_TEXT_CHARS", "FEWSHOT_MAX_TEXT_FILE_BYTES"}
    guarantees = (REPO / "docs" / "GUARANTEES.md").read_text()
    for var in LIMITS:
        assert var in guarantees
    monkeypatch.setenv("FEWSHOT_MAX_PIXELS", "1e6")
    assert limit("FEWSHOT_MAX_PIXELS") == 1_000_000
    monkeypatch.setenv("FEWSHOT_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="FEWSHOT_MAX_PIXELS"):
        limit("FEWSHOT_MAX_PIXELS")


# --------------------------------------------------------------------------- images


def test_padded_png_of_600_mb_is_refused_before_reading(ix, tmp_path):
    p = padded_png(tmp_path / "padded.png", 600 * 2**20)
    tracemalloc.start()
    t = time.time()
    msg = fails_cleanly(ix, "add", ix, "--label", "x", p, match="padded.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "FEWSHOT_MAX_IMAGE_BYTES" in msg and "629,145,600 bytes" in msg
    assert peak < 50 * 2**20 and time.time() - t < 30
    fails_cleanly(ix, "classify", ix, p, match="FEWSHOT_MAX_IMAGE_BYTES")


def test_image_byte_limit_is_configurable(ix, tmp_path, monkeypatch):
    p = padded_png(tmp_path / "small.png", 50_000)
    monkeypatch.setenv("FEWSHOT_MAX_IMAGE_BYTES", "40000")
    fails_cleanly(ix, "add", ix, "--label", "x", p, match="small.png: 50,000 bytes")
    monkeypatch.setenv("FEWSHOT_MAX_IMAGE_BYTES", "60000")
    assert run("classify", ix, p).exit_code == 0


def test_pixel_limit_is_configurable_for_files(ix, tmp_path, monkeypatch):
    p = tmp_path / "wide.png"
    Image.new("L", (400, 300), 255).save(p)
    monkeypatch.setenv("FEWSHOT_MAX_PIXELS", "100000")
    msg = fails_cleanly(ix, "add", ix, "--label", "x", p, match="decompression bomb")
    assert "wide.png" in msg and "400x300" in msg


@pytest.mark.parametrize("kind", ["numpy", "pil", "torch"])
def test_in_memory_images_get_the_pixel_guard(kind, monkeypatch):
    monkeypatch.setenv("FEWSHOT_MAX_PIXELS", "10000")
    a = np.zeros((200, 300), np.float32)
    if kind == "pil":
        a = Image.fromarray(np.zeros((200, 300), np.uint8))
    elif kind == "torch":
        torch = pytest.importorskip("torch")
        a = torch.zeros(3, 200, 300)
    with pytest.raises(InputError, match="300x200 = 60,000 pixels"):
        to_pil(InputItem(a, "<mine>"))


def test_array_scaling_never_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="range"):
            to_pil(InputItem(np.array([[1e308, -1e308], [0, 1]]), "<wide>"))
        to_pil(InputItem(np.array([[65504, -65504], [0, 1]], np.float16), "<half>"))


# --------------------------------------------------------------------------- sequences


def test_sequence_points_are_checked_before_parsing(seq_index, tmp_path, monkeypatch):
    sidx, _good = seq_index
    p = tmp_path / "long.txt"
    p.write_text("START\n" + "".join(f"{i % 97},{i % 89},{i}\n" for i in range(5000)) + "BREAK\n")
    monkeypatch.setenv("FEWSHOT_MAX_SEQUENCE_POINTS", "1000")
    msg = fails_cleanly(sidx, "add", sidx, "--label", "x", p, match="long.txt")
    assert "FEWSHOT_MAX_SEQUENCE_POINTS" in msg


def test_sequence_file_bytes_are_capped(seq_index, tmp_path, monkeypatch):
    sidx, good = seq_index
    monkeypatch.setenv("FEWSHOT_MAX_SEQUENCE_BYTES", "20")
    fails_cleanly(sidx, "classify", sidx, good, match="FEWSHOT_MAX_SEQUENCE_BYTES")
    monkeypatch.delenv("FEWSHOT_MAX_SEQUENCE_BYTES")
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.write(b"START\n1,2,3\n")
        fh.truncate(62 * 2**20)  # sparse
    fails_cleanly(sidx, "add", sidx, "--label", "x", big, match="big.txt: 65,011,712 bytes")


def test_in_memory_sequence_points_are_capped(monkeypatch):
    from fewshot.sequences import SequencePreprocess, check_array

    monkeypatch.setenv("FEWSHOT_MAX_SEQUENCE_POINTS", "100")
    with pytest.raises(InputError, match="<arr>: 500 points"):
        check_array(np.zeros((500, 3)), "<arr>")
    with pytest.raises(InputError, match="500 points"):
        SequencePreprocess().apply(np.zeros((500, 3), np.float32), "<arr>")


# --------------------------------------------------------------------------- zip datasets


def omniglot_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def small_set(n_chars: int = 3, n_draw: int = 2) -> dict[str, bytes]:
    return {f"images_background/Alpha/character{c:02d}/{c}_{d:02d}.png": png_bytes(drawing(10 * c + d, size=105))
            for c in range(1, n_chars + 1) for d in range(n_draw)}


def test_zip_entry_size_is_read_from_the_directory(tmp_path, monkeypatch):
    from fewshot.data.omniglot import load_omniglot

    entries = small_set()
    big_name = "images_background/Alpha/character01/big.png"
    entries[big_name] = bytes(200_000)  # compresses to almost nothing, as a zip bomb does
    z = omniglot_zip(tmp_path / "bomb.zip", entries)
    assert z.stat().st_size < 20_000
    monkeypatch.setenv("FEWSHOT_MAX_IMAGE_BYTES", "100000")
    with pytest.raises(InputError, match="bomb.zip:images_background/Alpha/character01/big.png: 200,000 bytes"):
        load_omniglot(z)
    with zipfile.ZipFile(z) as zf:
        with pytest.raises(InputError, match="FEWSHOT_MAX_IMAGE_BYTES"):
            read_zip_entry(zf, big_name, z)


def test_zip_entries_get_the_pixel_guard_and_are_named(tmp_path, monkeypatch):
    entries = small_set()
    entries["images_background/Alpha/character02/huge.png"] = png_bytes(Image.new("1", (3000, 3000), 1))
    z = omniglot_zip(tmp_path / "pixels.zip", entries)
    monkeypatch.setenv("FEWSHOT_MAX_PIXELS", "1000000")
    msg = fails_cleanly(tmp_path / "none", "evaluate", "--data", z, "--ways", "2", "--episodes", "1",
                        match="pixels.zip:images_background/Alpha/character02/huge.png")
    assert "decompression bomb" in msg


def test_zip_entry_that_is_not_an_image_is_named(tmp_path):
    entries = small_set()
    entries["images_background/Alpha/character03/notes.png"] = b"not an image"
    z = omniglot_zip(tmp_path / "junk.zip", entries)
    msg = fails_cleanly(tmp_path / "none", "evaluate", "--data", z, "--ways", "2", "--episodes", "1",
                        match="junk.zip:images_background/Alpha/character03/notes.png")
    assert "BytesIO" not in msg


def test_stroke_zip_entries_are_capped(tmp_path, monkeypatch):
    from fewshot.data.strokes import load_omniglot_strokes

    body = "START\n" + "".join(f"{i},{i},{i}\n" for i in range(50)) + "BREAK\n"
    z = omniglot_zip(tmp_path / "strokes.zip", {f"strokes_background/Alpha/character01/{d}.txt": body.encode()
                                                for d in range(3)})
    monkeypatch.setenv("FEWSHOT_MAX_SEQUENCE_BYTES", "100")
    with pytest.raises(InputError, match="strokes.zip:strokes_background/Alpha/character01/0.txt"):
        load_omniglot_strokes(z)


# --------------------------------------------------------------------------- warnings


def test_warnings_reach_stderr_as_one_line(ix, monkeypatch):
    from fewshot.fewshot_index import FewShotIndex

    real = FewShotIndex.info

    def noisy(self):
        warnings.warn("overflow encountered in cast", RuntimeWarning)
        return real(self)

    monkeypatch.setattr(FewShotIndex, "info", noisy)
    r = run("info", ix, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["count"] == 6
    assert r.stderr == "warning: overflow encountered in cast\n"


def test_npy_sequence_files_are_capped_before_reading(tmp_path, monkeypatch):
    from fewshot.sequences import read_npy

    p = tmp_path / "seq.npy"
    np.save(p, np.zeros((100, 3), np.float32))
    monkeypatch.setenv("FEWSHOT_MAX_SEQUENCE_BYTES", "500")
    with pytest.raises(InputError, match="seq.npy: .* bytes, more than the limit of 500"):
        read_npy(p)
    monkeypatch.setenv("FEWSHOT_MAX_SEQUENCE_BYTES", "5000")
    monkeypatch.setenv("FEWSHOT_MAX_SEQUENCE_POINTS", "50")
    with pytest.raises(InputError, match="100 points"):
        read_npy(p)
