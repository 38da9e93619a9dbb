"""text-gru version 2 shipped beside version 1: an index built with version 1 keeps opening and answering
the same, says it can be upgraded, and `fewshot reindex IDX --encoder text-gru` upgrades it.

The old index is the fixture written by commit 329e7bb, when version 1 was the only one
(``tests/fixtures/indexes/make_old_text_index.py``)."""
from __future__ import annotations

import json

import pytest
from helpers import assert_upgrades, ok, old_answers, old_index

from fewshot import encoders
from fewshot.encoders import registry
from fewshot.fewshot_index import FewShotIndex

NAME = "text_v329e7bb"
ANSWERS = old_answers(NAME)
V1 = "ecce4f54ff5991f2"


@pytest.fixture
def old_text(tmp_path):
    return old_index(tmp_path, NAME)


def _classify(idx) -> list[dict]:
    args = [a for q in ANSWERS["queries"] for a in ("--text", q)]
    return json.loads(ok("classify", idx, *args, "--top-k", "3", "--json").stdout)


def test_both_releases_resolve_and_the_bare_name_is_version_2():
    v1, v2 = encoders.load("text-gru@1"), encoders.load("text-gru@2")
    assert v1.fingerprint == V1 and v1.arch == "text-rnn"
    assert v2.arch == "static-text-rnn" and v2.preprocess.to_dict()["tokenizer"] == "wordpiece"
    assert encoders.load("text-gru").fingerprint == v2.fingerprint == registry.versions("text-gru")[-1].fingerprint
    assert [s.version for s in registry.versions("text-gru")] == [1, 2]


def test_a_version_1_index_answers_as_it_did_then_upgrades(old_text):
    now = _classify(old_text)
    for new, old in zip(now, ANSWERS["classify"], strict=True):
        assert [c["label"] for c in new["candidates"]] == [c["label"] for c in old["candidates"]]
        assert [c["score"] for c in new["candidates"]] == pytest.approx([c["score"] for c in old["candidates"]],
                                                                         abs=1e-5)
    with FewShotIndex.open(old_text) as idx:
        assert idx.encoder.fingerprint == V1
    assert_upgrades(old_text, "text-gru", ANSWERS["info"], encoders.load("text-gru").fingerprint, 8)
    assert [a["label"] for a in _classify(old_text)] == ["balance", "weather", "music", "timer"]


def test_new_text_indexes_get_version_2_unless_they_pin_version_1(tmp_path):
    with FewShotIndex.create(tmp_path / "pinned", encoder="text-gru@1") as idx:
        assert idx.encoder.fingerprint == V1
    with FewShotIndex.open(tmp_path / "pinned") as idx:
        assert idx.encoder.fingerprint == V1 and idx.info()["encoder_is_newest"] is False
    with FewShotIndex.create(tmp_path / "new", encoder="text-gru") as idx:
        assert idx.info()["encoder_version"] == 2
