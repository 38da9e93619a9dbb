"""Evaluate an encoder on a dataset: the library behind ``fewshot evaluate``.

    >>> from fewshot.data import load_dataset
    >>> from fewshot.evaluation import evaluate
    >>> r = evaluate("omniglot-conv4", load_dataset("digits"), ways=10, shots=1, queries=5, episodes=200, seed=0)
    >>> print(f"{r.accuracy:.3f} +- {r.ci95:.3f}")
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from fewshot.data.dataset import LabelledSet
from fewshot.evaluation.embedding import check_kinds, dataset_counts, embed_dataset
from fewshot.evaluation.kernel import EvalResult, evaluate_embeddings, max_queries

# Extra points of the accuracy-against-shots plot use at most this many episodes.
PLOT_EXTRA_EPISODES = 300


def evaluate(encoder: Any, dataset: LabelledSet, ways: int, shots: int, queries: int, episodes: int, seed: int,
             within_group: bool = False, tta: bool = False, metric: str = "cosine", progress: bool = True,
             dataset_name: str | None = None, batch_size: int = 256) -> EvalResult:
    """Embed ``dataset`` once with ``encoder`` (name, path or Encoder) and run the episodes.

    Episode ``i`` depends only on ``(seed, i)``, so two encoders evaluated with
    the same seed are compared on identical episodes.
    """
    from fewshot import encoders

    enc = encoders.load(encoder) if isinstance(encoder, (str, os.PathLike)) else encoder
    q_max = max_queries(dataset, ways, shots, queries, within_group)  # a clear error before embedding
    if queries > q_max:
        raise ValueError(f"too few examples per class for {ways}-way {shots}-shot episodes with {queries} "
                         f"queries per class; use at most {q_max} queries")
    emb = embed_dataset(enc, dataset, tta=tta, batch_size=batch_size, progress=progress)
    info = {"tta": tta, "dataset": dataset_name or "dataset", **dataset_counts(dataset),
            "encoder": enc.name, "fingerprint": enc.fingerprint}
    return evaluate_embeddings(emb, dataset, ways, shots, queries, episodes, seed, within_group, metric,
                               progress=progress, protocol=info)


@dataclass
class EvalReport:
    """What ``fewshot evaluate`` prints: the result, its ``--json`` dict, notes for stderr."""

    result: EvalResult
    out: dict
    encoder: Any
    dataset: LabelledSet
    notes: list[str] = field(default_factory=list)


def dataset_size_for(encoder: Any) -> tuple[int, bool]:
    """(size, rgb) to load a dataset at so the encoder's own preprocessing resamples it least."""
    pre = getattr(encoder, "preprocess", None)
    if pre is None or getattr(encoder, "input_kind", "image") != "image":
        return 28, False
    if pre.channels == 3:
        return max(pre.size, pre.resize_size or 0), True
    return pre.size, False


def load_for(encoder: Any, data: Any, kind: str, alphabets: list[str] | None = None,
             exclude_alphabets: list[str] | None = None) -> LabelledSet:
    """``data`` loaded as the encoder reads it (images at its size, or sequences)."""
    from fewshot.data.registry import load_dataset, load_sequence_dataset

    if kind == "sequence":
        return load_sequence_dataset(data, alphabets=alphabets, exclude_alphabets=exclude_alphabets)
    if kind == "text":
        from fewshot.data.text import load_text_dataset

        return load_text_dataset(data, alphabets, exclude_alphabets)
    size, rgb = dataset_size_for(encoder)
    return load_dataset(data, size=size, rgb=rgb, alphabets=alphabets, exclude_alphabets=exclude_alphabets)


