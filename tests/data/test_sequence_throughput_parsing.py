"""The shortcuts of the sequence-embedding pipeline give exactly what the plain code gives.

``parse_stroke_files`` (many Omniglot stroke files parsed in one vectorised pass),
``load_sequences``, ``pack_rows`` and the encoder's one-``stat`` path expansion are
there for throughput (benchmarks/sequence_throughput.py); each is checked here
against the code it stands in for: the same arrays, bit for bit, and the same
errors, naming the same (first) bad file.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from fewshot import sequences as S
from fewshot.encoders.sequence import _regular_file_items, pack_rows
from fewshot.errors import InputError
from fewshot.inputs import SEQUENCE_SUFFIXES, InputItem, expand_inputs

ROOT = Path(__file__).resolve().parents[2]
STROKES_ZIP = ROOT / ".." / "shared" / "data" / "omniglot" / "strokes_background_small1.zip"


def reference(data: bytes, name: str = "f.txt") -> np.ndarray | str:
    """One file the plain way (parse_strokes, line by line where needed): an array, or the error."""
    try:
        return S.strokes_to_array(S.parse_strokes(S._decode(data, name), name))
    except InputError as exc:
        return str(exc)


def batched(datas: list[bytes], names: list[str]) -> list[np.ndarray] | str:
    try:
        rows, lens = S.parse_stroke_files(datas, names)
    except InputError as exc:
        return str(exc)
    ends = np.cumsum(lens)
    return [rows[e - n:e] for e, n in zip(ends, lens)]


def same(a, b) -> bool:
    """Equal arrays bit for bit (the sign of a zero included), or equal error messages."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def omniglot_files() -> list[tuple[str, bytes]]:
    if not STROKES_ZIP.exists():
        pytest.skip(f"Omniglot strokes not found at {STROKES_ZIP} (../shared/data)")
    with zipfile.ZipFile(STROKES_ZIP) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".txt") and "__MACOSX" not in n)
        return [(n, zf.read(n)) for n in names]


def random_number(rng: random.Random) -> str:
    sign = rng.choice(["", "", "-"])
    kind = rng.random()
    if kind < 0.5:
        return f"{sign}{rng.randint(0, 120)}.{rng.randint(0, 10 ** rng.randint(1, 8)):0{rng.randint(1, 8)}d}"
    if kind < 0.7:
        return f"{sign}{rng.randint(0, 10 ** rng.randint(1, 6))}"
    if kind < 0.8:
        return f"{sign}{rng.choice(['0', '0.0', '00.000', '0.'])}"  # zeros, signed ones too
    if kind < 0.9:
        return f"{sign}{rng.randint(0, 99)}." if rng.random() < 0.5 else f".{rng.randint(0, 999)}"
    return f"{sign}{rng.randint(10 ** 14, 10 ** 16)}.{rng.randint(0, 99)}"  # near 2**53: exact or not


def random_stroke_text(rng: random.Random) -> str:
    lines = ["START"]
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.1:
            lines.append("BREAK")  # an empty stroke
        for _ in range(rng.randint(1, 6)):
            lines.append(",".join(random_number(rng) for _ in range(3)))
        lines.append("BREAK")
    if rng.random() < 0.2:
        lines.pop()  # no final BREAK
    text = "\n".join(lines) + rng.choice(["\n", "", "\n\n"])
    return text.replace("\n", "\r\n") if rng.random() < 0.1 else text


MUTATIONS = [" ", "\t", "+", "e", "E", "e-3", ".", "..", "-", "--", ",", ",,", "\n", "\n\n", "\r", "x", "B",
             "BREAK", "\nBREAK\n", "BREAK\n", "START", "\nSTART\n", "nan", "inf", "-inf", "1e400", "\x00", "é",
             "9" * 20, "-" + "9" * 20, "0x1", "_", "1,2", "/", ";", "\ufeff"]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text) + 1)
        if rng.random() < 0.3 and i < len(text):
            text = text[:i] + text[i + 1:]  # delete a character
        else:
            text = text[:i] + rng.choice(MUTATIONS) + text[i:]
    return text


