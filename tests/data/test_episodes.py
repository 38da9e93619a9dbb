"""EpisodeSampler: N-way K-shot episodes exactly as asked, disjoint, deterministic, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from fewshot.data import LabelledSet
from fewshot.episodes import EpisodeSampler
from fewshot.evaluation import max_queries


def labelled(n_classes: int = 12, per_class: int = 8, n_groups: int = 3):
    """Labels c0..c{n-1} (interleaved, so indices are not sorted by class) and groups g0..g{k-1}."""
    labels = [f"c{i % n_classes}" for i in range(n_classes * per_class)]
    groups = [f"g{int(lab[1:]) % n_groups}" for lab in labels]
    return labels, groups


def test_episode_shape_and_membership():
    labels, groups = labelled()
    s = EpisodeSampler(labels, ways=5, shots=2, queries=3, groups=groups, seed=1)
    for ep in s(50):
        assert ep.ways == 5 and len(set(ep.classes)) == 5
        assert ep.support.shape == (5, 2) and ep.query.shape == (5, 3)
        for c, sup, qry in zip(ep.classes, ep.support, ep.query):
            assert all(labels[i] == c for i in sup) and all(labels[i] == c for i in qry)


def test_queries_never_in_support_and_all_distinct():
    labels, _ = labelled(per_class=6)
    s = EpisodeSampler(labels, ways=12, shots=3, queries=3, seed=0)  # uses every example of every class
    for ep in s(30):
        sup, qry = set(ep.support.ravel().tolist()), set(ep.query.ravel().tolist())
        assert not sup & qry
        assert len(sup) == ep.support.size and len(qry) == ep.query.size


def test_within_group_episodes_come_from_one_group():
    labels, groups = labelled(n_classes=12, n_groups=3)  # 4 classes per group
    group_of = dict(zip(labels, groups))
    s = EpisodeSampler(labels, ways=4, shots=1, queries=2, groups=groups, within_group=True, seed=3)
    seen = set()
    for ep in s(60):
        gs = {group_of[c] for c in ep.classes}
        assert len(gs) == 1
        seen |= gs
    assert seen == {"g0", "g1", "g2"}, "every group large enough gets episodes"
    across = EpisodeSampler(labels, ways=4, shots=1, queries=2, groups=groups, within_group=False, seed=3)
    assert any(len({group_of[c] for c in ep.classes}) > 1 for ep in across(20))


def test_deterministic_per_seed_and_index():
    labels, groups = labelled()
    a = EpisodeSampler(labels, 5, 1, 2, groups, seed=7)
    b = EpisodeSampler(labels, 5, 1, 2, groups, seed=7)
    eps = list(a(10))
    for i, ep in enumerate(eps):
        other = b.episode(i)  # random access gives the same episode as iteration
        assert ep.classes == other.classes
        np.testing.assert_array_equal(ep.support, other.support)
        np.testing.assert_array_equal(ep.query, other.query)
    resumed = list(b(5, start=5))
    assert [e.classes for e in resumed] == [e.classes for e in eps[5:]]
    c = EpisodeSampler(labels, 5, 1, 2, groups, seed=8)
    assert any(c.episode(i).classes != eps[i].classes for i in range(10))


def test_small_classes_are_skipped_not_sampled():
    labels = ["a"] * 5 + ["b"] * 5 + ["c"] * 2 + ["d"] * 5
    s = EpisodeSampler(labels, ways=3, shots=2, queries=2, seed=0)
    assert all("c" not in ep.classes for ep in s(30))


def test_impossible_requests_fail_clearly():
    labels, groups = labelled(n_classes=6, per_class=4, n_groups=2)
    with pytest.raises(ValueError, match="cannot draw 7-way"):
        EpisodeSampler(labels, ways=7, shots=1, queries=1)
    with pytest.raises(ValueError, match=">= 5 examples"):
        EpisodeSampler(labels, ways=2, shots=2, queries=3)  # only 4 per class
    with pytest.raises(ValueError, match="within_group needs groups"):
        EpisodeSampler(labels, ways=2, shots=1, queries=1, within_group=True)
    with pytest.raises(ValueError, match="no group has 4 classes"):
        EpisodeSampler(labels, ways=4, shots=1, queries=1, groups=groups, within_group=True)  # 3 per group
    for bad in [dict(ways=1, shots=1, queries=1), dict(ways=2, shots=0, queries=1), dict(ways=2, shots=1, queries=0)]:
        with pytest.raises(ValueError, match="need ways >= 2"):
            EpisodeSampler(labels, **bad)


def test_max_queries_clips_and_explains():
    labels, groups = labelled(n_classes=6, per_class=4, n_groups=2)
    ds = LabelledSet(np.zeros((len(labels), 2, 2), np.uint8), labels, groups)
    assert max_queries(ds, ways=5, shots=1, queries=10) == 3  # 4 per class: 1 shot + 3 queries
    assert max_queries(ds, ways=5, shots=1, queries=2) == 2
    assert max_queries(ds, ways=3, shots=1, queries=5, within_group=True) == 3
    with pytest.raises(ValueError, match="only 6 classes"):
        max_queries(ds, ways=7, shots=1, queries=5)
    with pytest.raises(ValueError, match="one group .* only 3 classes"):
        max_queries(ds, ways=4, shots=1, queries=5, within_group=True)
    with pytest.raises(ValueError, match="only 0 classes with >= 5 examples"):
        max_queries(ds, ways=2, shots=4, queries=5)
