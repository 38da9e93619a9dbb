"""Multivariate and variable-length series: CSV/NPY readers, NaN padding, .ts files, channel checks."""
from __future__ import annotations

import numpy as np
import pytest

from fewshot.data.timeseries import load_ucr, parse_ts, series_set
from fewshot.errors import InputError
from fewshot.sequences import SequencePreprocess, load_sequence, read_csv, read_npy, standardise_resample

TS_FILE = """# two channels, unequal lengths, one padded with "?"
@problemName Toy
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
1,2,3,4:5,6,7,8:a
1,2,3,?:2,2,2,?:b
0.5,1.5,2.5,3.5,4.5:1,1,1,1:a
"""


def test_csv_with_several_channels(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("x,y,z\n1,2,3\n4,5,6\n")
    a = read_csv(p)
    assert a.shape == (2, 3) and a.dtype == np.float32 and a[1, 2] == 6


def test_csv_nan_padded_rows_are_dropped(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("1,2\n3,4\nnan,nan\nnan,nan\n")
    np.testing.assert_array_equal(read_csv(p), [[1, 2], [3, 4]])


def test_csv_nan_inside_is_an_error_naming_the_line(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("1,2\nnan,4\n5,6\n")
    with pytest.raises(InputError, match="line 2"):
        read_csv(p)


def test_npy_nan_padding_dropped_and_all_nan_refused(tmp_path):
    a = np.array([[1, 2, 3], [4, 5, 6], [np.nan] * 3], np.float32)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy"), a[:2])
    np.save(tmp_path / "b.npy", np.full((3, 2), np.nan))
    with pytest.raises(InputError, match="every row is NaN"):
        read_npy(tmp_path / "b.npy")
    with pytest.raises(InputError, match="row 0"):  # NaN not at the end stays an error
        load_sequence(np.array([[np.nan, 1.0], [2.0, 3.0]]))


def test_parse_ts_multivariate_unequal_lengths():
    series, labels = parse_ts(TS_FILE, "toy.ts")
    assert labels == ["a", "b", "a"]
    assert [s.shape for s in series] == [(4, 2), (3, 2), (4, 2)]  # "?" padding dropped; channels cut to the shortest


def test_parse_ts_missing_value_in_the_middle_is_an_error():
    bad = TS_FILE.replace("1,2,3,?:2,2,2,?:b", "1,?,3,4:2,2,2,2:b")
    with pytest.raises(InputError, match="line 9"):
        parse_ts(bad, "toy.ts")


def test_parse_ts_without_data_line():
    with pytest.raises(InputError, match="no @data"):
        parse_ts("@problemName X\n1,2:a\n", "x.ts")


def test_mismatched_channel_counts_give_a_clear_error():
    with pytest.raises(InputError, match="different channel counts"):
        series_set([np.zeros((5, 1)), np.zeros((5, 3))], ["a", "b"])
    pre = SequencePreprocess(kind="ts", n_features=0, steps=16)
    with pytest.raises(InputError, match="2 channel"):
        pre.apply_batch([np.ones((5, 1)), np.ones((6, 2))], ["one.csv", "two.csv"])
    with pytest.raises(InputError, match="reads 3 channel"):
        SequencePreprocess(kind="ts", n_features=3, steps=16).apply(np.ones((5, 2)), "x.csv")


def test_ts_preprocess_standardises_the_series_and_resamples():
    rng = np.random.default_rng(0)
    a = rng.normal(5, 3, (40, 2)) * [1, 100]
    out = SequencePreprocess(kind="ts", n_features=0, steps=64).apply(a.astype(np.float32))
    assert out.shape == (64, 2)
    z = standardise_resample(a, 40)  # the series as a whole: channels keep their relative scale
    np.testing.assert_allclose([z.mean(), z.std()], [0, 1], atol=1e-4)
    np.testing.assert_allclose(z.std(0)[1] / z.std(0)[0], a.std(0)[1] / a.std(0)[0], rtol=1e-4)
    assert standardise_resample(np.ones((1, 3)), 8).shape == (8, 3)  # one step, constant: zeros
    rows, lens = SequencePreprocess(kind="ts", n_features=0, steps=64).apply_batch([a, a[:7]], ["a", "b"])
    assert rows.shape == (128, 2) and lens.tolist() == [64, 64]


def test_preprocess_dict_of_older_kinds_is_unchanged():
    """Encoder files written before the ts kind keep their preprocess dict, hence their fingerprint."""
    assert "steps" not in SequencePreprocess(kind="strokes").to_dict()
    assert "steps" not in SequencePreprocess(kind="series", n_features=2).to_dict()
    d = SequencePreprocess(kind="ts", n_features=0, steps=32).to_dict()
    assert SequencePreprocess.from_dict(d) == SequencePreprocess(kind="ts", n_features=0, steps=32)


def test_load_ucr_from_a_folder(tmp_path, monkeypatch):
    folder = tmp_path / "Toy"
    folder.mkdir()
    (folder / "Toy_TRAIN.ts").write_text(TS_FILE)
    (folder / "Toy_TEST.ts").write_text(TS_FILE.replace(":a\n", ":b\n", 1))
    monkeypatch.setenv("FEWSHOT_AEON_DATA", str(tmp_path))
    ds = load_ucr("Toy")
    assert len(ds) == 6 and ds.kind == "sequence" and set(ds.groups) == {"Toy"}
    assert ds.labels[:3] == ["Toy/a", "Toy/b", "Toy/a"] and ds.sources[3] == "Toy_TEST:0"
    with pytest.raises(InputError, match="not found"):
        load_ucr("Missing")
