"""Open-set calibration: a threshold that keeps its promise, a temperature that makes probabilities honest.

The maths, all on vectors an index already holds (numpy + scipy, no torch):

* **known scores, leave-one-example-out.** Each stored example ``x`` of a class
  with ``k >= 2`` examples is scored as a query against every prototype, its own
  class's prototype rebuilt *without* ``x`` (from ``k - 1`` examples). Its best
  score is what ``classify`` would compare with the threshold for a new drawing
  of a taught class.
* **unknown scores, leave-one-class-out.** Each example is scored against every
  *other* class's prototype: with its class removed it is a query of a class
  nobody taught, and its best score is what an unknown input would get.
  (Removing a class does not change the other prototypes, so this is the score
  matrix with the own column masked.) Real unknown examples, when given, are
  scored against all prototypes and join them.
* **threshold** = the ``1 - target`` quantile of the known best scores: a known
  query scores at least that with probability ``target``.
* **temperature** = the ``T`` minimising the negative log-likelihood of the true
  class under ``softmax(scores / T)`` on the held-out known rows (Guo et al., 2017).
* **estimated false-accept rate** = the share of unknown best scores >= threshold.

With one example per class no known score can be held out, and a held-out score
comes from a ``k - 1``-example prototype where the index will use ``k``. Each
shipped encoder therefore carries an :class:`EncoderPrior` (score quantiles of
known and unknown queries at 1..10 shots on its validation classes, plus the
temperature fitted there; ``fewshot/encoders/weights/calibration.json`` keyed by
fingerprint). :func:`calibrate_vectors` combines the two: per class, its own
held-out scores shifted by the prior's ``k - 1 -> k`` difference, or the prior's
1-shot distribution for a one-example class; the threshold is the quantile of
that per-class mixture. Every number says where it came from (``sources``).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fewshot.errors import FewShotError
from fewshot.prototypes import check_metric, l2_normalize

TARGET_ACCEPT = 0.95
#: Held-out known rows needed before the index's own temperature is fitted (else the encoder's).
MIN_KNOWN_FOR_TEMPERATURE = 20
#: At most this many examples are scored as held-out queries (seeded sample; the maths stay exact).
MAX_QUERIES = 5000
#: Cap on held-out queries x classes scored at once (float64 score rows: 160 MB), for indexes with many classes.
MAX_SCORE_CELLS = 20_000_000
#: Quantile levels the encoder priors store.
LEVELS = np.linspace(0.0, 1.0, 101)
PRIOR_FILE = Path(__file__).resolve().parent / "encoders" / "weights" / "calibration.json"
#: Version of the calibration record stored in the index (``extra["calibration"]``).
CALIBRATION_FORMAT = 1
TEMPERATURE_BOUNDS = (1e-3, 10.0)


class CalibrationError(FewShotError):
    """The index (and its encoder) hold too little to estimate a threshold."""


# --- held-out scores ------------------------------------------------------------------------------
@dataclass
class HeldOut:
    """Scores of the index's own examples used as held-out queries.

    ``known_rows[i]``: query ``i``'s scores against every class, its own class's
    prototype rebuilt without it; ``known_true[i]``: the column of its class;
    ``known_class[i]``: that class's example count ``k``. ``unknown_best``: best
    score of each example against the *other* classes (leave-one-class-out).
    """

    known_rows: np.ndarray
    known_true: np.ndarray
    known_class: np.ndarray
    known_shots: np.ndarray
    unknown_best: np.ndarray

    @property
    def known_best(self) -> np.ndarray:
        return self.known_rows.max(1) if len(self.known_rows) else np.zeros(0)


def _class_sums(x: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    sums = np.zeros((n_classes, x.shape[1]), np.float64)
    np.add.at(sums, codes, x)
    return sums


def held_out_scores(vectors: np.ndarray, labels: Sequence, metric: str = "cosine",
                    max_queries: int = MAX_QUERIES, seed: int = 0) -> HeldOut:
    """Leave-one-example-out known scores and leave-one-class-out unknown scores (see the module doc).

    Prototypes follow :mod:`fewshot.prototypes`: cosine prototypes are the normalised
    sum of normalised vectors, L2 prototypes the mean, scores cosine or minus squared L2.
    """
    check_metric(metric)
    x = l2_normalize(vectors) if metric == "cosine" else np.asarray(vectors, np.float32)
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    codes = codes.reshape(-1)
    n_cls = len(classes)
    counts = np.bincount(codes, minlength=n_cls)
    sums = _class_sums(x.astype(np.float64), codes, n_cls)
    protos = sums / counts[:, None]
    if metric == "cosine":
        protos = l2_normalize(protos)
    pick = np.arange(len(x))
    max_queries = max(200, min(max_queries, MAX_SCORE_CELLS // max(n_cls, 1)))
    if len(pick) > max_queries:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), max_queries, replace=False))
    q, c = x[pick].astype(np.float64), codes[pick]
    rows = _scores(q, protos.astype(np.float64), metric)
    unknown = np.ma.masked_array(rows, mask=np.eye(n_cls, dtype=bool)[c]).max(1).filled(np.nan) \
        if n_cls >= 2 else np.zeros(0)
    multi = counts[c] >= 2
    own = sums[c[multi]] - q[multi]  # the own prototype without the query itself
    own = l2_normalize(own) if metric == "cosine" else own / (counts[c[multi]] - 1)[:, None]
    known = rows[multi].copy()
    known[np.arange(len(known)), c[multi]] = _rowwise(q[multi], own, metric)
    return HeldOut(known, c[multi], c[multi], counts[c[multi]], np.asarray(unknown, np.float64))


def _scores(q: np.ndarray, protos: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return q @ protos.T
    d = (q * q).sum(1)[:, None] - 2 * q @ protos.T + (protos * protos).sum(1)[None, :]
    return -np.maximum(d, 0)


def _rowwise(q: np.ndarray, p: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return (q * p).sum(1)
    return -np.maximum(((q - p) ** 2).sum(1), 0)


def best_scores(queries: np.ndarray, vectors: np.ndarray, labels: Sequence, metric: str = "cosine") -> np.ndarray:
    """Best prototype score of each query (real unknown examples) against all classes of ``vectors``."""
    from fewshot.prototypes import class_prototypes, prototype_scores

    _, protos = class_prototypes(vectors, labels, metric)
    return prototype_scores(queries, protos, metric).max(1)


# --- fitting ----------------------------------------------------------------------------------------
def fit_threshold(known_best: np.ndarray, target: float = TARGET_ACCEPT,
                  weights: np.ndarray | None = None) -> float:
    """The score a known query reaches with probability ``target``: the ``1 - target`` (weighted) quantile."""
    s = np.asarray(known_best, np.float64)
    if len(s) == 0:
        raise CalibrationError("no known scores to fit a threshold on")
    w = np.ones(len(s)) if weights is None else np.asarray(weights, np.float64)
    order = np.argsort(s)
    s, w = s[order], w[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()  # midpoint rule: the plain quantile for equal weights
    return float(np.interp(1.0 - target, cdf, s))


def nll(rows: np.ndarray, true: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true class under ``softmax(rows / temperature)``."""
    z = np.asarray(rows, np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    logp = z[np.arange(len(z)), true] - np.log(np.exp(z).sum(1))
    return float(-logp.mean())


def fit_temperature(rows: np.ndarray, true: np.ndarray) -> float:
    """The temperature minimising :func:`nll` (bounded search on log T)."""
    from scipy.optimize import minimize_scalar

    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    res = minimize_scalar(lambda lt: nll(rows, true, float(np.exp(lt))), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of (bin share) * |accuracy - mean confidence|."""
    conf, ok = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    if len(conf) == 0:
        return float("nan")
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(ok[m].mean() - conf[m].mean())
    return float(ece)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Per non-empty bin: mean confidence, accuracy and count (the reliability diagram's points)."""
    conf, ok = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return [{"confidence": float(conf[which == b].mean()), "accuracy": float(ok[which == b].mean()),
             "count": int((which == b).sum())} for b in range(bins) if (which == b).any()]


# --- encoder priors ---------------------------------------------------------------------------------
@dataclass
class EncoderPrior:
    """An encoder's own score distributions, fitted on its validation classes (see the module doc).

    ``shots[k]``: ``known`` and ``unknown`` quantiles (at :data:`LEVELS`) of the best
    score of a known query (a drawing not in the support) and of a query of an
    untaught class, against ``ways`` prototypes of ``k`` examples, and the
    ``temperature`` minimising the NLL there.
    """

    fingerprint: str
    encoder: str
    source: str
    shots: dict[int, dict]

    @classmethod
    def from_dict(cls, fingerprint: str, d: dict) -> "EncoderPrior":
        return cls(fingerprint, d.get("encoder", "?"), d.get("source", "?"),
                   {int(k): v for k, v in d["shots"].items()})

    def _interp(self, k: float, key: str, level: float | None = None) -> float:
        ks = sorted(self.shots)
        vals = [self.shots[s][key] if level is None else float(np.interp(level, LEVELS, self.shots[s][key]))
                for s in ks]
        return float(np.interp(k, ks, vals))

    def known_quantile(self, k: float, level: float) -> float:
        """Known-score quantile at ``level`` for ``k``-example prototypes (linear in k between stored shots)."""
        return self._interp(k, "known", level)

    def known_samples(self, k: float) -> np.ndarray:
        """The known-score quantiles for ``k`` shots, as equally weighted samples of the distribution."""
        return np.array([self.known_quantile(k, lv) for lv in LEVELS[1:-1]])

    def unknown_samples(self, k: float) -> np.ndarray:
        return np.array([self._interp(k, "unknown", lv) for lv in LEVELS[1:-1]])

    def temperature(self, k: float) -> float:
        return self._interp(k, "temperature")


def load_prior(fingerprint: str | None, path: Path = PRIOR_FILE) -> EncoderPrior | None:
    """The shipped prior for an encoder fingerprint, or None (user encoders have none)."""
    if not fingerprint or not path.is_file():
        return None
    data = json.loads(path.read_text())
    entry = data.get("encoders", {}).get(fingerprint)
    return EncoderPrior.from_dict(fingerprint, entry) if entry else None


# --- the calibration --------------------------------------------------------------------------------
@dataclass
class Calibration:
    """What ``fewshot calibrate`` stores in the index (``extra["calibration"]``) and prints."""

    threshold: float
    temperature: float
    temperature_before: float
    target_accept: float
    false_accept_rate: float | None
    sources: dict[str, str]
    counts: dict[str, int]
    fingerprint: str | None
    labels_digest: str
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    notes: list[str] = field(default_factory=list)
    format: int = CALIBRATION_FORMAT

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def labels_digest(labels: dict[str, int]) -> str:
    """A digest of the class counts: calibration is stale when classes or examples change."""
    text = json.dumps(sorted(labels.items()), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def calibrate_vectors(vectors: np.ndarray, labels: Sequence[str], metric: str = "cosine",
                      target_accept: float = TARGET_ACCEPT, prior: EncoderPrior | None = None,
                      unknown_vectors: np.ndarray | None = None, temperature_before: float = 0.1,
                      fingerprint: str | None = None, seed: int = 0) -> Calibration:
    """Fit the threshold, the temperature and the false-accept estimate from stored vectors (module doc)."""
    if not 0.5 <= target_accept < 1.0:
        raise CalibrationError(f"--target-accept must be in [0.5, 1); got {target_accept}")
    labels = [str(v) for v in labels]
    if len(labels) == 0:
        raise CalibrationError("the index has no examples yet; add examples (two or more per class for an "
                               "estimate of its own), then calibrate")
    counts_by = dict(Counter(labels))
    ho = held_out_scores(vectors, labels, metric, seed=seed)
    notes: list[str] = []
    sources: dict[str, str] = {}
    n_cls = len(counts_by)
    single = sum(1 for v in counts_by.values() if v == 1)

    # threshold: a per-class mixture of shifted held-out scores and the prior's 1-shot distribution
    samples, weights = [], []
    if len(ho.known_rows):
        best = ho.known_best
        if prior is not None:
            shift = np.array([prior.known_quantile(k, 1 - target_accept) - prior.known_quantile(k - 1, 1 - target_accept)
                              for k in ho.known_shots])
            best = best + shift
            if metric == "cosine":  # no cosine exceeds 1: a shifted duplicate must not put the threshold above it
                best = np.minimum(best, 1.0)
        per_class = np.bincount(ho.known_class, minlength=n_cls)
        samples.append(best)
        weights.append(1.0 / per_class[ho.known_class])
    if single and prior is not None:
        s1 = prior.known_samples(1)
        samples.append(s1)
        weights.append(np.full(len(s1), single / len(s1)))
    if not samples:
        raise CalibrationError(
            f"cannot calibrate: every class has one example, and encoder {fingerprint} ships no calibration of "
            "its own to say how far a second example lands; add a second example to a few classes, then calibrate")
    threshold = fit_threshold(np.concatenate(samples), target_accept, np.concatenate(weights))
    parts = []
    if len(ho.known_rows):
        parts.append(f"index: leave-one-example-out scores of {n_cls - single} class(es) with >= 2 examples"
                     + (f", shifted by encoder {prior.encoder}'s (k-1)->k-shot difference" if prior else
                        " (no encoder calibration: a k-1-example prototype scores a little lower than the "
                        "k-example one, so slightly more than the target is accepted)"))
    if single and prior is not None:
        parts.append(f"encoder {prior.encoder}: 1-shot known scores on its validation classes "
                     f"({prior.source}) for {single} one-example class(es)")
    elif single:
        notes.append(f"{single} one-example class(es) are not represented in the threshold (no encoder calibration)")
    sources["threshold"] = "; ".join(parts)

    # temperature
    if n_cls < 2:
        temperature = temperature_before
        sources["temperature"] = "unchanged: one class (its probability is always 1)"
    elif len(ho.known_rows) >= MIN_KNOWN_FOR_TEMPERATURE:
        temperature = fit_temperature(ho.known_rows, ho.known_true)
        sources["temperature"] = f"index: NLL minimised on {len(ho.known_rows)} leave-one-example-out queries"
    elif prior is not None:
        k = float(np.mean(list(counts_by.values())))
        temperature = prior.temperature(k)
        sources["temperature"] = (f"encoder {prior.encoder}: NLL-fitted on its validation classes at "
                                  f"{k:.1f} shot(s) ({prior.source}); the index has only {len(ho.known_rows)} "
                                  "held-out known queries")
    else:
        temperature = temperature_before
        sources["temperature"] = (f"unchanged: only {len(ho.known_rows)} held-out known queries "
                                  f"(need {MIN_KNOWN_FOR_TEMPERATURE}) and no encoder calibration")

    # false-accept estimate
    unknown = [ho.unknown_best] if len(ho.unknown_best) else []
    where = [f"index: leave-one-class-out scores of {len(ho.unknown_best)} examples"] if unknown else []
    n_unknown_data = 0
    if unknown_vectors is not None and len(unknown_vectors):
        u = best_scores(unknown_vectors, vectors, labels, metric)
        unknown.append(u)
        n_unknown_data = len(u)
        where.append(f"unknown data: {len(u)} examples")
    if unknown:
        far: float | None = float((np.concatenate(unknown) >= threshold).mean())
        sources["false_accept_rate"] = "; ".join(where)
    elif prior is not None:
        k = float(np.mean(list(counts_by.values())))
        far = float((prior.unknown_samples(k) >= threshold).mean())
        sources["false_accept_rate"] = (f"encoder {prior.encoder}: unknown-class scores on its validation classes "
                                        f"({prior.source}); one class: the index cannot remove one to estimate it")
    else:
        far = None
        sources["false_accept_rate"] = "none: one class and no --unknown-data"
        notes.append("false-accept rate not estimated: give --unknown-data, or add a second class")
    counts = {"classes": n_cls, "examples": len(labels), "one_example_classes": single,
              "known_queries": int(len(ho.known_rows)), "unknown_queries": int(len(ho.unknown_best)),
              "unknown_data": n_unknown_data}
    return Calibration(threshold, float(temperature), float(temperature_before), float(target_accept), far,
                       sources, counts, fingerprint, labels_digest(counts_by), notes=notes)


def staleness(calibration: dict | None, labels: dict[str, int], fingerprint: str | None) -> dict:
    """Whether a stored calibration still describes the index: ``{"stale": bool, "reason": str|None}``."""
    if not calibration:
        return {"stale": None, "reason": "not calibrated"}
    if calibration.get("fingerprint") != fingerprint:
        return {"stale": True, "reason": "the index was re-embedded with another encoder since"}
    if calibration.get("labels_digest") != labels_digest(labels):
        n, c = sum(labels.values()), len(labels)
        was = calibration.get("counts", {})
        return {"stale": True, "reason": f"classes or examples changed since (then {was.get('classes')} classes, "
                                         f"{was.get('examples')} examples; now {c}, {n})"}
    return {"stale": False, "reason": None}


def prior_entry(known: dict[int, np.ndarray], unknown: dict[int, np.ndarray], rows: dict[int, tuple],
                encoder: str, source: str) -> dict[str, Any]:
    """The JSON entry of an encoder prior from per-shot score samples (see :mod:`fewshot.evaluation.open_set`)."""
    shots = {}
    for k in sorted(known):
        shots[str(k)] = {"known": np.quantile(known[k], LEVELS).round(5).tolist(),
                         "unknown": np.quantile(unknown[k], LEVELS).round(5).tolist(),
                         "temperature": round(fit_temperature(*rows[k]), 5),
                         "n_known": int(len(known[k])), "n_unknown": int(len(unknown[k]))}
    return {"encoder": encoder, "source": source, "shots": shots,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

