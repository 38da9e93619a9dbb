"""Episodic few-shot evaluation: N-way K-shot accuracy with a 95% confidence interval.

Every image (or sequence: pen strokes, time series) of the dataset is embedded
once; episodes then only index into the embedding matrix, so 1000 episodes cost
little more than one. Each episode is classified with the same prototype maths
the index and ``classify`` use
(:func:`fewshot.prototypes.class_prototypes` and ``prototype_scores``), so the
number reported here is the accuracy a user of ``FewShotIndex`` would see with
that many examples per class.

    >>> from fewshot.data import load_dataset
    >>> from fewshot.evaluation import evaluate
    >>> ds = load_dataset("digits")
    >>> r = evaluate("omniglot-conv4", ds, ways=10, shots=1, queries=5, episodes=200, seed=0)
    >>> print(f"{r.accuracy:.3f} +- {r.ci95:.3f}")
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fewshot.data.dataset import LabelledSet
from fewshot.episodes import EpisodeSampler
from fewshot.metrics import confusion_matrix, mean_ci95, per_class_precision_recall_f1
from fewshot.prototypes import class_prototypes, prototype_scores

# Test-time augmentation: the image itself and its four one-pixel shifts.
TTA_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
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
        return (f"{p.get('ways')}-way {p.get('shots')}-shot, {p.get('queries')} queries/class, {where}, "
                f"{p.get('episodes')} episodes (seed {p.get('seed')}){', TTA' if p.get('tta') else ''}\n"
                f"accuracy {100 * self.accuracy:.2f}% +- {100 * self.ci95:.2f} (95% CI)   "
                f"macro precision {self.precision:.3f}  recall {self.recall:.3f}  F1 {self.f1:.3f}")


# --- embedding ------------------------------------------------------------------------
def _shift(batch: np.ndarray, dy: int, dx: int, fill_edge: bool) -> np.ndarray:
    """Translate uint8 images [n, h, w(, c)] by (dy, dx) pixels; background fill, no wrap-around."""
    if dy == 0 and dx == 0:
        return batch
    h, w = batch.shape[1:3]
    pad = [(0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (batch.ndim - 3)
    padded = np.pad(batch, pad, mode="edge" if fill_edge else "constant")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[:, y0:y0 + h, x0:x0 + w])


def embed_dataset(encoder, dataset: LabelledSet, tta: bool = False, batch_size: int = 256,
                  progress: bool = True) -> np.ndarray:
    """Embeddings float32 [n, dim] of every image, each image through the encoder once.

    Images pass through the encoder's own preprocessing (``to_array`` then
    ``normalize``), exactly as files added to an index do. With ``tta`` each
    embedding is the mean over the image and its one-pixel shifts
    (:data:`TTA_SHIFTS`), five forward passes per image.

    A sequence dataset (:class:`~fewshot.data.strokes.LabelledSet`) goes
    through a sequence encoder's own ``embed``, as sequences added to an index
    do; ``tta`` applies to images only.
    """
    from PIL import Image
    from tqdm import tqdm

    if dataset.kind == "sequence":
        return _embed_sequences(encoder, dataset, tta, batch_size, progress)
    if getattr(encoder, "input_kind", "image") != "image":
        raise ValueError(f"encoder {encoder.name!r} takes {encoder.input_kind}s, not images; "
                         "evaluate it on its own kind of data")
    pre = getattr(encoder, "preprocess", None)
    if pre is None or not hasattr(encoder, "embed_tensor"):
        raise ValueError(f"encoder {getattr(encoder, 'name', encoder)!r} does not take images "
                         "(it has no image preprocessing); evaluate it on its own kind of data")
    n = len(dataset)
    out = np.empty((n, encoder.dim), dtype=np.float32)
    shifts = TTA_SHIFTS if tta else TTA_SHIFTS[:1]
    rgb_in = pre.channels == 3
    with tqdm(total=n, desc=f"embed ({encoder.name})", unit="img", disable=not progress, leave=False,
              delay=0.5) as bar:
        for i in range(0, n, batch_size):
            chunk = dataset.items[i:i + batch_size]
            arrays = np.stack([pre.to_array(Image.fromarray(img)) for img in chunk])
            acc = np.zeros((len(chunk), encoder.dim), dtype=np.float64)
            for dy, dx in shifts:
                acc += encoder.embed_tensor(pre.normalize(_shift(arrays, dy, dx, fill_edge=rgb_in)))
            out[i:i + len(chunk)] = acc / len(shifts)
            bar.update(len(chunk))
    return out


def _embed_sequences(encoder, dataset, tta: bool, batch_size: int, progress: bool) -> np.ndarray:
    """Embeddings float32 [n, dim] of a sequence dataset through ``encoder.embed``."""
    kind = getattr(encoder, "input_kind", "image")
    if kind != "sequence":
        raise ValueError(f"encoder {getattr(encoder, 'name', encoder)!r} takes {kind}s, not sequences; "
                         "evaluate it on its own kind of data")
    if tta:
        raise ValueError("test-time augmentation (tta) applies to images, not to sequences")
    return np.asarray(encoder.embed(list(dataset.items), batch_size=batch_size, progress=progress),
                      dtype=np.float32)


# --- feasibility ----------------------------------------------------------------------
def max_queries(dataset: LabelledSet, ways: int, shots: int, queries: int, within_group: bool = False) -> int:
    """The largest query count <= ``queries`` for which ``ways``-way ``shots``-shot episodes exist.

    Raises a ValueError that says what to change when even one query is impossible.
    """
    if ways < 2 or shots < 1 or queries < 1:
        raise ValueError("need ways >= 2, shots >= 1 and queries >= 1")
    counts: dict[str, int] = defaultdict(int)
    group_of: dict[str, str] = {}
    for lab, g in zip(dataset.labels, dataset.groups):
        counts[lab] += 1
        group_of.setdefault(lab, g)

    def room(q: int) -> int:
        ok = [c for c, n in counts.items() if n >= shots + q]
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


# --- episodes -------------------------------------------------------------------------
def evaluate_embeddings(embeddings: np.ndarray, dataset: LabelledSet, ways: int, shots: int, queries: int,
                        episodes: int, seed: int, within_group: bool = False, metric: str = "cosine",
                        progress: bool = False, protocol: dict | None = None) -> EvalResult:
    """Run ``episodes`` episodes on precomputed embeddings (one row per dataset image)."""
    from tqdm import tqdm

    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != len(dataset):
        raise ValueError(f"need one embedding row per image: {emb.shape} for {len(dataset)} images")
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    sampler = EpisodeSampler(dataset.labels, ways, shots, queries, dataset.groups, within_group, seed)
    classes_all = dataset.classes
    by_class = len(classes_all) <= MAX_CONFUSION_CLASSES
    class_index = {c: i for i, c in enumerate(classes_all)}
    confusion = np.zeros((len(classes_all), len(classes_all)) if by_class else (ways, ways), dtype=np.int64)
    positions = np.arange(ways)
    support_labels = np.repeat(positions, shots)
    query_labels = np.repeat(positions, queries)
    accs, precs, recs, f1s = (np.empty(episodes) for _ in range(4))
    for i in tqdm(range(episodes), desc="episodes", disable=not progress, leave=False, delay=0.5):
        ep = sampler.episode(i)
        protos_classes, protos = class_prototypes(emb[ep.support.ravel()], support_labels, metric)
        scores = prototype_scores(emb[ep.query.ravel()], protos, metric)
        pred = np.asarray(protos_classes)[scores.argmax(1)]
        cm = confusion_matrix(query_labels, pred, labels=positions)
        accs[i] = np.trace(cm) / cm.sum()
        precs[i], recs[i], f1s[i] = (float(v.mean()) for v in per_class_precision_recall_f1(cm))
        if by_class:
            g = np.array([class_index[c] for c in ep.classes])
            np.add.at(confusion, (g[:, None], g[None, :]), cm)
        else:
            confusion += cm
    mean, ci = mean_ci95(accs)
    proto = {"ways": ways, "shots": shots, "queries": queries, "episodes": episodes, "seed": seed,
             "within_group": within_group, "metric": metric, **(protocol or {})}
    labels = list(classes_all) if by_class else [str(p) for p in positions]
    return EvalResult(mean, ci, float(precs.mean()), float(recs.mean()), float(f1s.mean()), accs, confusion,
                      labels, "class" if by_class else "position", proto)


def dataset_counts(dataset) -> dict:
    """The dataset part of an evaluation's protocol: kind and sizes (``n_images`` is null for sequences)."""
    seq = dataset.kind == "sequence"
    return {"input_kind": "sequence" if seq else "image", "n_classes": len(dataset.classes),
            "n_examples": len(dataset), "n_images": None if seq else len(dataset)}


