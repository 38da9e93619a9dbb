"""Hypothesis-driven operation sequences on a FewShotIndex against a pure-numpy reference.

The index is driven through its public API with the shipped encoder
(omniglot-conv4) on a pool of small synthetic drawings: add / remove / classify
/ search / save (close and reopen for writing) / reopen read-only / check.
The reference keeps the examples' embeddings in plain Python lists and answers
by direct computation (means, dot products, squared distances, softmax), so
any drift in the incremental bookkeeping (running class sums, FAISS ids,
cache files, reloads) shows up as a label or score mismatch.

CI runs a short version; ``FEWSHOT_MODEL_EXAMPLES=500`` runs a long one by hand.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fewshot.errors import InputError
from helpers import drawing

POOL = 10
LABELS = ["a", "b", "ünï", "../x", "a/b"]
TOL = 1e-4
EXAMPLES = int(os.environ.get("FEWSHOT_MODEL_EXAMPLES", "12"))


_ENCODER = None
_POOL: list[np.ndarray] = []
_EMB: np.ndarray | None = None


def shared():
    """The encoder and the pool's embeddings, computed once (one image at a time, like the index may)."""
    global _ENCODER, _EMB
    if _ENCODER is None:
        from fewshot import encoders

        _ENCODER = encoders.load("omniglot-conv4")
        _POOL.extend(np.asarray(drawing(7000 + i)) for i in range(POOL))
        _EMB = np.concatenate([_ENCODER.embed([a]) for a in _POOL]).astype(np.float64)
    return _ENCODER, _POOL, _EMB


