"""cifar-cnn version 2 shipped beside version 1: an index built with version 1 keeps opening and answering
the same, says it can be upgraded, and `fewshot reindex IDX --encoder cifar-cnn` upgrades it.

The old index is the fixture written by commit 2064161, when version 1 was the only one
(``tests/fixtures/indexes/make_old_photo_index.py``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import OLD_INDEXES as FIXTURES, assert_upgrades, ok, old_answers, old_index

from fewshot import encoders
from fewshot.encoders import builtin, registry
from fewshot.fewshot_index import FewShotIndex

NAME = "photos_v2064161"
ANSWERS = old_answers(NAME)
V1 = "bd7d052ecdde339e"  # CIFAR_MODEL_CARD.md, version 1


@pytest.fixture
def old_photos(tmp_path):
    return old_index(tmp_path, NAME)


def _classify(idx) -> list[dict]:
    return json.loads(ok("classify", idx, *[FIXTURES / q for q in ANSWERS["queries"]], "--top-k", "3",
                         "--json").stdout)


def test_both_releases_resolve_and_the_bare_name_is_version_2():
    v1, v2 = encoders.load("cifar-cnn@1"), encoders.load("cifar-cnn@2")
    assert v1.fingerprint == V1 and not v1.tta_flip
    assert v2.fingerprint == builtin.CIFAR_CNN_V2_FINGERPRINT and v2.tta_flip and v2.arch == "small_cnn"
    assert encoders.load("cifar-cnn").fingerprint == v2.fingerprint
    assert [s.version for s in registry.versions("cifar-cnn")] == [1, 2]
    # the random start (a from-scratch baseline) is the tutorial CNN in either version
    assert encoders.load("cifar-cnn@1", weights="none").arch == encoders.load("cifar-cnn", weights="none").arch


def test_a_version_1_index_answers_as_it_did_then_upgrades(old_photos):
    for new, old in zip(_classify(old_photos), ANSWERS["classify"], strict=True):
        assert [c["label"] for c in new["candidates"]] == [c["label"] for c in old["candidates"]]
        assert [c["score"] for c in new["candidates"]] == pytest.approx([c["score"] for c in old["candidates"]],
                                                                         abs=1e-5)
    with FewShotIndex.open(old_photos) as idx:
        assert idx.encoder.fingerprint == V1
    assert_upgrades(old_photos, "cifar-cnn", ANSWERS["info"], builtin.CIFAR_CNN_V2_FINGERPRINT, 8)
    # the upgraded index answers with version 2's embeddings of what it stores
    v2 = encoders.load("cifar-cnn")
    stored = v2.embed(sorted((old_photos / "examples").rglob("*.jpg")))
    queries = v2.embed([FIXTURES / q for q in ANSWERS["queries"]])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    best = (unit(queries) @ unit(stored).T).max(1)
    hits = json.loads(ok("search", old_photos, *[FIXTURES / q for q in ANSWERS["queries"]], "-k", "1",
                         "--json").stdout)
    assert [h["neighbors"][0]["score"] for h in hits] == pytest.approx(best.tolist(), abs=1e-5)