def evaluate_data(data: Any, encoder: str | None = None, weights: str | None = None, ways: int = 20,
                  shots: int = 1, queries: int = 5, episodes: int = 1000, seed: int = 0, within: bool = False,
                  alphabets: list[str] | None = None, exclude_alphabets: list[str] | None = None,
                  tta: bool = False, plot_path: str | None = None, progress: bool = True,
                  oos: bool = False, open_set: bool = False, unknown_ways: int = 5,
                  target_accept: float = 0.95) -> EvalReport:
    """Load ``data``, embed it once with ``encoder`` (default: the shipped one for its kind) and run the
    episodes; lowers the query count to what the data allows (with a note) and draws the plot if asked.
    ``oos``: also the AUROC of in-scope against the data's out-of-scope queries (CLINC150 ``oos_val``).
    ``open_set``: also episodes with ``unknown_ways`` untaught classes, each calibrated on its support
    (:func:`fewshot.evaluation.oos.open_set_episodes`); the plot is then the open-set figure."""
    from fewshot import encoders
    from fewshot.data.registry import dataset_kind

    kind = dataset_kind(data)
    enc = encoders.load(encoder or encoders.default_for(kind), weights=weights)
    check_kinds(enc, kind, data)
    ds = load_for(enc, data, kind, alphabets, exclude_alphabets)
    notes = []
    q = max_queries(ds, ways + (unknown_ways if open_set else 0), shots, queries, within)
    if q < queries:
        notes.append(f"only {q} queries per class fit ({shots} shot(s) + queries per class); using {q}")
    emb = embed_dataset(enc, ds, tta=tta, progress=progress)
    info = {"tta": tta, "dataset": str(data), **dataset_counts(ds), "alphabets": alphabets,
            "exclude_alphabets": exclude_alphabets, "encoder": enc.name, "fingerprint": enc.fingerprint}
    result = evaluate_embeddings(emb, ds, ways, shots, q, episodes, seed, within, progress=progress, protocol=info)
    report = EvalReport(result, result.to_dict(), enc, ds, notes)
    if oos:
        report.out["oos"] = _oos(enc, ds, emb, data, ways, shots, q, episodes, seed, within, progress)
    if open_set:
        report.out["open_set"], figure = open_set_metrics(enc, ds, emb, ways, unknown_ways, shots, q, episodes,
                                                          seed, within, target_accept, progress)
        if plot_path:
            from fewshot.plots import plot_open_set

            plot_open_set(figure, plot_path, f"{enc.name} on {os.path.basename(str(data).rstrip('/'))}: "
                                             f"{ways}-way {shots}-shot + {unknown_ways} untaught classes")
            report.out["plot"] = {"path": str(plot_path), "kind": "open-set"}
    elif plot_path:
        _plot(report, emb, str(data), plot_path)
    return report


def open_set_metrics(enc: Any, ds: LabelledSet, emb: Any, ways: int, unknown_ways: int, shots: int, queries: int,
                     episodes: int, seed: int, within: bool = False, target_accept: float = 0.95,
                     progress: bool = False) -> tuple[dict, dict]:
    """Open-set metrics on episodes of ``ways`` taught + ``unknown_ways`` untaught classes, calibrated as an
    index holding the episode's support would be (the encoder's shipped calibration included)."""
    from fewshot.calibration import load_prior
    from fewshot.episodes import EpisodeSampler
    from fewshot.evaluation.oos import open_set_episodes
    from fewshot.fewshot_index import DEFAULT_TEMPERATURE

    sampler = EpisodeSampler(ds.labels, ways + unknown_ways, shots, queries, ds.groups, within, seed, ds.roles)
    prior = load_prior(enc.fingerprint)
    res = open_set_episodes(emb, sampler, ways, episodes, target_accept, prior,
                            float(getattr(enc, "temperature", None) or DEFAULT_TEMPERATURE), progress=progress)
    res["metrics"].update({"unknown_ways": unknown_ways, "encoder_calibration": prior.source if prior else None})
    return res["metrics"], res["plot"]


def _oos(enc, ds: LabelledSet, emb, data, ways: int, shots: int, queries: int, episodes: int, seed: int,
         within: bool, progress: bool) -> dict:
    """The out-of-scope AUROC on the same episodes as the accuracy (see :mod:`fewshot.evaluation.oos`)."""
    from fewshot.data.text import load_clinc_oos
    from fewshot.episodes import EpisodeSampler
    from fewshot.evaluation.oos import oos_auroc

    if ds.kind != "text" or not str(data).lower().endswith(".json"):
        raise ValueError("--oos needs CLINC150-style JSON data with out-of-scope queries (oos_val)")
    oos_emb = enc.embed(load_clinc_oos(data), progress=progress)
    sampler = EpisodeSampler(ds.labels, ways, shots, queries, ds.groups, within, seed, ds.roles)
    return oos_auroc(emb, oos_emb, sampler, episodes)


def _plot(report: EvalReport, emb, data: str, plot_path: str) -> None:
    """Accuracy against shots (1 and 5 besides the asked one) and the confusion matrix, to ``plot_path``."""
    from fewshot.plots import plot_evaluation

    r, p = report.result, report.result.protocol
    points = [{"shots": p["shots"], "accuracy": r.accuracy, "ci95": r.ci95, "episodes": p["episodes"],
               "queries": p["queries"]}]
    for s in sorted({1, 5} - {p["shots"]}):
        try:
            qs = max_queries(report.dataset, p["ways"], s, p["queries"], p["within_group"])
        except ValueError as exc:
            report.notes.append(f"{s}-shot point left out: {exc}")
            continue
        n_ep = min(p["episodes"], PLOT_EXTRA_EPISODES)
        e = evaluate_embeddings(emb, report.dataset, p["ways"], s, qs, n_ep, p["seed"], p["within_group"])
        points.append({"shots": s, "accuracy": e.accuracy, "ci95": e.ci95, "episodes": n_ep, "queries": qs})
    title = (f"{report.encoder.name} on {os.path.basename(data.rstrip('/'))}: {p['ways']}-way, "
             f"{'within one group' if p['within_group'] else 'across groups'}{', TTA' if p['tta'] else ''}")
    plot_evaluation(points, r, plot_path, title)
    report.out["plot"] = {"path": str(plot_path), "points": sorted(points, key=lambda x: x["shots"]),
                          "confusion": r.confusion_kind}
