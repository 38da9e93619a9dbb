"""The one episodic evaluation kernel: embeddings + episodes -> accuracy, 95% CI, macro P/R/F1.

Every evaluation in the project runs through :func:`run_episodes`: ``fewshot
evaluate``, validation during training and fine-tuning, the fusion evaluation
and the benchmarks. Each episode is classified with the prototype maths the
index and ``classify`` use (:func:`fewshot.prototypes.class_prototypes` and
``prototype_scores``), so the number is the accuracy a user of ``FewShotIndex``
would see with that many examples per class. Episode ``i`` of a seed depends
only on ``(seed, i)``, so two encoders evaluated with the same seed see the same
episodes. The interval is :func:`fewshot.metrics.mean_ci95` (ddof=1).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from fewshot.episodes import EpisodeSampler
from fewshot.metrics import mean_ci95
from fewshot.prototypes import class_prototypes, prototype_scores

# Up to this many classes the summed confusion matrix is kept per class; beyond
# it, per episode-local class position (the order classes were drawn in).
MAX_CONFUSION_CLASSES = 30


@dataclass
class EvalResult:
    """Outcome of an episodic evaluation; ``to_dict`` is the ``--json`` shape."""

    accuracy: float
    ci95: float
    precision: float
    recall: float
    f1: float
    episode_accuracies: np.ndarray
    confusion: np.ndarray  # summed over episodes; rows true, columns predicted
    confusion_labels: list[str]
    confusion_kind: str  # "class" or "position" (episode-local class position)
    protocol: dict = field(default_factory=dict)

    @property
    def encoder(self) -> str | None:
        return self.protocol.get("encoder")

    @property
    def fingerprint(self) -> str | None:
        return self.protocol.get("fingerprint")

    def to_dict(self, episodes: bool = False) -> dict:
        d: dict[str, Any] = {"accuracy": self.accuracy, "ci95": self.ci95, "precision": self.precision,
                             "recall": self.recall, "f1": self.f1, "protocol": dict(self.protocol),
                             "encoder": self.encoder, "fingerprint": self.fingerprint}
        if episodes:
            d["episode_accuracies"] = [float(a) for a in self.episode_accuracies]
        return d

    def summary(self) -> str:
        """Two readable lines: the protocol, then accuracy with its interval and macro scores."""
        p = self.protocol
        where = "within one group" if p.get("within_group") else "across groups"
        ci = f"{100 * self.ci95:.2f}" if np.isfinite(self.ci95) else "n/a"
        return (f"{p.get('ways')}-way {p.get('shots')}-shot, {p.get('queries')} queries/class, {where}, "
                f"{p.get('episodes')} episodes (seed {p.get('seed')}){', TTA' if p.get('tta') else ''}\n"
                f"accuracy {100 * self.accuracy:.2f}% +- {ci} (95% CI)   "
                f"macro precision {self.precision:.3f}  recall {self.recall:.3f}  F1 {self.f1:.3f}")


def episode_predictions(emb: np.ndarray, sampler: EpisodeSampler, index: int, metric: str = "cosine"
                        ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(episode classes, true positions, predicted positions) of episode ``index``'s queries."""
    ep = sampler.episode(index)
    ways, shots, queries = ep.ways, ep.support.shape[1], ep.query.shape[1]
    classes, protos = class_prototypes(emb[ep.support.ravel()], np.repeat(np.arange(ways), shots), metric)
    pred = np.asarray(classes)[prototype_scores(emb[ep.query.ravel()], protos, metric).argmax(1)]
    return ep.classes, np.repeat(np.arange(ways), queries), pred


def episode_accuracies(emb: np.ndarray, sampler: EpisodeSampler, episodes: int, metric: str = "cosine"
                       ) -> np.ndarray:
    """Per-episode accuracy of episodes ``0..episodes-1``: the fast path (validation during training)."""
    accs = np.empty(episodes)
    for i in range(episodes):
        _, true, pred = episode_predictions(emb, sampler, i, metric)
        accs[i] = (pred == true).mean()
    return accs


def run_episodes(emb: np.ndarray, sampler: EpisodeSampler, episodes: int, classes_all: Sequence[str],
                 metric: str = "cosine", progress: bool = False) -> EvalResult:
    """Accuracy, its 95% CI, macro precision/recall/F1 and the summed confusion of ``episodes`` episodes."""
    from tqdm import tqdm

    outcomes = (episode_predictions(emb, sampler, i, metric)
                for i in tqdm(range(episodes), desc="episodes", disable=not progress, leave=False, delay=0.5))
    return score_episodes(outcomes, sampler.ways, classes_all)


