"""Sequence inputs: the three file formats (valid and malformed), preprocessing, packing, the stroke loader."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot.errors import InputError
from fewshot.inputs import InputItem
from fewshot.sequences import (SequenceAugment, SequencePreprocess, array_to_strokes, augment_and_preprocess,
                               fit_series_stats, load_sequence, parse_strokes, read_csv, read_npy, read_strokes,
                               render_strokes, stroke_features, strokes_to_array)

STROKES_ZIP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "omniglot" / \
    "strokes_background_small1.zip"

STROKE_TEXT = "START\n10,-10,0\n20,-10,5\n30,-10,9\nBREAK\n20,-5,20\n20,-15,30\nBREAK\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def input_error(read, p: Path) -> tuple[Path, str]:
    """``read(p)`` must raise InputError: ``p`` and the message."""
    with pytest.raises(InputError) as e:
        read(p)
    return p, str(e.value)


# --- Omniglot stroke files ----------------------------------------------------------------------
def test_stroke_file_reads_points_and_stroke_ends(tmp_path):
    a = read_strokes(write(tmp_path, "a.txt", STROKE_TEXT))
    assert a.dtype == np.float32 and a.shape == (5, 3)
    np.testing.assert_array_equal(a[:, :2], [[10, -10], [20, -10], [30, -10], [20, -5], [20, -15]])
    np.testing.assert_array_equal(a[:, 2], [0, 0, 1, 0, 1])
    assert [len(s) for s in array_to_strokes(a)] == [3, 2]


def test_stroke_file_without_final_break_and_with_crlf(tmp_path):
    text = STROKE_TEXT.replace("\n", "\r\n").rsplit("BREAK", 1)[0]
    a = read_strokes(write(tmp_path, "a.txt", text))
    assert a.shape == (5, 3) and a[-1, 2] == 1


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("   \n\n", "empty"),
    ("10,10,0\nBREAK\n", "line 1: an Omniglot stroke file starts with a START line"),
    ("START\nBREAK\n", "holds no points"),
    ("START\n1,2,3\n4,five,6\nBREAK\n", "line 3: expected x,y,t"),
    ("START\n1,2,3\n4,5\nBREAK\n", "line 3: expected 3 values"),
    ("START\n1,2,3\nnan,5,6\nBREAK\n", "line 3: NaN or infinite"),
    ("START\n1,2,3\nBREAK\nSTART\n1,2,3\n", "line 4: a second START"),
])
def test_malformed_stroke_files_name_the_file_and_line(tmp_path, text, fragment):
    p, msg = input_error(read_strokes, write(tmp_path, "bad.txt", text))
    assert str(p) in msg and fragment in msg


def test_binary_stroke_file_is_an_input_error(tmp_path):
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(InputError, match="UTF-8"):
        read_strokes(p)


# --- .npy ---------------------------------------------------------------------------------------
def test_npy_valid_2d_and_1d(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.int64).reshape(4, 3))
    a = read_npy(tmp_path / "a.npy")
    assert a.dtype == np.float32 and a.shape == (4, 3)
    np.save(tmp_path / "b.npy", np.linspace(0, 1, 7))
    assert read_npy(tmp_path / "b.npy").shape == (7, 1)


@pytest.mark.parametrize("arr, fragment", [
    (np.zeros((0, 3)), "empty"),
    (np.zeros((2, 3, 4)), "shape [T, F]"),
    (np.array([[1.0, np.nan], [2.0, 3.0]]), "row 0: NaN"),
    (np.array([["a", "b"]]), "numeric"),
])
def test_npy_malformed(tmp_path, arr, fragment):
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        read_npy(tmp_path / "x.npy")


def test_npy_pickle_is_refused_and_garbage_is_an_input_error(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="refused"):
        read_npy(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(InputError, match="junk.npy: not a valid .npy file"):
        read_npy(tmp_path / "junk.npy")
    full = (tmp_path / "obj.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(np.lib.format.MAGIC_PREFIX + full[6:30])  # a truncated header
    with pytest.raises(InputError, match="cut.npy: not a valid .npy file"):
        read_npy(tmp_path / "cut.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_npy(tmp_path / "empty.npy")


# --- .csv ---------------------------------------------------------------------------------------
def test_csv_with_and_without_header(tmp_path):
    a = read_csv(write(tmp_path, "a.csv", "ax,ay,az\n1,2,3\n4,5,6\n"))
    b = read_csv(write(tmp_path, "b.csv", "1,2,3\n4,5,6\n\n"))
    np.testing.assert_array_equal(a, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(a, b)
    assert read_csv(write(tmp_path, "c.csv", "0.5\n-1e3\n")).shape == (2, 1)


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("a,b\n", "header but no data"),
    ("1,2\n3,x\n", "line 2: expected 2 comma-separated numbers"),
    ("h1,h2\n1,2\n3,4,5\n", "line 3: expected 2 values"),
    ("1,2\n3,inf\n", "line 2: NaN or infinite"),
    ("1,2\n3\n", "line 2: expected 2 values"),
])
def test_csv_malformed(tmp_path, text, fragment):
    _, msg = input_error(read_csv, write(tmp_path, "bad.csv", text))
    assert "bad.csv" in msg and fragment in msg


# --- load_sequence ------------------------------------------------------------------------------
def test_load_sequence_dispatches_and_refuses_images(tmp_path):
    from PIL import Image

    p = write(tmp_path, "a.txt", STROKE_TEXT)
    assert load_sequence(p).shape == (5, 3)
    assert load_sequence(InputItem(p, "named")).shape == (5, 3)
    assert load_sequence(torch.ones(4, 2)).shape == (4, 2)
    with pytest.raises(InputError, match="image cannot go into a sequence"):
        load_sequence(InputItem(Image.new("L", (8, 8)), "<img>"))
    with pytest.raises(InputError, match=r"\.png"):
        load_sequence(InputItem(write(tmp_path, "x.png", "x"), "x.png"))


# --- preprocessing ------------------------------------------------------------------------------
def _reference_features(strokes: list[np.ndarray], step: float) -> np.ndarray:
    """A slow, per-stroke float64 version of stroke_features' resampled positions."""
    allp = np.concatenate(strokes).astype(np.float64)
    lo, hi = allp.min(0), allp.max(0)
    norm = [(s.astype(np.float64) - (lo + hi) / 2) / (hi - lo).max() for s in strokes]
    out = []
    for s in norm:
        cum = np.concatenate([[0], np.cumsum(np.sqrt((np.diff(s, axis=0) ** 2).sum(1)))])
        if len(s) < 2 or cum[-1] == 0:
            out.append(s[:1])
            continue
        q = np.linspace(0, cum[-1], int(np.ceil(cum[-1] / step)) + 1)
        out.append(np.stack([np.interp(q, cum, s[:, 0]), np.interp(q, cum, s[:, 1])], 1))
    return np.concatenate(out)


