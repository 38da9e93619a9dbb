"""N-way K-shot episode sampling, the unit of few-shot training and evaluation.

An episode picks ``ways`` classes, then for each class ``shots`` support and
``queries`` query examples, disjoint. With ``within_group`` all classes of an
episode come from one group (one Omniglot alphabet): the harder protocol of
Lake et al. (2015), where distractors share the writing system. With ``roles``
(one ``"support"`` or ``"query"`` per example) supports come only from support
rows and queries only from query rows: a dataset's train split supports, its test
split queries (CLINC150), as a deployed index would see them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Episode:
    """Indices into a dataset. ``support[c]`` and ``query[c]`` belong to ``classes[c]``."""

    classes: list[str]
    support: np.ndarray  # [ways, shots] int64
    query: np.ndarray  # [ways, queries] int64

    @property
    def ways(self) -> int:
        return len(self.classes)


def split_roles(by_class: dict[str, list[int]], roles: Sequence[str], shots: int, queries: int
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(support rows, query rows) of each class with at least ``shots`` and ``queries`` of them."""
    out = {}
    for c, ix in by_class.items():
        sup = np.asarray([i for i in ix if roles[i] == "support"], dtype=np.int64)
        qry = np.asarray([i for i in ix if roles[i] == "query"], dtype=np.int64)
        if len(sup) >= shots and len(qry) >= queries:
            out[c] = (sup, qry)
    return out


class EpisodeSampler:
    """Draws episodes from labels (and optional groups) with a seeded generator.

    Episode ``i`` of seed ``s`` depends only on ``(s, i)``, so a resumed run or a
    second encoder evaluated with the same seed sees exactly the same episodes.
    """

    def __init__(self, labels: Sequence[str], ways: int, shots: int, queries: int,
                 groups: Sequence[str] | None = None, within_group: bool = False, seed: int = 0,
                 roles: Sequence[str] | None = None):
        if ways < 2 or shots < 1 or queries < 1:
            raise ValueError("need ways >= 2, shots >= 1, queries >= 1")
        by_class: dict[str, list[int]] = defaultdict(list)
        for i, lab in enumerate(labels):
            by_class[lab].append(i)
        need = shots + queries
        self.split = None
        if roles is not None and len(roles):
            self.split = split_roles(by_class, roles, shots, queries)
            by_class = {c: ix for c, ix in by_class.items() if c in self.split}
        self.by_class = {c: np.asarray(ix) for c, ix in sorted(by_class.items())
                         if len(ix) >= need or self.split is not None}
        if len(self.by_class) < ways:
            raise ValueError(f"only {len(self.by_class)} classes have >= {need} examples "
                             f"(shots + queries); cannot draw {ways}-way episodes")
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed
        self.within_group = within_group
        self.pools: list[list[str]] = [list(self.by_class)]
        if within_group:
            if groups is None:
                raise ValueError("within_group needs groups")
            by_group: dict[str, list[str]] = defaultdict(list)
            for c in self.by_class:
                by_group[groups[self.by_class[c][0]]].append(c)
            self.pools = [cs for _, cs in sorted(by_group.items()) if len(cs) >= ways]
            if not self.pools:
                raise ValueError(f"no group has {ways} classes with >= {need} examples")

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, index])
        pool = self.pools[rng.integers(len(self.pools))]
        chosen = [pool[i] for i in rng.choice(len(pool), self.ways, replace=False)]
        if self.split is not None:
            sup = np.stack([rng.choice(self.split[c][0], self.shots, replace=False) for c in chosen])
            qry = np.stack([rng.choice(self.split[c][1], self.queries, replace=False) for c in chosen])
            return Episode(chosen, sup, qry)
        need = self.shots + self.queries
        picks = np.stack([rng.choice(self.by_class[c], need, replace=False) for c in chosen])
        return Episode(chosen, picks[:, : self.shots], picks[:, self.shots:])

    def __call__(self, n: int, start: int = 0) -> Iterator[Episode]:
        for i in range(start, start + n):
            yield self.episode(i)