class Reference:
    """Brute-force model: rows of (id, label, embedding); answers computed from scratch every time."""

    def __init__(self, metric: str, temperature: float) -> None:
        self.metric, self.temperature = metric, temperature
        self.scale = 1.0  # the size of a score's terms (IndexMachine.create sets it for l2)
        self.rows: list[tuple[int, str, np.ndarray]] = []

    def stored(self, v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v) if self.metric == "cosine" else v

    def add(self, ids: list[int], label: str, embs: np.ndarray) -> None:
        self.rows += [(i, label, self.stored(e)) for i, e in zip(ids, embs)]

    def remove(self, label: str) -> int:
        n = sum(lab == label for _, lab, _ in self.rows)
        self.rows = [r for r in self.rows if r[1] != label]
        return n

    def labels(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, lab, _ in self.rows:
            out[lab] = out.get(lab, 0) + 1
        return dict(sorted(out.items()))

    def score(self, q: np.ndarray, v: np.ndarray) -> float:
        if self.metric == "cosine":
            return float(self.stored(q) @ v)
        return -float(((q - v) ** 2).sum())

    def classify(self, q: np.ndarray) -> list[tuple[str, float]]:
        protos = {}
        for lab in self.labels():
            vs = np.stack([v for _, l2, v in self.rows if l2 == lab])
            p = vs.mean(axis=0)
            protos[lab] = p / np.linalg.norm(p) if self.metric == "cosine" else p
        return sorted(((lab, self.score(q, p)) for lab, p in protos.items()), key=lambda t: -t[1])

    def probability(self, scores: list[float]) -> float:
        z = np.array(scores) / self.temperature
        e = np.exp(z - z.max())
        return float(e[0] / e.sum())

    def search(self, q: np.ndarray, k: int, labels: list[str] | None) -> list[tuple[int, float]]:
        cand = [(i, self.score(q, v)) for i, lab, v in self.rows if labels is None or lab in labels]
        return sorted(cand, key=lambda t: -t[1])[:k]


def close_enough(a: float, b: float, scale: float = 1.0) -> bool:
    """Equal up to float error; ``scale`` is the size of the scores' terms (an l2 score of a near-zero
    distance is a difference of squared norms near ``scale``: float32 leaves an error of about
    ``scale * 1e-7`` per term there, whatever the score itself is)."""
    return abs(a - b) <= TOL * max(1.0, abs(a), abs(b)) + 1e-6 * scale


def same_ranking(got: list[tuple], want: list[tuple], k: int, scale: float = 1.0) -> None:
    """The top ``k`` of the full reference ranking ``want``: same scores in the same order, and
    the same keys wherever the reference has no near-tie (ties may be ordered either way)."""
    assert len(got) == min(k, len(want)), (got, want)
    for j, ((gk, gs), (wk, ws)) in enumerate(zip(got, want)):
        assert close_enough(gs, ws, scale), (j, got, want)
        tied = [key for key, s in want if close_enough(s, ws, scale)]
        assert gk == wk or gk in tied, (j, got, want)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.pool, self.emb = shared()
        self.tmp = Path(tempfile.mkdtemp(prefix="fewshot-model-"))
        self.path = self.tmp / "idx"
        self.idx = None

    @initialize(metric=st.sampled_from(["cosine", "l2"]))
    def create(self, metric: str) -> None:
        from fewshot.fewshot_index import FewShotIndex

        self.idx = FewShotIndex.create(self.path, encoder=self.encoder, metric=metric)
        self.ref = Reference(metric, self.idx.temperature)
        self.ref.scale = 1.0 if metric == "cosine" else float((self.emb ** 2).sum(1).max())

    def teardown(self) -> None:
        if self.idx is not None:
            self.idx.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ writes

    @rule(label=st.sampled_from(LABELS), picks=st.lists(st.integers(0, POOL - 1), min_size=1, max_size=3))
    def add(self, label: str, picks: list[int]) -> None:
        ids = self.idx.add(label, [self.pool[i] for i in picks])
        assert len(ids) == len(picks) and len(set(ids)) == len(ids)
        assert all(i not in {r[0] for r in self.ref.rows} for i in ids)
        self.ref.add(ids, label, self.emb[picks])

    @rule(label=st.sampled_from(LABELS))
    def remove(self, label: str) -> None:
        want = self.ref.remove(label)
        if want == 0:
            with pytest.raises(InputError, match="no class named"):
                self.idx.remove(label)
        else:
            assert self.idx.remove(label) == want

    @rule()
    def save_and_reopen(self) -> None:
        from fewshot.fewshot_index import FewShotIndex

        self.idx.close()
        self.idx = FewShotIndex.open(self.path, encoder=self.encoder)

    # ------------------------------------------------------------------ reads

    @precondition(lambda self: self.ref.rows)
    @rule(picks=st.lists(st.integers(0, POOL - 1), min_size=1, max_size=3), top_k=st.integers(1, 6),
          readonly=st.booleans())
    def classify(self, picks: list[int], top_k: int, readonly: bool) -> None:
        from fewshot.fewshot_index import FewShotIndex

        idx = FewShotIndex.open(self.path, encoder=self.encoder, readonly=True) if readonly else self.idx
        try:
            preds = idx.classify([self.pool[i] for i in picks], top_k=top_k)
        finally:
            if readonly:
                idx.close()
        for pred, i in zip(preds, picks):
            want = self.ref.classify(self.emb[i])
            same_ranking([(c.label, c.score) for c in pred.candidates], want, top_k, self.ref.scale)
            assert pred.label == pred.candidates[0].label
            assert close_enough(pred.score, want[0][1], self.ref.scale)
            assert abs(pred.probability - self.ref.probability([s for _, s in want])) < 1e-3

    @precondition(lambda self: self.ref.rows)
    @rule(pick=st.integers(0, POOL - 1), k=st.integers(1, 8),
          only=st.one_of(st.none(), st.lists(st.sampled_from(LABELS), min_size=1, max_size=2, unique=True)))
    def search(self, pick: int, k: int, only: list[str] | None) -> None:
        if only is not None and not set(only) <= set(self.ref.labels()):
            with pytest.raises(InputError, match="no class named"):  # a filter naming no class is an error
                self.idx.search([self.pool[pick]], k=k, labels=only)
            return
        [res] = self.idx.search([self.pool[pick]], k=k, labels=only)
        want = self.ref.search(self.emb[pick], len(self.ref.rows), only)
        same_ranking([(n.id, n.score) for n in res.neighbors], want, k, self.ref.scale)
        labels = {i: lab for i, lab, _ in self.ref.rows}
        assert all(n.label == labels[n.id] for n in res.neighbors)

    @precondition(lambda self: self.ref.rows)
    @rule()
    def deep_check(self) -> None:
        from fewshot.check import check

        report = check(self.idx, sample=None)
        assert report["healthy"], report
        assert report["stats"]["records"] == len(self.ref.rows)

    @invariant()
    def same_classes(self) -> None:
        if self.idx is not None:
            assert self.idx.labels() == self.ref.labels()
            assert self.idx.info()["count"] == len(self.ref.rows)


IndexMachine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=12, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
test_index_against_numpy_reference = IndexMachine.TestCase