# --- parse_stroke_files -------------------------------------------------------------------------
def test_every_omniglot_file_parses_bit_for_bit_as_before():
    files = omniglot_files()
    names, datas = [n for n, _ in files], [d for _, d in files]
    ref = [reference(d, n) for n, d in files]
    assert not any(isinstance(r, str) for r in ref)
    for bs in (256, 1, 1000):
        got = []
        for i in range(0, len(datas), bs):
            got += batched(datas[i:i + bs], names[i:i + bs])
        assert len(got) == len(ref) and all(same(g, r) for g, r in zip(got, ref))
    # and the fast path itself took them (not the line-by-line fallback)
    assert S._fast_stroke_rows([S._stroke_body(d) for d in datas[:256]]) is not None


def test_random_well_formed_files_match_the_plain_parser():
    rng = random.Random(0)
    texts = [random_stroke_text(rng) for _ in range(400)]
    datas = [t.encode() for t in texts]
    ref = [reference(d) for d in datas]
    for d, r in zip(datas, ref):
        assert same(batched([d], ["f.txt"])[0] if not isinstance(r, str) else batched([d], ["f.txt"]), r), d
    for i in range(0, len(datas), 37):  # in batches
        ok = [j for j in range(i, min(i + 37, len(datas))) if not isinstance(ref[j], str)]
        got = batched([datas[j] for j in ok], ["f.txt"] * len(ok))
        assert all(same(g, ref[j]) for g, j in zip(got, ok))