def score_episodes(outcomes: Iterable[tuple[Sequence[str], np.ndarray, np.ndarray]], ways: int,
                   classes_all: Sequence[str]) -> EvalResult:
    """Score episodes given as (episode classes, true positions, predicted positions), however predicted:
    nearest prototype here, or a model trained per episode (a demo's from-scratch baseline).

    Per episode, scikit-learn computes the confusion matrix and macro P/R/F1 over
    the episode's ``ways`` classes (a class never predicted counts with precision 0).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    by_class = len(classes_all) <= MAX_CONFUSION_CLASSES
    class_index = {c: i for i, c in enumerate(classes_all)}
    confusion = np.zeros((len(classes_all),) * 2 if by_class else (ways, ways), dtype=np.int64)
    positions = np.arange(ways)
    accs, precs, recs, f1s = [], [], [], []
    for classes, true, pred in outcomes:
        accs.append((pred == true).mean())
        p, r, f, _ = precision_recall_fscore_support(true, pred, labels=positions, average="macro", zero_division=0)
        precs.append(p)
        recs.append(r)
        f1s.append(f)
        cm = confusion_matrix(true, pred, labels=positions)
        if by_class:
            g = np.array([class_index[c] for c in classes])
            np.add.at(confusion, (g[:, None], g[None, :]), cm)
        else:
            confusion += cm
    mean, ci = mean_ci95(accs)
    labels = list(classes_all) if by_class else [str(p) for p in positions]
    return EvalResult(mean, ci, float(np.mean(precs)), float(np.mean(recs)), float(np.mean(f1s)), np.asarray(accs),
                      confusion, labels, "class" if by_class else "position")


def evaluate_embeddings(embeddings: np.ndarray, dataset: Any, ways: int, shots: int, queries: int,
                        episodes: int, seed: int, within_group: bool = False, metric: str = "cosine",
                        progress: bool = False, protocol: dict | None = None) -> EvalResult:
    """Run ``episodes`` episodes on precomputed embeddings (one row per example of ``dataset``).

    ``dataset`` lends its ``labels`` and ``groups`` (a :class:`~fewshot.data.LabelledSet`).
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != len(dataset.labels):
        raise ValueError(f"need one embedding row per example: {emb.shape} for {len(dataset.labels)} examples")
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    sampler = EpisodeSampler(dataset.labels, ways, shots, queries, dataset.groups, within_group, seed,
                             getattr(dataset, "roles", None))
    result = run_episodes(emb, sampler, episodes, sorted(set(dataset.labels)), metric, progress)
    result.protocol = {"ways": ways, "shots": shots, "queries": queries, "episodes": episodes, "seed": seed,
                       "within_group": within_group, "metric": metric, **(protocol or {})}
    return result


def max_queries(dataset: Any, ways: int, shots: int, queries: int, within_group: bool = False) -> int:
    """The largest query count <= ``queries`` for which ``ways``-way ``shots``-shot episodes exist.

    Raises a ValueError that says what to change when even one query is impossible.
    """
    if ways < 2 or shots < 1 or queries < 1:
        raise ValueError("need ways >= 2, shots >= 1 and queries >= 1")
    counts: dict[str, int] = defaultdict(int)
    n_support: dict[str, int] = defaultdict(int)
    group_of: dict[str, str] = {}
    roles = getattr(dataset, "roles", None) or [""] * len(dataset.labels)
    for lab, g, role in zip(dataset.labels, dataset.groups, roles):
        counts[lab] += role != "support"  # with roles, only query rows are queries and only support rows shots
        n_support[lab] += role == "support"
        group_of.setdefault(lab, g)

    def fits(c: str, q: int) -> bool:
        return counts[c] >= shots + q if not n_support[c] else (counts[c] >= q and n_support[c] >= shots)

    def room(q: int) -> int:
        ok = [c for c in counts if fits(c, q)]
        if not within_group:
            return len(ok)
        per: dict[str, int] = defaultdict(int)
        for c in ok:
            per[group_of[c]] += 1
        return max(per.values(), default=0)

    for q in range(queries, 0, -1):
        if room(q) >= ways:
            return q
    where = "one group (alphabet)" if within_group else "the dataset"
    raise ValueError(f"cannot draw {ways}-way {shots}-shot episodes: {where} has only {room(1)} classes with "
                     f">= {shots + 1} examples ({shots} shot(s) + 1 query); lower the ways or shots")
