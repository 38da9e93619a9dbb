"""Versioned encoder names: an index keeps opening and answering after a newer release ships.

A new release is simulated by registering a fake ``omniglot-conv4`` version 4 (the
newest shipped weights, perturbed) in a copy of the registry; versions 2 and 3 are real
releases, so the fixture indexes (version 1) also test the real upgrade, and an index
built while version 2 was the newest (the registry without version 3) tests the last one. The old indexes are the
fixtures written by commit 15779ce (``tests/fixtures/indexes``), so "an index built
before the change" is literally one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import REPO, ok

from fewshot import encoders
from fewshot.encoders import builtin, registry, sequence_builtin
from fewshot.errors import EncoderError
from fewshot.fewshot_index import FewShotIndex

FIXTURES = REPO / "tests" / "fixtures" / "indexes"
ANSWERS = json.loads((FIXTURES / "answers_v15779ce.json").read_text())
V1 = "a429de09f68c09d5"  # omniglot-conv4 version 1 (MODEL_CARD.md), what the fixture indexes hold
V2 = builtin.OMNIGLOT_CONV4_V2_FINGERPRINT
V3 = builtin.OMNIGLOT_CONV4_V3_FINGERPRINT
ENSEMBLE = builtin.OMNIGLOT_ENSEMBLE_FINGERPRINT


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may add to; the real one is restored after."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_VERSIONS", {k: dict(v) for k, v in registry._VERSIONS.items()})


@pytest.fixture
def conv4_v4(tmp_path, scratch_registry) -> str:
    """A fake release: ``omniglot-conv4`` version 4 (other weights) becomes the default; its fingerprint."""
    enc = encoders.load("omniglot-conv4")
    with torch.no_grad():
        for p in enc.module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    enc.invalidate()
    path = enc.save(tmp_path / "omniglot_conv4@4.pt")
    fp = enc.fingerprint
    registry.register("omniglot-conv4", input_kind="image", dim=enc.dim, weights="test release", description="v4",
                      version=4, fingerprint=fp)(
        lambda weights=None: registry.from_file(weights or path, name="omniglot-conv4"))
    return fp


@pytest.fixture
def old_image(tmp_path) -> Path:
    dst = tmp_path / "image_v15779ce"
    shutil.copytree(FIXTURES / "image_v15779ce", dst)
    return dst


def _classify(idx: Path, name: str) -> list[dict]:
    queries = [FIXTURES / q for q in ANSWERS[name]["queries"]]
    return json.loads(ok("classify", idx, *queries, "--top-k", "3", "--json").stdout)


def _same_answers(now: list[dict], then: list[dict]) -> None:
    for new, old in zip(now, then, strict=True):
        assert [c["label"] for c in new["candidates"]] == [c["label"] for c in old["candidates"]]
        assert [c["score"] for c in new["candidates"]] == pytest.approx([c["score"] for c in old["candidates"]],
                                                                         abs=1e-5)


def test_every_declared_release_fingerprint_is_the_built_one():
    declared = [s for name in registry._VERSIONS for s in registry.versions(name) if s.fingerprint]
    assert {s.name for s in declared} >= {"omniglot-conv4", "omniglot-strokes-gru", "omniglot-strokes-fusion",
                                          "text-gru"}
    for s in declared:
        assert encoders.load(f"{s.name}@{s.version}").fingerprint == s.fingerprint, s.name


def test_versioned_names_and_the_old_registration_call(scratch_registry, tmp_path):
    assert encoders.load("omniglot-conv4@1").fingerprint == V1
    assert encoders.load("omniglot-conv4@2").fingerprint == V2 != V1
    assert encoders.load("omniglot-conv4@3").fingerprint == encoders.load("omniglot-conv4").fingerprint == V3 != V2
    with pytest.raises(EncoderError, match="no version 7; released: omniglot-conv4@1, omniglot-conv4@2, omniglot-conv4@3"):
        encoders.load("omniglot-conv4@7")
    assert registry.split_version(str(tmp_path / "x@2" / "enc.pt"))[1] is None  # a path with '@' stays a path
    # the call other families make (no version, no fingerprint) still registers version 1
    registry.register("test-enc", input_kind="image", dim=64, weights="w", description="d")(
        lambda weights=None: encoders.load("omniglot-conv4"))
    spec = registry._REGISTRY["test-enc"]
    assert (spec.version, spec.fingerprint) == (1, None) and spec.to_dict()["versions"] == [1]
    assert encoders.load("test-enc@1").fingerprint == V3
    with pytest.raises(EncoderError):
        registry.register("bad@1", input_kind="image", dim=1, weights="w", description="d")


def test_info_says_an_index_on_the_newest_release_is(tmp_path):
    with FewShotIndex.create(tmp_path / "new") as idx:  # the default: omniglot-ensemble, version 1 of 1
        idx.add("a", [FIXTURES / ANSWERS["image_v15779ce"]["queries"][0]])
    info = json.loads(ok("info", tmp_path / "new", "--json").stdout)
    assert (info["encoder"], info["encoder_version"], info["encoder_newest_version"], info["encoder_is_newest"]) \
        == ("omniglot-ensemble", 1, 1, True)
    assert info["fingerprint"] == ENSEMBLE and info["upgrade"] is None and info["dim"] == 384
    assert (info["encoder_successor"], info["successor_upgrade"]) == (None, None)
    out = ok("info", tmp_path / "new").stdout
    assert "version    1 (the newest)" in out and "successor" not in out


def test_an_omniglot_conv4_index_names_its_successor_and_moves_to_it(tmp_path):
    """A new architecture is a new name: info on a Conv-4 index (even its newest release) names the default."""
    idx_dir = tmp_path / "conv4"
    queries = [FIXTURES / q for q in ANSWERS["image_v15779ce"]["queries"]]
    with FewShotIndex.create(idx_dir, encoder="omniglot-conv4") as idx:
        idx.add("a", queries[:2])
        idx.add("b", queries[2:4])
    info = json.loads(ok("info", idx_dir, "--json").stdout)
    assert (info["encoder_version"], info["encoder_is_newest"], info["upgrade"]) == (3, True, None)
    assert info["encoder_successor"] == "omniglot-ensemble"
    assert info["successor_upgrade"] == f"fewshot reindex {idx_dir} --encoder omniglot-ensemble"
    out = ok("info", idx_dir).stdout
    assert "version    3 (the newest)" in out
    assert f"successor  omniglot-ensemble (its successor, the default for new indexes): move with " \
           f"`fewshot reindex {idx_dir} --encoder omniglot-ensemble`" in out
    moved = json.loads(ok("reindex", idx_dir, "--encoder", "omniglot-ensemble", "--json").stdout)
    assert moved["fingerprint"] == ENSEMBLE and moved["reembedded"] == 4
    info = json.loads(ok("info", idx_dir, "--json").stdout)
    assert (info["encoder"], info["dim"], info["encoder_successor"], info["successor_upgrade"]) == \
        ("omniglot-ensemble", 384, None, None)
    assert [a["candidates"][0]["label"] for a in json.loads(ok("classify", idx_dir, *queries[:4], "--json").stdout)] \
        == ["a", "a", "b", "b"]  # its own examples, re-embedded, answer as themselves


def test_an_index_built_with_version_1_opens_answers_the_same_then_upgrades_to_the_newest(old_image):
    """The real releases: omniglot-conv4 versions 2 and 3 (MODEL_CARD.md) over the index commit 15779ce built."""
    _same_answers(_classify(old_image, "image_v15779ce"), ANSWERS["image_v15779ce"]["classify"])
    info = json.loads(ok("info", old_image, "--json").stdout)
    assert (info["encoder_version"], info["encoder_newest_version"], info["encoder_is_newest"]) == (1, 3, False)
    assert info["upgrade"] == f"fewshot reindex {old_image} --encoder omniglot-conv4"
    out = json.loads(ok("reindex", old_image, "--encoder", "omniglot-conv4", "--json").stdout)
    assert out["fingerprint"] == V3 and out["reembedded"] == ANSWERS["image_v15779ce"]["info"]["count"]
    info = json.loads(ok("info", old_image, "--json").stdout)
    assert (info["encoder_version"], info["encoder_is_newest"], info["upgrade"]) == (3, True, None)
    assert (info["dim"], ANSWERS["image_v15779ce"]["info"]["dim"]) == (128, 64)  # a wider release re-embeds
    assert info["labels"] == ANSWERS["image_v15779ce"]["info"]["labels"]
    answers = _classify(old_image, "image_v15779ce")
    assert len(answers) == len(ANSWERS["image_v15779ce"]["classify"])
    assert all(c["label"] in info["labels"] for a in answers for c in a["candidates"])


def test_an_old_index_after_a_new_release_opens_answers_the_same_then_upgrades(old_image, conv4_v4):
    assert encoders.load("omniglot-conv4").fingerprint == conv4_v4 != V1  # the bare name is the newest
    _same_answers(_classify(old_image, "image_v15779ce"), ANSWERS["image_v15779ce"]["classify"])
    with FewShotIndex.open(old_image) as idx:
        assert idx.encoder.fingerprint == V1

    info = json.loads(ok("info", old_image, "--json").stdout)
    assert (info["encoder_version"], info["encoder_newest_version"], info["encoder_is_newest"]) == (1, 4, False)
    assert info["upgrade"] == f"fewshot reindex {old_image} --encoder omniglot-conv4"
    for key in ("encoder", "fingerprint", "dim", "count", "labels"):  # the fields it had keep their values
        assert info[key] == ANSWERS["image_v15779ce"]["info"][key], key
    assert "version 4 is newer: upgrade with `fewshot reindex" in ok("info", old_image).stdout

    out = json.loads(ok("reindex", old_image, "--encoder", "omniglot-conv4", "--json").stdout)
    assert out["fingerprint"] == conv4_v4 and out["reembedded"] == ANSWERS["image_v15779ce"]["info"]["count"]
    info = json.loads(ok("info", old_image, "--json").stdout)
    assert (info["encoder_version"], info["encoder_is_newest"], info["upgrade"]) == (4, True, None)


def test_a_pinned_older_release_is_kept_by_new_indexes_too(tmp_path, conv4_v4):
    with FewShotIndex.create(tmp_path / "pinned", encoder="omniglot-conv4@1") as idx:
        assert idx.encoder.fingerprint == V1
    with FewShotIndex.open(tmp_path / "pinned") as idx:
        assert idx.encoder.fingerprint == V1 and idx.info()["encoder_is_newest"] is False
    with FewShotIndex.create(tmp_path / "new", encoder="omniglot-conv4") as idx:
        assert idx.encoder.fingerprint == conv4_v4 and idx.info()["encoder_version"] == 4


def test_the_stroke_default_keeps_its_parts_when_the_cnn_is_released_again(tmp_path, conv4_v4):
    old = tmp_path / "strokes_v15779ce"
    shutil.copytree(FIXTURES / "strokes_v15779ce", old)
    _same_answers(_classify(old, "strokes_v15779ce"), ANSWERS["strokes_v15779ce"]["classify"])
    info = json.loads(ok("info", old, "--json").stdout)
    assert info["fingerprint"] == ANSWERS["strokes_v15779ce"]["info"]["fingerprint"]  # still version 1's parts
    assert info["encoder_version"] == 1


def test_a_stroke_index_built_with_version_1_opens_answers_the_same_then_upgrades(tmp_path):
    """The real release of the stroke default's version 2 (GRU on five alphabets + omniglot-resnet12)."""
    old = tmp_path / "strokes_v15779ce"
    shutil.copytree(FIXTURES / "strokes_v15779ce", old)
    _same_answers(_classify(old, "strokes_v15779ce"), ANSWERS["strokes_v15779ce"]["classify"])
    info = json.loads(ok("info", old, "--json").stdout)
    assert (info["encoder_version"], info["encoder_newest_version"], info["encoder_is_newest"]) == (1, 2, False)
    assert info["upgrade"] == f"fewshot reindex {old} --encoder omniglot-strokes-fusion"
    assert info["encoder_successor"] is None
    out = json.loads(ok("reindex", old, "--encoder", "omniglot-strokes-fusion", "--json").stdout)
    assert out["fingerprint"] == sequence_builtin.STROKES_FUSION_V2_FINGERPRINT
    assert out["reembedded"] == ANSWERS["strokes_v15779ce"]["info"]["count"]
    info = json.loads(ok("info", old, "--json").stdout)
    assert (info["encoder_version"], info["encoder_is_newest"], info["dim"]) == (2, True, 384)
    answers = _classify(old, "strokes_v15779ce")
    assert all(c["label"] in info["labels"] for a in answers for c in a["candidates"])