def test_numbers_are_the_correctly_rounded_decimals():
    rng = random.Random(1)
    toks = [random_number(rng) for _ in range(3000)]
    toks = [t for t in toks if t.lstrip("-").replace(".", "").isdigit() and len(t.replace("-", "").replace(".", "")) <= 15]
    toks = toks[:len(toks) // 3 * 3]
    text = "START\n" + "\n".join(",".join(toks[i:i + 3]) for i in range(0, len(toks), 3)) + "\n"
    fast = S._fast_stroke_rows([S._stroke_body(text.encode())])
    assert fast is not None
    want = np.array([float(t) for t in toks]).reshape(-1, 3)[:, :2].astype(np.float32)
    assert fast[0][:, :2].tobytes() == want.tobytes()  # float(): correctly rounded, like strtod


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # parse_strokes on 1e400
def test_mutated_files_give_the_same_arrays_or_the_same_errors():
    rng = random.Random(2)
    for case in range(600):
        text = mutate(random_stroke_text(rng), rng)
        data = text.encode("utf-8") if rng.random() < 0.95 else text.encode("latin-1", errors="replace")
        r = reference(data, "m.txt")
        got = batched([data], ["m.txt"])
        assert same(got if isinstance(got, str) else got[0], r), (case, text)


def test_files_built_from_odd_lines_match_the_plain_parser():
    """Whole lines, valid and nearly valid, in random order: what the fast path takes must be right."""
    rng = random.Random(4)

    def num() -> str:
        return rng.choice([random_number(rng), "0", "-0", "-1", "5.", ".5", "007", "-0.0", "12.50"])

    row = lambda k=3: ",".join(num() for _ in range(k))  # noqa: E731
    lines = [row] * 6 + [lambda: row(2), lambda: row(4), lambda: row(6), lambda: "", lambda: "BREAK",
                         lambda: "BREAK", lambda: " BREAK", lambda: "BREAK ", lambda: row() + ",",
                         lambda: "," + row(), lambda: num(), lambda: "START", lambda: "\r", lambda: row() + "\r",
                         lambda: " " + row(), lambda: row() + "BREAK", lambda: "BREAK" + row(), lambda: "BREAK,",
                         lambda: "BRE\rAK"]
    fast = 0
    for case in range(1500):
        head = rng.choice(["START\n", "START\n", "START\r\n", " START \n", "\nSTART\n", "START"])
        body = rng.choice(["\n", "\r\n"]).join(rng.choice(lines)() for _ in range(rng.randint(1, 8)))
        data = (head + body + rng.choice(["", "\n", "\n\n", "\r\n"])).encode()
        r = reference(data, "m.txt")
        got = batched([b"START\n1,2,3\n", data, b"START\n4,5,6\nBREAK"], ["a.txt", "m.txt", "c.txt"])
        assert got == r if isinstance(r, str) else same(got[1], r), data
        body_ = S._stroke_body(data)
        fast += body_ is not None and S._fast_stroke_rows([body_]) is not None
    assert fast > 50  # the fast path was tried on many of them


def test_in_a_batch_the_first_bad_file_is_named():
    rng = random.Random(3)
    for case in range(80):
        texts = [random_stroke_text(rng) for _ in range(rng.randint(2, 12))]
        for _ in range(rng.randint(0, 3)):
            j = rng.randrange(len(texts))
            texts[j] = mutate(texts[j], rng)
        datas = [t.encode() for t in texts]
        names = [f"{i}.txt" for i in range(len(texts))]
        ref = [reference(d, n) for d, n in zip(datas, names)]
        first_bad = next((r for r in ref if isinstance(r, str)), None)
        got = batched(datas, names)
        if first_bad is not None:
            assert got == first_bad, case
        else:
            assert all(same(g, r) for g, r in zip(got, ref)), case


@pytest.mark.parametrize("text", [
    "START\n1,2,3\nBREAK\n",
    "START\n-0,-0.0,0\n-0.5,0.25,1\nBREAK\n",
    "START\nBREAK\n1,2,3\nBREAK\nBREAK\n4,5,6\n",
    "\n\n  START  \n\n1.,.5,7\n4,5,6\n",
    "START\r\n1,2,3\r\nBREAK\r\n4,5,6\r\nBREAK\r\n",
    "START\n1,2\n3,4,5,6\nBREAK\n",          # three numbers a row only per stroke: as before
    "START\n1,2,3\n\n4,5,6\nBREAK\n",        # a blank line inside a stroke
    "START\n 1, 2, 3 \nBREAK\n",             # spaces
    "START\n1,2,3BREAK\n4,5,6\n",            # BREAK glued to a number
    "START\n1,2,3\nBREAK4,5,6,7\n",
    "START\n1e2,2,3\nBREAK\n",
    "START\n1.2.3,2,3\nBREAK\n",
    "START\n-,2,3\nBREAK\n",
    "START\n-.5,2,3\nBREAK\n",
    "START\n1-2,2,3\nBREAK\n",
    "START\n99999999999999999999,2,3\nBREAK\n",
    "START\n9007199254740993,2,3\nBREAK\n",   # 2**53 + 1: not exact in float64
    "START\n1,2,3\nBREAK\nSTART\n1,2,3\n",
    "START\nBREAK\n",
    "START\n1,2,3\n4,five,6\nBREAK\n",
    "START\n1,2,3\nBRE\rAK\n4,5,6\n",         # a CR that is no line end
    "START\n1,2,3\r\r\nBREAK\n",
])
def test_edge_cases_match_the_plain_parser(text):
    data = text.encode()
    got = batched([data], ["e.txt"])
    r = reference(data, "e.txt")
    assert same(got if isinstance(got, str) else got[0], r)
    two = batched([b"START\n7,8,9\n", data], ["ok.txt", "e.txt"])  # and next to a good file
    assert same(two if isinstance(two, str) else two[1], r)


def test_numpy_that_warns_instead_of_raising(monkeypatch):
    monkeypatch.setattr(S, "_FROMSTRING_RAISES", False)
    assert S._int_tokens(b"1,x,3") is None
    np.testing.assert_array_equal(S._int_tokens(b"1,-2,3,"), [1, -2, 3])
    assert same(batched([b"START\n1.5,2,3\n"], ["w.txt"])[0], reference(b"START\n1.5,2,3\n"))


# --- reading files: read_strokes, load_sequences ------------------------------------------------------
def test_read_strokes_and_load_sequences_fail_like_one_by_one(tmp_path):
    def write(name, content):
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return InputItem(p, str(p))

    good = write("good.txt", "START\n1,2,3\n4,5,6\nBREAK\n")
    bad = write("bad.txt", "START\n1,2,3\n4,x,6\nBREAK\n")
    empty = write("empty.txt", "")
    binary = write("bin.txt", b"\xff\xfe\x00garbage")
    npy = tmp_path / "a.npy"
    np.save(npy, np.ones((4, 3), np.float32))
    npy_item = InputItem(npy, str(npy))
    missing = InputItem(tmp_path / "missing.txt", "missing.txt")
    folder = tmp_path / "dir.txt"
    folder.mkdir()
    as_dir = InputItem(folder, str(folder))

    def one_by_one(items):
        try:
            return [S.load_sequence(it) for it in items]
        except InputError as exc:
            return str(exc)

    def together(items):
        try:
            return S.load_sequences(items)
        except InputError as exc:
            return str(exc)

    for items in ([good, npy_item, good], [good, bad, empty], [good, empty, bad], [binary, bad], [bad, binary],
                  [good, missing], [as_dir, good], [npy_item, bad, missing], [good, good, binary]):
        want, got = one_by_one(items), together(items)
        if isinstance(want, str):
            assert got == want
        else:
            assert len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    assert same(S.read_strokes(good.value), S.strokes_to_array(S.parse_strokes(good.value.read_text())))
    with pytest.raises(InputError, match="line 3: expected x,y,t"):
        S.read_strokes(bad.value)


# --- packing, path expansion ----------------------------------------------------------------------
def test_pack_rows_is_pack_padded_sequence():
    rng = np.random.default_rng(0)
    for trial in range(100):
        lens = rng.integers(1, 15, int(rng.integers(1, 30)))
        if trial % 4 == 0:
            lens[:] = lens[0]  # all tied
        rows = rng.normal(size=(int(lens.sum()), 5)).astype(np.float32)
        pad = np.zeros((len(lens), lens.max(), 5), np.float32)
        for i, (s, n) in enumerate(zip(np.cumsum(lens) - lens, lens)):
            pad[i, :n] = rows[s:s + n]
        want = pack_padded_sequence(torch.from_numpy(pad), torch.from_numpy(lens), batch_first=True,
                                    enforce_sorted=False)
        got = pack_rows(rows, lens)
        for w, g in zip(want, got):
            assert w.dtype == g.dtype and torch.equal(w, g)
    with pytest.raises(InputError, match="empty sequence"):
        pack_rows(np.zeros((2, 5), np.float32), np.array([2, 0]))


def test_one_stat_path_expansion_matches_expand_inputs(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.txt"
        p.write_text("START\n1,2,3\n")
        paths.append(p)
    for inputs in (paths, [str(p) for p in paths], tuple(paths), [os.fspath(p) for p in paths]):
        got = _regular_file_items(inputs)
        assert got == expand_inputs(inputs, SEQUENCE_SUFFIXES)
    assert _regular_file_items([tmp_path]) is None  # a folder: expand_inputs expands it
    assert _regular_file_items(paths + [tmp_path / "missing.txt"]) is None  # expand_inputs names it
    assert _regular_file_items([np.zeros((3, 3))]) is None


# --- the whole pipeline against the raw forward -------------------------------------------------------
def test_embed_equals_the_raw_forward_on_the_prepared_batches(tmp_path):
    from fewshot import encoders

    if "omniglot-strokes-gru" not in {s.name for s in encoders.available()}:
        pytest.skip("the shipped stroke encoder is not installed")
    files = []
    for name, data in omniglot_files()[::90]:
        p = tmp_path / Path(name).name
        p.write_bytes(data)
        files.append(p)
    enc = encoders.load("omniglot-strokes-gru")
    items = [InputItem(f, str(f)) for f in files]
    with torch.inference_mode():
        raw = torch.cat([enc.module(enc.prepare_batch(items[i:i + 8])) for i in range(0, len(items), 8)]).numpy()
    if enc.centre is not None:
        raw = raw - enc.centre
    from_files = enc.embed(files, batch_size=8)
    from_arrays = enc.embed([S.load_sequence(f) for f in files], batch_size=8)
    assert from_files.tobytes() == raw.astype(np.float32).tobytes()
    np.testing.assert_array_equal(from_files, from_arrays)


def test_benchmark_script_runs(tmp_path):
    if not STROKES_ZIP.exists():
        pytest.skip(f"Omniglot strokes not found at {STROKES_ZIP} (../shared/data)")
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sequence_throughput.py"), "--data",
                        str(STROKES_ZIP), "--n", "24", "--batch-size", "8", "--repeats", "1", "--json",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["n"] == 24 and res["ratio_files_vs_raw"] > 0 and set(res["stages_ms"]) >= {"read", "parse"}
    assert max(res["max_abs_diff_vs_raw"].values()) == 0.0
