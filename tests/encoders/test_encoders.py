"""The encoder layer: one TorchEncoder base, the registry's resolve/default_for, files, seeded random weights.

Reference embeddings in ``fixtures/encoders/reference_embeddings.npz`` and the two small
encoder files beside it were written by the code before the TorchEncoder refactor
(commit 15779ce): the shipped encoders must keep their fingerprints and embeddings, and
files written then must keep loading to the same vectors.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fewshot import encoders
from fewshot.cli import cli
from fewshot.encoders.base import TorchEncoder, TorchImageEncoder, prefetched
from fewshot.encoders.builtin import OMNIGLOT_CONV4_V2_FINGERPRINT, OMNIGLOT_CONV4_V3_FINGERPRINT
from fewshot.encoders.files import atomic_torch_save
from fewshot.encoders.fusion import FusionEncoder, fuse_embeddings
from fewshot.encoders.sequence import TorchSequenceEncoder
from fewshot.errors import EncoderError
from fewshot.fewshot_index import FewShotIndex

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "encoders"
SHIPPED_FINGERPRINTS = {"omniglot-conv4": OMNIGLOT_CONV4_V3_FINGERPRINT, "omniglot-conv4@3": OMNIGLOT_CONV4_V3_FINGERPRINT,
                        "omniglot-conv4@2": OMNIGLOT_CONV4_V2_FINGERPRINT, "omniglot-conv4@1": "a429de09f68c09d5",
                        "omniglot-strokes-gru@1": "5c7a378691a1273e", "omniglot-strokes-fusion@1": "909b15f2c4685408",
                        "omniglot-strokes-gru": "e930de460f496c92", "omniglot-strokes-fusion": "bed050d3945a8122",
                        "omniglot-resnet12": "e2bc6014f765931d", "omniglot-ensemble": "92d52cf31957d4f5"}
OLD_FILE_FINGERPRINTS = {"old_conv_encoder.pt": "2ebddc961a75140f", "old_sequence_encoder.pt": "4716c29818c37fff"}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "reference_embeddings.npz") as z:
        return {k: z[k] for k in z.files}


def synth_images() -> list[np.ndarray]:
    """Dark bars on white, of a few sizes (the inputs of the reference vectors)."""
    rng = np.random.default_rng(7)
    ims = []
    for i in range(5):
        a = np.full((40 + 7 * i, 52), 255, np.uint8)
        for y, x in rng.integers(5, 30, size=(6, 2)):
            a[y:y + 4, x:x + 15] = 0
        ims.append(a)
    return ims


def synth_strokes() -> list[np.ndarray]:
    """Random walks of a few lengths, two strokes each, as ``[T, 3]`` (x, y, end of stroke)."""
    rng = np.random.default_rng(11)
    seqs = []
    for n in (5, 17, 40, 9):
        xy = np.cumsum(rng.normal(size=(n, 2)) * 10, 0)
        pen = np.zeros((n, 1))
        pen[n // 2] = 1
        pen[-1] = 1
        seqs.append(np.concatenate([xy, pen], 1))
    return seqs


def extract(zip_path: Path, prefix: str, suffix: str, out: Path, count: int = 6) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(suffix))[:count]
        zf.extractall(out, names)
    return [str(out / n) for n in names]


# --- what must not change ------------------------------------------------------------------------
def test_shipped_fingerprints_are_unchanged():
    assert {n: encoders.load(n).fingerprint for n in SHIPPED_FINGERPRINTS} == SHIPPED_FINGERPRINTS


def test_shipped_embeddings_of_synthetic_inputs_are_unchanged(reference):
    conv = encoders.load("omniglot-conv4@1")  # the reference vectors are version 1's (version 2: its fingerprint)
    np.testing.assert_allclose(conv.embed(synth_images(), batch_size=2), reference["conv4_synth"], atol=1e-5)
    conv.tta_shift = 1
    conv.invalidate()
    np.testing.assert_allclose(conv.embed(synth_images(), batch_size=3), reference["conv4_tta1_synth"], atol=1e-5)
    gru = encoders.load("omniglot-strokes-gru@1")  # the reference vectors are version 1's
    np.testing.assert_allclose(gru.embed(synth_strokes(), batch_size=3), reference["gru_synth"], atol=1e-5)
    fused = encoders.load("omniglot-strokes-fusion@1")
    np.testing.assert_allclose(fused.embed(synth_strokes(), batch_size=3), reference["fusion_synth"], atol=1e-5)


def test_shipped_embeddings_of_omniglot_files_are_unchanged(reference, omniglot_zip, strokes_zip, tmp_path):
    images = extract(omniglot_zip, "images_background/Korean/character0", ".png", tmp_path)
    strokes = extract(strokes_zip, "strokes_background_small1/Korean/character0", ".txt", tmp_path)
    np.testing.assert_allclose(encoders.load("omniglot-conv4@1").embed(images, batch_size=4),
                               reference["conv4_files"], atol=1e-5)
    np.testing.assert_allclose(encoders.load("omniglot-strokes-gru@1").embed(strokes, batch_size=4),
                               reference["gru_files"], atol=1e-5)
    np.testing.assert_allclose(encoders.load("omniglot-strokes-fusion@1").embed(strokes, batch_size=4),
                               reference["fusion_files"], atol=1e-5)


@pytest.mark.parametrize("name,inputs,key", [("old_conv_encoder.pt", synth_images, "old_conv_file_synth"),
                                             ("old_sequence_encoder.pt", synth_strokes, "old_sequence_file_synth")])
def test_encoder_files_written_before_load_and_embed_the_same(reference, name, inputs, key, tmp_path):
    enc = encoders.load(str(FIXTURES / name))
    assert enc.fingerprint == OLD_FILE_FINGERPRINTS[name]
    np.testing.assert_allclose(enc.embed(inputs()), reference[key], atol=1e-5)
    again = encoders.load(str(enc.save(tmp_path / name)))  # and a re-save keeps everything
    assert again.fingerprint == enc.fingerprint and again.config() == enc.config()
    assert json.loads((tmp_path / name).with_suffix(".json").read_text())["fingerprint"] == enc.fingerprint


# --- one base class ------------------------------------------------------------------------------
def test_both_kinds_share_one_base_and_its_interface():
    conv, gru = encoders.load("omniglot-conv4"), encoders.load("omniglot-strokes-gru")
    for enc, cls in ((conv, TorchImageEncoder), (gru, TorchSequenceEncoder)):
        assert isinstance(enc, cls) and isinstance(enc, TorchEncoder) and isinstance(enc, encoders.Encoder)
        for attr in ("module", "preprocess", "dim", "input_kind", "centre", "temperature", "arch", "arch_kwargs",
                     "weights_source", "encoder_file", "invalidate", "config", "save", "embed_tensor", "forward",
                     "prepare", "prepare_batch"):
            assert hasattr(enc, attr), (type(enc).__name__, attr)
    for name in ("config", "fingerprint", "embed", "embed_tensor", "save", "invalidate", "__repr__"):
        assert name not in vars(TorchImageEncoder) and name not in vars(TorchSequenceEncoder), name


@pytest.mark.parametrize("batch_size", [1, 2, 3, 64])
def test_prefetched_batches_embed_as_one_batch(batch_size):
    conv, gru = encoders.load("omniglot-conv4"), encoders.load("omniglot-strokes-gru")
    np.testing.assert_allclose(conv.embed(synth_images(), batch_size=batch_size),
                               conv.embed(synth_images(), batch_size=64), atol=1e-5)
    np.testing.assert_allclose(gru.embed(synth_strokes(), batch_size=batch_size),
                               gru.embed(synth_strokes(), batch_size=64), atol=1e-5)


def test_prefetched_keeps_order_and_raises_a_worker_error():
    assert list(prefetched(lambda c: sum(c), [[1], [2, 3], [4]])) == [1, 5, 4]

    def boom(c):
        if c == 2:
            raise ValueError("bad batch")
        return c

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetched(boom, [1, 2, 3]))


def test_fusion_lives_with_the_encoders():
    assert isinstance(encoders.load("omniglot-strokes-fusion"), FusionEncoder)


@pytest.mark.parametrize("module,not_loaded", [("fewshot.encoders.sequence", "fewshot.train"),
                                               ("fewshot.encoders.fusion", "fewshot.train"),
                                               ("fewshot.encoders.registry", "fewshot.train"),
                                               ("fewshot.encoders", "fewshot.evaluation")])
def test_encoders_do_not_import_the_training_code(module, not_loaded):
    code = f"import sys, {module}; print({not_loaded!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "False"


def test_atomic_torch_save_replaces_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "ck.pt"
    atomic_torch_save({"a": torch.ones(3)}, target)
    atomic_torch_save({"a": torch.zeros(2)}, target)
    assert torch.load(target, weights_only=True)["a"].tolist() == [0.0, 0.0]
    assert sorted(p.name for p in target.parent.iterdir()) == ["ck.pt"]
    with pytest.raises(Exception):
        atomic_torch_save({"a": lambda: None}, target)  # cannot be pickled: the old file stays
    assert torch.load(target, weights_only=True)["a"].tolist() == [0.0, 0.0]
    assert sorted(p.name for p in target.parent.iterdir()) == ["ck.pt"]


# --- the registry ---------------------------------------------------------------------------------
def test_default_for_and_resolve():
    assert encoders.default_for("image") == "omniglot-ensemble" == encoders.default_for(None)
    assert encoders.default_for("sequence") == "omniglot-strokes-fusion"
    assert encoders.default_for("text") == "minilm"  # text is a plug-in kind (tests/test_text_encoder.py)
    with pytest.raises(EncoderError, match="no default encoder"):
        encoders.default_for("audio")
    assert encoders.resolve(None).name == "omniglot-ensemble"
    seq = encoders.resolve(None, kind="sequence")
    assert seq.name == "omniglot-strokes-fusion" and encoders.resolve(seq) is seq
    assert encoders.resolve(str(FIXTURES / "old_conv_encoder.pt")).name == "small-conv"
    with pytest.raises(EncoderError, match="unknown encoder"):
        encoders.resolve("nope")


def test_the_index_records_registered_encoders_by_name_and_user_files_by_path(tmp_path):
    """Not by a path substring: a user's file under a folder named encoders/weights is still a user file."""
    user = encoders.load("omniglot-conv4").save(tmp_path / "encoders" / "weights" / "mine.pt")
    assert encoders.manifest_entries(encoders.load(str(user)))["encoder"] == str(user.resolve())
    assert encoders.manifest_entries(encoders.load("omniglot-conv4")) == {"encoder": "omniglot-conv4",
                                                                         "encoder_weights": None}
    # a shipped name with the user's file as its weights: recorded as such, and it opens again
    with FewShotIndex.create(tmp_path / "ix", encoder="omniglot-conv4", weights=str(user)) as idx:
        assert idx.info()["encoder_ref"] == "omniglot-conv4"
    with FewShotIndex.open(tmp_path / "ix") as idx:
        assert idx.encoder.fingerprint == SHIPPED_FINGERPRINTS["omniglot-conv4"]