def evaluate(encoder, dataset: LabelledSet, ways: int, shots: int, queries: int, episodes: int, seed: int,
             within_group: bool = False, tta: bool = False, metric: str = "cosine", progress: bool = True,
             dataset_name: str | None = None, batch_size: int = 256) -> EvalResult:
    """Embed ``dataset`` once with ``encoder`` (name, path or Encoder) and run the episodes.

    Episode ``i`` depends only on ``(seed, i)``, so two encoders evaluated with
    the same seed are compared on identical episodes.
    """
    from fewshot import encoders

    enc = encoder if hasattr(encoder, "embed") else encoders.load(encoder)
    q_max = max_queries(dataset, ways, shots, queries, within_group)  # a clear error before embedding
    if queries > q_max:
        raise ValueError(f"too few examples per class for {ways}-way {shots}-shot episodes with {queries} "
                         f"queries per class; use at most {q_max} queries")
    emb = embed_dataset(enc, dataset, tta=tta, batch_size=batch_size, progress=progress)
    info = {"tta": tta, "dataset": dataset_name or "dataset", **dataset_counts(dataset),
            "encoder": enc.name, "fingerprint": enc.fingerprint}
    return evaluate_embeddings(emb, dataset, ways, shots, queries, episodes, seed, within_group, metric,
                               progress=progress, protocol=info)