def test_releases_without_a_declared_fingerprint_are_found_by_building_them(tmp_path, scratch_registry):
    def release(version: int, weights: str) -> None:  # another family's call: no fingerprint declared
        registry.register("test-cnn", input_kind="image", dim=64, weights="w", description="d", version=version)(
            lambda weights=None, _w=weights: registry.from_file(_w, name="test-cnn"))

    v1 = encoders.load("omniglot-conv4@1")
    v1.save(tmp_path / "v1.pt")
    release(1, str(tmp_path / "v1.pt"))
    with FewShotIndex.create(tmp_path / "idx", encoder="test-cnn") as idx:
        idx.add("a", [FIXTURES / ANSWERS["image_v15779ce"]["queries"][0]])
    with torch.no_grad():
        next(v1.module.parameters()).mul_(1.1)
    v1.invalidate()
    v1.save(tmp_path / "v2.pt")
    release(2, str(tmp_path / "v2.pt"))
    assert encoders.load("test-cnn").fingerprint == v1.fingerprint not in (V1, V2, V3)
    with FewShotIndex.open(tmp_path / "idx") as idx:
        assert idx.encoder.fingerprint == V1 and idx.classify([FIXTURES / ANSWERS["image_v15779ce"]["queries"][0]])
        assert idx.info()["encoder_version"] is None  # not declared: info cannot tell without loading