def test_stroke_features_match_a_per_stroke_reference():
    rng = np.random.default_rng(0)
    strokes = [np.cumsum(rng.normal(0, 3, (n, 2)), 0) for n in (30, 1, 12, 2)]
    strokes.append(np.repeat(strokes[0][:1], 3, 0))  # a zero-length stroke (a dot drawn in place)
    a = strokes_to_array(strokes)
    f = stroke_features(a, 0.037)
    ref = _reference_features(strokes, 0.037)
    np.testing.assert_allclose(f[:, 3:], ref, atol=1e-5)
    # offsets integrate back to positions; pen_up marks the first point of strokes 2..n
    np.testing.assert_allclose(np.cumsum(f[:, :2], 0), f[:, 3:], atol=1e-4)
    assert f[:, 2].sum() == len(strokes) - 1 and f[0, 2] == 0
    assert np.abs(f[:, 3:]).max() <= 0.5 + 1e-6  # bounding box scaled to 1, centred


def test_stroke_features_are_invariant_to_position_and_scale():
    a = strokes_to_array([np.array([[0, 0], [10, 5], [20, 0]], np.float32), np.array([[5, 5], [5, -5]], np.float32)])
    b = a.copy()
    b[:, :2] = b[:, :2] * 3.5 + np.array([100, -40])
    np.testing.assert_allclose(stroke_features(a), stroke_features(b), atol=1e-5)


def test_max_length_is_a_clear_error_not_a_truncation():
    pre = SequencePreprocess(kind="series", n_features=2, max_length=10)
    assert pre.apply(np.zeros((10, 2)), "ok").shape == (10, 2)
    with pytest.raises(InputError, match="11 steps.*max_length 10"):
        pre.apply(np.zeros((11, 2)), "long.npy")