# --- untrained weights are the same in every process (issue 16) ----------------------------------
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "FEWSHOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


def fewshot_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fewshot.cli", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=300, cwd=ROOT)


def test_weights_none_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = encoders.load("resnet18", weights="none")
    assert torch.equal(torch.rand(3), expected)  # loading drew nothing from the caller's generator
    b = encoders.load("resnet18", weights="none")
    assert a.fingerprint == b.fingerprint
    other = encoders.load("mobilenet_v3_small", weights="none")
    assert other.fingerprint != a.fingerprint
    code = "from fewshot import encoders; print(encoders.load('resnet18', weights='none').fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == a.fingerprint


def test_an_index_made_with_weights_none_accepts_adds_from_other_processes(tmp_path):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(np.eye(40, dtype=np.uint8) * 255).save(img)
    ix = tmp_path / "ix"
    r = fewshot_cli("init", ix, "--encoder", "resnet18", "--weights", "none", "--json")
    assert r.returncode == 0, r.stderr
    r = fewshot_cli("add", ix, "--label", "diag", img, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["count"] == 1
    e1 = fewshot_cli("embed", img, "--encoder", "resnet18", "--weights", "none", "--json")
    e2 = fewshot_cli("embed", img, "--encoder", "resnet18", "--weights", "none", "--json")
    assert e1.returncode == 0 and json.loads(e1.stdout) == json.loads(e2.stdout)


def test_reindex_takes_weights(tmp_path):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(np.eye(40, dtype=np.uint8) * 255).save(img)
    ix = tmp_path / "ix"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(ix)]).exit_code == 0
    assert runner.invoke(cli, ["add", str(ix), "--label", "d", str(img)]).exit_code == 0
    r = runner.invoke(cli, ["reindex", str(ix), "--encoder", "mobilenet_v3_small", "--weights", "none", "--json"])
    assert r.exit_code == 0, r.output + r.stderr
    assert json.loads(r.stdout)["encoder"] == "mobilenet_v3_small"
    # --weights alone: the index's own encoder with those weights; the index opens again by itself
    r = runner.invoke(cli, ["reindex", str(ix), "--weights", "none", "--json"])
    assert r.exit_code == 0, r.output + r.stderr
    add = fewshot_cli("add", ix, "--label", "e", img, "--json")  # another process loads it from the manifest
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["count"] == 2


def test_offline_imagenet_error_speaks_the_callers_language(monkeypatch, tmp_path):
    from torchvision.models._api import WeightsEnum

    def offline(self, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(EncoderError, match="weights='none'") as exc:
        encoders.load("resnet18")
    assert "--weights" not in str(exc.value)
    for args in (["init", str(tmp_path / "ix"), "--encoder", "resnet18"], ["embed", str(tmp_path / "x.png"),
                                                                          "--encoder", "resnet18"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and r.stderr.startswith("error: could not get ImageNet weights"), r.stderr
        assert "--weights none" in r.stderr and "--weights PATH" in r.stderr and "weights='none'" not in r.stderr
