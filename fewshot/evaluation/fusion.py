"""Stroke + image fusion evaluated on the same episodes as each part alone, through the one kernel."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fewshot.data.dataset import LabelledSet
from fewshot.encoders.fusion import fuse_embeddings
from fewshot.episodes import EpisodeSampler
from fewshot.evaluation.kernel import episode_accuracies, evaluate_embeddings


def evaluate_sequences(encoder: Any, dataset: LabelledSet, ways: int = 20, shots: int = 1, queries: int = 5,
                       episodes: int = 1000, seed: int = 0, within_group: bool = False,
                       batch_size: int = 256) -> dict:
    """Few-shot accuracy of a sequence encoder on a labelled sequence set, as a small dict.

    Every sequence is embedded once with ``encoder.embed`` (exactly as the index
    embeds), then the episodes run through :func:`~fewshot.evaluation.kernel.run_episodes`.
    """
    emb = encoder.embed(list(dataset.items), batch_size=batch_size)
    r = evaluate_embeddings(emb, dataset, ways, shots, queries, episodes, seed, within_group)
    return {**r.protocol, "accuracy": r.accuracy, "ci95": r.ci95, "n_examples": len(dataset),
            "n_classes": len(dataset.classes), "encoder": encoder.name}


def fusion_parts(sequence_encoder: Any, image_encoder: Any, dataset: LabelledSet,
                 images: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sequence embeddings, image embeddings) of every example; images default to each
    stroke trajectory rendered as Omniglot draws it."""
    from fewshot.sequences import render_strokes

    seq = sequence_encoder.embed(list(dataset.items), batch_size=256)
    if images is None:
        images = [render_strokes(s) for s in dataset.items]
    return seq, image_encoder.embed(images, batch_size=256)


def evaluate_fusion(sequence_encoder: Any, image_encoder: Any, dataset: LabelledSet,
                    protocols: list[dict], seed: int = 0, images: list | None = None,
                    sequence_weight: float = 0.5,
                    embedded: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """Sequence alone, image alone and both fused, on the same episodes, for each protocol.

    A protocol is a dict of ``ways, shots, queries, episodes, within_group``.
    ``embedded``: the output of :func:`fusion_parts` when it is already computed
    (it is the slow part).
    """
    seq, img = embedded or fusion_parts(sequence_encoder, image_encoder, dataset, images)
    views = {"sequence": seq, "image": img,
             "fusion": fuse_embeddings(seq, img, weights=(sequence_weight, 1 - sequence_weight))}
    rows = []
    for p in protocols:
        row = {k: p[k] for k in ("ways", "shots", "queries", "episodes")}
        row["within_group"] = bool(p.get("within_group", False))
        for name, emb in views.items():
            r = evaluate_embeddings(emb, dataset, p["ways"], p["shots"], p["queries"], p["episodes"], seed,
                                    row["within_group"])
            row[name] = {"accuracy": r.accuracy, "ci95": r.ci95}
        row["fusion_beats_both"] = row["fusion"]["accuracy"] > max(row["sequence"]["accuracy"],
                                                                    row["image"]["accuracy"])
        rows.append(row)
    return rows


def choose_fusion_weight(sequence_encoder: Any, image_encoder: Any, dataset: LabelledSet,
                         grid: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
                         ways: int = 20, episodes: int = 1000, seed: int = 12345,
                         within_group: bool = True,
                         embedded: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The sequence weight of the fusion with the best 20-way 1-shot within-group accuracy.

    Run on *validation* episodes (another seed than the reported ones), so the
    reported accuracy is not the maximum of several tries on the same episodes.
    Returns ``{"best": w, "accuracy": {w: acc, ...}}``.
    """
    seq, img = embedded or fusion_parts(sequence_encoder, image_encoder, dataset)
    sampler = EpisodeSampler(dataset.labels, ways, 1, 5, dataset.groups, within_group, seed)
    acc = {float(w): float(episode_accuracies(fuse_embeddings(seq, img, weights=(w, 1 - w)), sampler,
                                              episodes).mean()) for w in grid}
    return {"best": max(acc, key=acc.get), "accuracy": acc, "ways": ways, "episodes": episodes, "seed": seed}
