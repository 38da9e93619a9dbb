"""The CLI contract, command by command, through click's runner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import DEFAULT_DIM, glyph_folders, ok, run


@pytest.fixture()
def images(tmp_path) -> dict[str, list[Path]]:
    return glyph_folders(tmp_path / "imgs")


@pytest.fixture()
def index_dir(tmp_path, images) -> Path:
    idx = tmp_path / "idx"
    ok("init", idx)
    for name, files in images.items():
        ok("add", idx, "--label", name, files[0])
    return idx


def test_help_lists_every_command():
    r = ok("--help")
    for cmd in ("encoders", "init", "add", "classify", "search", "embed", "remove", "info", "reindex"):
        assert cmd in r.output


def test_encoders_json_lists_shipped_default():
    specs = json.loads(ok("encoders", "--json").output)
    names = {s["name"] for s in specs}
    assert {"omniglot-conv4", "resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0"} <= names
    for s in specs:
        assert set(s) >= {"name", "input_kind", "dim", "weights"}


def test_init_add_info(index_dir):
    info = json.loads(ok("info", index_dir, "--json").output)
    assert info["count"] == 4 and info["n_labels"] == 4
    assert info["encoder"] == "omniglot-ensemble" and info["metric"] == "cosine" and info["dim"] == DEFAULT_DIM
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["dim"] == DEFAULT_DIM and manifest["metric"] == "cosine"
    assert manifest["extra"]["fingerprint"] == info["fingerprint"]


def test_classify_json_shape_and_self_match(index_dir, images):
    files = [images[n][0] for n in images]
    preds = json.loads(ok("classify", index_dir, *files, "--top-k", "3", "--json").output)
    assert [p["input"] for p in preds] == [str(f) for f in files]  # input order kept
    for p, name in zip(preds, images):
        assert set(p) == {"input", "label", "unknown", "score", "probability", "candidates"}
        assert p["label"] == name and p["score"] == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= p["probability"] <= 1.0
        assert len(p["candidates"]) == 3
        assert all(set(c) == {"label", "score"} for c in p["candidates"])
        assert p["candidates"][0]["label"] == name
        scores = [c["score"] for c in p["candidates"]]
        assert scores == sorted(scores, reverse=True)


def test_classify_threshold_gives_null_label(index_dir, images):
    preds = json.loads(ok("classify", index_dir, images["hbar"][1], "--threshold", "1.01", "--json").output)
    assert preds[0]["label"] is None and preds[0]["candidates"]


def test_search_json_shape(index_dir, images):
    res = json.loads(ok("search", index_dir, images["vbar"][0], "-k", "2", "--json").output)
    assert len(res) == 1 and res[0]["input"] == str(images["vbar"][0])
    nb = res[0]["neighbors"]
    assert len(nb) == 2 and set(nb[0]) == {"id", "label", "score", "source"}
    assert nb[0]["label"] == "vbar" and nb[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert nb[0]["source"] == str(images["vbar"][0].resolve())


def test_search_label_filter(index_dir, images):
    res = json.loads(ok("search", index_dir, images["vbar"][0], "-k", "5", "--label", "diag", "--json").output)
    assert [n["label"] for n in res[0]["neighbors"]] == ["diag"]


def test_add_from_folder(tmp_path, images):
    idx = tmp_path / "idx2"
    ok("init", idx)
    r = ok("add", idx, "--from-folder", tmp_path / "imgs", "--json")
    out = json.loads(r.stdout)  # results on stdout; the notice below on stderr
    assert out["added"] == 12 and out["labels"] == {"diag": 3, "hbar": 3, "two": 3, "vbar": 3}
    assert len(out["ids"]) == 12
    # two of the synthetic drawings come out byte-identical: said, and still added (issue 16 item 12)
    assert r.stderr.startswith("warning: 1 file(s) are exact duplicates")


def test_embed_npy_and_json(tmp_path, images):
    files = images["hbar"]
    out = tmp_path / "e.npy"
    ok("embed", *files, "-o", out)
    arr = np.load(out)
    assert arr.shape == (3, DEFAULT_DIM) and arr.dtype == np.float32
    js = json.loads(ok("embed", *files, "--json").output)
    assert js["dim"] == DEFAULT_DIM and len(js["embeddings"]) == 3
    np.testing.assert_allclose(np.array(js["embeddings"][0]["embedding"]), arr[0], atol=1e-5)


def test_remove_label(index_dir, images):
    out = json.loads(ok("remove", index_dir, "--label", "diag", "--json").output)
    assert out["removed"] == 1 and out["count"] == 3
    preds = json.loads(ok("classify", index_dir, images["diag"][0], "--json").output)
    assert preds[0]["label"] != "diag"


def test_reindex_keeps_answers(index_dir, images):
    before = json.loads(ok("classify", index_dir, images["two"][2], "--json").output)
    out = json.loads(ok("reindex", index_dir, "--json").output)
    assert out["reembedded"] == 4
    after = json.loads(ok("classify", index_dir, images["two"][2], "--json").output)
    assert after[0]["label"] == before[0]["label"]
    assert after[0]["score"] == pytest.approx(before[0]["score"], abs=1e-5)


def test_reindex_survives_deleted_originals(index_dir, images):
    for files in images.values():
        files[0].unlink()
    out = json.loads(ok("reindex", index_dir, "--json").output)
    assert out["reembedded"] == 4


# --- errors: one `error:` line, exit 1 (2 for usage), no traceback --------------------------------
def assert_error(r, code: int = 1):
    assert r.exit_code == code, (r.exit_code, r.output, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.output + r.stderr
    assert r.stdout == ""


def test_error_missing_file(index_dir):
    assert_error(run("classify", index_dir, "/nonexistent/x.png"))


def test_error_not_an_index(tmp_path, images):
    assert_error(run("classify", tmp_path / "nope", images["hbar"][0]))


def test_error_init_twice(index_dir):
    assert_error(run("init", index_dir))


def test_error_unknown_encoder(tmp_path):
    r = run("init", tmp_path / "x", "--encoder", "no-such-encoder")
    assert_error(r)
    assert "fewshot encoders" in r.stderr


def test_error_remove_unknown_label(index_dir):
    assert_error(run("remove", index_dir, "--label", "zzz"))


def test_error_text_file_named_png(index_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert_error(run("add", index_dir, "--label", "x", bad))


def test_usage_errors_exit_2(index_dir, images):
    assert_error(run("add", index_dir, images["hbar"][0]), code=2)  # neither --label nor --from-folder
    assert_error(run("classify", index_dir, "--top-k", "0", images["hbar"][0]), code=2)
    assert_error(run("nosuchcommand"), code=2)