def test_an_index_built_while_version_2_was_the_newest_opens_answers_the_same_then_upgrades(tmp_path, monkeypatch):
    """The release of version 3 (MODEL_CARD.md): an index built by the bare name before it keeps version 2."""
    queries = [FIXTURES / q for q in ANSWERS["image_v15779ce"]["queries"]]
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_VERSIONS", {k: dict(v) for k, v in registry._VERSIONS.items()})
    del registry._VERSIONS["omniglot-conv4"][3]  # the registry as it was before version 3 shipped
    registry._REGISTRY["omniglot-conv4"] = registry._VERSIONS["omniglot-conv4"][2]
    with FewShotIndex.create(tmp_path / "v2", encoder="omniglot-conv4") as idx:
        assert idx.encoder.fingerprint == V2
        idx.add("a", queries[:2])
        idx.add("b", queries[2:4])
        then = idx.classify(queries, top_k=2)
    monkeypatch.undo()  # version 3 ships
    assert encoders.load("omniglot-conv4").fingerprint == V3
    with FewShotIndex.open(tmp_path / "v2") as idx:
        assert idx.encoder.fingerprint == V2 and idx.info()["dim"] == 64
        now = idx.classify(queries, top_k=2)
    assert [[c.label for c in r.candidates] for r in now] == [[c.label for c in r.candidates] for r in then]
    info = json.loads(ok("info", tmp_path / "v2", "--json").stdout)
    assert (info["encoder_version"], info["encoder_newest_version"], info["encoder_is_newest"]) == (2, 3, False)
    assert info["upgrade"] == f"fewshot reindex {tmp_path / 'v2'} --encoder omniglot-conv4"
    out = json.loads(ok("reindex", tmp_path / "v2", "--encoder", "omniglot-conv4", "--json").stdout)
    assert out["fingerprint"] == V3 and out["reembedded"] == 4
    info = json.loads(ok("info", tmp_path / "v2", "--json").stdout)
    assert (info["encoder_version"], info["encoder_is_newest"], info["dim"]) == (3, True, 128)
