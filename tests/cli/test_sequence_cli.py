"""`fewshot train --arch rnn-*` and `fewshot evaluate` on stroke data (issue #4), through the CLI."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke

# omniglot-strokes-gru as shipped: 20-way 1-shot within Greek, 5 queries, 1000 episodes, seed 0
# (the number demos/train_stroke_encoder.py --eval-only reports for these weights).
SHIPPED_FINGERPRINT, SHIPPED_GREEK_ACC = "5c7a378691a1273e", 0.85021


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cli():
    from fewshot.cli import cli as group

    return group


def one_error_line(r, code: int = 1) -> str:
    assert r.exit_code == code, (r.exit_code, r.output)
    assert r.stdout == "" and "Traceback" not in r.output
    line = r.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, r.stderr
    return line


@pytest.fixture(scope="module")
def tiny_strokes(tmp_path_factory) -> Path:
    """An Omniglot-strokes-layout zip: 3 alphabets x 3 characters x 6 jittered drawings (a few strokes each)."""
    path = tmp_path_factory.mktemp("strokes") / "tiny_strokes.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for alpha in ("Alpha", "Beta", "Held"):
            for c in range(1, 4):
                strokes = [rng.uniform(10, 95, (int(rng.integers(3, 7)), 2)) * [1, -1]
                           for _ in range(int(rng.integers(1, 3)))]
                for k in range(1, 7):
                    lines = ["START"]
                    for st in strokes:
                        pts = st + rng.normal(0, 2, st.shape)
                        lines += [f"{x:.2f},{y:.2f},{10 * i}" for i, (x, y) in enumerate(pts)] + ["BREAK"]
                    zf.writestr(f"strokes_background/{alpha}/character{c:02d}/{c:02d}_{k:02d}.txt",
                                "\n".join(lines) + "\n")
        zf.writestr("__MACOSX/strokes_background/._x.txt", b"junk")
    return path


def train_args(data, out, steps, hidden=8):
    return ["train", "--arch", "rnn-gru", "--data", str(data), "--out", str(out), "--hidden", str(hidden),
            "--ways", "4", "--queries", "2", "--steps", str(steps), "--held-out", "Held", "--threads", "1",
            "--json"]


def test_train_rnn_gru_exports_an_encoder_that_init_and_evaluate_take(cli, tiny_strokes, tmp_path):
    import torch

    from fewshot import encoders

    out = tmp_path / "gru"
    r = invoke(cli, train_args(tiny_strokes, out, 2))
    assert r.exit_code == 0, r.stderr
    first = json.loads(r.stdout)
    assert (first["arch"], first["input_kind"], first["steps"], first["resumed_from"]) == ("rnn-gru", "sequence", 2, 0)
    assert first["train_classes"] == 6 and first["val_classes"] == 3 and first["held_out"] == ["Held"]
    assert 0.0 <= first["best_val_acc"] <= 1.0
    for f in ("last.pt", "best.pt", "encoder.pt", "log.jsonl", "train_args.json"):
        assert (out / f).is_file(), f
    r = invoke(cli, train_args(tiny_strokes, out, 3))  # the same command with more steps resumes
    assert r.exit_code == 0, r.stderr
    second = json.loads(r.stdout)
    assert second["resumed_from"] == 2 and torch.load(out / "last.pt", weights_only=True)["step"] == 3
    assert "--hidden 8" in one_error_line(invoke(cli, train_args(tiny_strokes, out, 4, hidden=16)))

    enc = encoders.load(str(out / "encoder.pt"))
    assert enc.input_kind == "sequence" and enc.fingerprint == second["fingerprint"] and enc.name == "gru"
    assert enc.module.cell == "gru" and enc.module.fwd[0].hidden_size == 8
    r = invoke(cli, ["init", str(tmp_path / "idx"), "--encoder", str(out / "encoder.pt"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["input_kind"] == "sequence"

    r = invoke(cli, ["evaluate", "--data", str(tiny_strokes), "--encoder", str(out / "encoder.pt"),
                  "--alphabets", "Held", "--within-alphabet", "--ways", "3", "--episodes", "5", "--json"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert {"accuracy", "ci95", "precision", "recall", "f1", "protocol", "encoder", "fingerprint"} <= set(res)
    assert 0.0 <= res["accuracy"] <= 1.0 and res["fingerprint"] == second["fingerprint"]
    p = res["protocol"]
    assert (p["ways"], p["shots"], p["queries"], p["episodes"], p["within_group"]) == (3, 1, 5, 5, True)
    assert (p["input_kind"], p["n_examples"], p["n_images"], p["n_classes"]) == ("sequence", 18, None, 3)
    assert p["alphabets"] == ["Held"] and p["dataset"] == str(tiny_strokes)


def test_evaluate_shipped_stroke_encoder_on_greek(cli, strokes_zip):
    from fewshot import encoders
    from fewshot.data.strokes import load_omniglot_strokes
    from fewshot.evaluation.fusion import evaluate_sequences

    from fewshot.encoders.sequence_builtin import DEFAULT_SEQUENCE_ENCODER

    # no --encoder: stroke data gets the stroke default (GRU + CNN on the rendering)
    r = invoke(cli, ["evaluate", "--data", str(strokes_zip), "--alphabets", "Greek", "--within-alphabet",
                  "--ways", "20", "--episodes", "30", "--json"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["encoder"] == DEFAULT_SEQUENCE_ENCODER == "omniglot-strokes-fusion"
    assert res["accuracy"] > 0.8, "chance is 0.05"
    # the GRU alone
    r = invoke(cli, ["evaluate", "--data", str(strokes_zip), "--encoder", "omniglot-strokes-gru", "--alphabets",
                  "Greek", "--within-alphabet", "--ways", "20", "--shots", "1", "--queries", "5", "--episodes",
                  "1000", "--seed", "0", "--json"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["encoder"] == "omniglot-strokes-gru"
    assert 0.0 <= res["accuracy"] <= 1.0 and res["accuracy"] > 0.5, "chance is 0.05"
    assert res["protocol"]["n_classes"] == 24 and res["protocol"]["input_kind"] == "sequence"
    # the same episodes and number as the training demo's shared evaluation code
    greek = load_omniglot_strokes(strokes_zip, alphabets=["Greek"])
    ref = evaluate_sequences(encoders.load("omniglot-strokes-gru"), greek, 20, 1, 5, 1000, 0, True)
    assert res["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-9)
    assert res["ci95"] == pytest.approx(ref["ci95"], rel=1e-12)  # one kernel, one CI convention
    if res["fingerprint"] == SHIPPED_FINGERPRINT:
        assert res["accuracy"] == pytest.approx(SHIPPED_GREEK_ACC, abs=1e-6)


def test_kind_mismatches_are_one_error_line(cli, tiny_strokes, tmp_path):
    line = one_error_line(invoke(cli, ["evaluate", "--data", "digits", "--encoder", "omniglot-strokes-gru",
                                    "--ways", "5", "--episodes", "2", "--json"]))
    assert "omniglot-strokes-gru takes sequences" in line and "holds images" in line
    line = one_error_line(invoke(cli, ["evaluate", "--data", str(tiny_strokes), "--encoder", "omniglot-conv4",
                                    "--ways", "3", "--episodes", "2", "--json"]))
    assert "omniglot-conv4 takes images" in line and "holds sequences" in line
    line = one_error_line(invoke(cli, ["train", "--arch", "rnn-lstm", "--data", "digits", "--out",
                                    str(tmp_path / "a"), "--steps", "1", "--json"]))
    assert "trains on sequences" in line and "holds images" in line
    line = one_error_line(invoke(cli, ["train", "--data", str(tiny_strokes), "--out", str(tmp_path / "b"),
                                    "--steps", "1", "--json"]))
    assert "--arch conv trains on images" in line and "rnn-gru" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert "--width" in one_error_line(invoke(cli, ["train", "--arch", "rnn-gru", "--width", "8", "--data",
                                                 str(tiny_strokes), "--out", str(tmp_path / "c")]), code=2)
    assert "--tta" in one_error_line(invoke(cli, ["evaluate", "--data", str(tiny_strokes), "--tta"]), code=2)


# --- fine-tuning a stroke encoder, strict JSON ---------------------------------------------------
def strict_json(text: str):
    """Parse as JSON proper: NaN / Infinity (which json.dumps writes by default) are errors."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_finetune_the_stroke_gru_and_switch_an_index(cli, tiny_strokes, tmp_path):
    """--data index --into IDX with the stroke GRU: trains on the stored strokes, re-embeds them atomically."""
    from fewshot import FewShotIndex, encoders
    from fewshot.data.strokes import load_omniglot_strokes

    ds = load_omniglot_strokes(tiny_strokes)
    idx = tmp_path / "idx"
    with FewShotIndex.create(idx, encoder="omniglot-strokes-gru") as index:
        index.add_many([(c, [s for s, lab in zip(ds.items, ds.labels) if lab == c][:3]) for c in ds.classes])
    out = tmp_path / "gru_ft.pt"
    r = invoke(cli, ["finetune", "--encoder", "omniglot-strokes-gru", "--data", "index", "--into", str(idx),
                  "--steps", "3", "--ways", "4", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = strict_json(r.stdout)
    assert d["input_kind"] == "sequence" and d["expand"] == "rotations" and d["into"]["reembedded"] == 27
    enc = encoders.load(str(out))
    assert enc.input_kind == "sequence" and enc.fingerprint == d["fingerprint"]
    # validation on 2 held-out classes keeps the starting weights unless a step beat them
    assert len(d["val_classes"]) == 2 and 0 <= d["best_val_acc"] <= 1
    assert (enc.fingerprint != encoders.load("omniglot-strokes-gru").fingerprint) == d["improved"]
    with FewShotIndex.open(idx) as index:
        assert index.encoder.fingerprint == enc.fingerprint


def test_fusion_encoder_names_its_parts(cli, tiny_strokes, tmp_path):
    line = one_error_line(invoke(cli, ["finetune", "--encoder", "omniglot-strokes-fusion", "--data", str(tiny_strokes),
                                    "--steps", "1", "--out", str(tmp_path / "f.pt")]))
    assert "omniglot-strokes-gru" in line and "omniglot-resnet12" in line


def test_every_json_output_is_strict_json(cli, tiny_strokes, tmp_path):
    """train, evaluate and finetune --json: no NaN even where a value is undefined (it is null)."""
    r = invoke(cli, ["train", "--arch", "rnn-gru", "--data", str(tiny_strokes), "--out", str(tmp_path / "t"),
                  "--hidden", "8", "--ways", "4", "--queries", "2", "--steps", "1", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert strict_json(r.stdout)["best_val_acc"] is None  # no held-out groups: no validation
    r = invoke(cli, ["evaluate", "--data", str(tiny_strokes), "--encoder", "omniglot-strokes-gru", "--ways", "3",
                  "--episodes", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert strict_json(r.stdout)["ci95"] is None  # one episode: no spread to estimate
    r = invoke(cli, ["finetune", "--encoder", "omniglot-strokes-gru", "--data", str(tiny_strokes), "--steps", "1",
                  "--ways", "3", "--val-fraction", "0", "--out", str(tmp_path / "f.pt"), "--json"])
    assert r.exit_code == 0, r.output
    d = strict_json(r.stdout)
    assert d["val_acc"] is None and d["val_acc_start"] is None