def test_series_standardisation_uses_stored_statistics():
    rng = np.random.default_rng(1)
    seqs = [rng.normal([5, -2], [3, 0.5], (int(n), 2)) for n in rng.integers(20, 40, 30)]
    mean, std = fit_series_stats(seqs)
    pre = SequencePreprocess(kind="series", n_features=2, mean=mean, std=std)
    allx = np.concatenate([pre.apply(s) for s in seqs])
    np.testing.assert_allclose(allx.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(allx.std(0), 1, atol=1e-3)
    assert SequencePreprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(InputError, match="reads 2 features per step, got 3"):
        pre.apply(np.zeros((5, 3)), "x")


def test_augmentation_changes_the_trajectory_but_not_its_layout():
    a = strokes_to_array([np.array([[0, 0], [10, 5], [20, 0]], np.float32), np.array([[5, 5], [5, -5]], np.float32)])
    pre = SequencePreprocess()
    aug = SequenceAugment()
    x = augment_and_preprocess(a, pre, aug, np.random.default_rng(0))
    y = augment_and_preprocess(a, pre, aug, np.random.default_rng(0))
    z = augment_and_preprocess(a, pre, aug, np.random.default_rng(1))
    np.testing.assert_array_equal(x, y)  # seeded
    assert x.shape[1] == 5 and x[:, 2].sum() == 1
    assert x.shape != z.shape or not np.allclose(x, z)
    s = SequencePreprocess(kind="series", n_features=2)
    w = augment_and_preprocess(np.ones((50, 2)), s, aug, np.random.default_rng(0))
    assert 40 <= len(w) <= 63 and w.shape[1] == 2


def test_render_strokes_draws_ink_where_the_pen_went():
    a = strokes_to_array([np.array([[20, -50], [80, -50]], np.float32)])
    im = np.asarray(render_strokes(a))
    assert im.shape == (105, 105) and im[50, 50] == 0 and im[10, 10] == 255
    far = a.copy()
    far[:, :2] *= 1000  # outside the Omniglot canvas: fitted into it
    assert (np.asarray(render_strokes(far)) < 128).sum() > 50


# --- the Omniglot stroke loader -----------------------------------------------------------------
def test_loader_reads_a_folder_and_skips_junk(tmp_path):
    from fewshot.data.strokes import load_omniglot_strokes

    for alpha in ("Aa", "Bb"):
        for ch in ("character01", "character02"):
            d = tmp_path / "strokes" / alpha / ch
            d.mkdir(parents=True)
            for k in range(3):
                write(d, f"{k}.txt", STROKE_TEXT)
            write(d, ".DS_Store", "junk")
    mac = tmp_path / "strokes" / "__MACOSX" / "Aa" / "character01"
    mac.mkdir(parents=True)
    write(mac, "._0.txt", "\x00junk")
    ds = load_omniglot_strokes(tmp_path / "strokes")
    assert len(ds) == 12 and ds.classes == ["Aa/character01", "Aa/character02", "Bb/character01", "Bb/character02"]
    rest, held = ds.split_groups(["Bb"])
    assert set(held.groups) == {"Bb"} and len(rest) == 6
    zpath = tmp_path / "s.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in (tmp_path / "strokes").rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(tmp_path).as_posix())
    assert load_omniglot_strokes(zpath, alphabets=["Aa"]).labels == ds.subset(range(6)).labels
    with pytest.raises(ValueError, match="unknown alphabet"):
        load_omniglot_strokes(zpath, alphabets=["Zz"])


def test_sequence_folder_loader(tmp_path):
    from fewshot.data.strokes import load_sequence_folder

    for cls in ("up", "down"):
        (tmp_path / cls).mkdir()
        np.save(tmp_path / cls / "a.npy", np.ones((4, 2)))
        write(tmp_path / cls, "b.csv", "1,2\n3,4\n")
    ds = load_sequence_folder(tmp_path)
    assert ds.classes == ["down", "up"] and len(ds) == 4 and ds.items[0].shape[1] == 2
    write(tmp_path, "loose.npy", "x")
    with pytest.raises(InputError, match="folder named after its class"):
        load_sequence_folder(tmp_path)


def test_real_omniglot_strokes_parse():
    if not STROKES_ZIP.exists():
        pytest.skip(f"Omniglot strokes not found at {STROKES_ZIP} (../shared/data)")
    from fewshot.data.strokes import load_omniglot_strokes

    ds = load_omniglot_strokes(STROKES_ZIP, alphabets=["Greek"])
    assert len(ds) == 480 and len(ds.classes) == 24 and set(ds.groups) == {"Greek"}
    lengths = [len(SequencePreprocess().apply(s)) for s in ds.items]
    assert min(lengths) > 5 and max(lengths) < SequencePreprocess().max_length


def test_parse_strokes_fast_and_slow_paths_agree():
    text = "START\n" + "".join(f"{i}.5,{-i}.25,{10 * i}\n" for i in range(50)) + "BREAK\n1,2,3\nBREAK\n"
    fast = parse_strokes(text)
    slow = parse_strokes(text.replace("BREAK\n1,2,3", "BREAK\n 1, 2, 3 "))  # spaces: still valid numbers
    assert [len(s) for s in fast] == [50, 1]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_batch_preprocessing_equals_one_at_a_time():
    from fewshot.sequences import stroke_features_batch

    rng = np.random.default_rng(5)
    arrays = []
    for k in range(7):
        strokes = [np.cumsum(rng.normal(0, 2, (int(n), 2)), 0) for n in rng.integers(1, 30, int(rng.integers(1, 4)))]
        arrays.append(strokes_to_array(strokes))
    arrays.append(np.array([[3.0, 4.0, 1.0]], np.float32))  # a single dot
    arrays.append(np.cumsum(rng.normal(0, 1, (9, 2)), 0).astype(np.float32))  # [T, 2]: one stroke
    for step in (0.05, 0.0):
        rows, lens = stroke_features_batch(arrays, step)
        one = [stroke_features(a, step) for a in arrays]
        assert list(lens) == [len(o) for o in one]
        np.testing.assert_allclose(rows, np.concatenate(one), atol=1e-5)
    pre = SequencePreprocess(max_length=len(stroke_features(arrays[0])))
    longer = arrays[0].copy()
    longer[:, :2] *= np.array([1.0, 0.2])  # flatter: the same path length is a larger share of the box
    longer = np.concatenate([longer, longer[::-1]])
    assert len(pre.apply_batch([arrays[0]], ["ok.txt"])[0]) == pre.max_length
    with pytest.raises(InputError, match="long.txt: sequence has"):
        pre.apply_batch([arrays[0], longer], ["ok.txt", "long.txt"])
