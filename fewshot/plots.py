"""PNG figures for evaluations: accuracy against shots, and confusion matrices.

Matplotlib is used through its object API with the Agg canvas (no pyplot, no
global backend switch, no display needed), and files are written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def draw_confusion(ax, cm: np.ndarray, labels: Sequence[str], title: str, axis_name: str = "class") -> None:
    """Row-normalised confusion matrix (each row: where that true class's queries went)."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    n = len(labels)
    step = max(1, int(np.ceil(n / 25)))
    ticks = np.arange(0, n, step)
    ax.set_xticks(ticks, [str(labels[i]) for i in ticks], rotation=90 if n > 12 else 0, fontsize=7)
    ax.set_yticks(ticks, [str(labels[i]) for i in ticks], fontsize=7)
    ax.set_xlabel(f"predicted {axis_name}")
    ax.set_ylabel(f"true {axis_name}")
    ax.set_title(title, fontsize=9)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=6,
                            color="white" if rate[i, j] > 0.5 else "black")
    ax.figure.colorbar(im, ax=ax, shrink=0.8, label="fraction of the row")


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | os.PathLike, title: str) -> Path:
    """A confusion matrix alone, as a PNG."""
    fig = _figure(5.5, 4.8)
    draw_confusion(fig.add_subplot(1, 1, 1), cm, labels, title)
    return _save(fig, path)


def plot_evaluation(points: Sequence[dict], main, path: str | os.PathLike, title: str) -> Path:
    """Accuracy against shots (error bars = 95% CI) beside the main run's confusion matrix.

    ``points``: dicts with ``shots``, ``accuracy``, ``ci95``, ``episodes``;
    ``main``: the :class:`~fewshot.evaluation.EvalResult` whose confusion matrix is drawn.
    """
    fig = _figure(11, 4.8)
    ax = fig.add_subplot(1, 2, 1)
    pts = sorted(points, key=lambda p: p["shots"])
    x = [p["shots"] for p in pts]
    y = [100 * p["accuracy"] for p in pts]
    e = [100 * p["ci95"] for p in pts]
    ax.errorbar(x, y, yerr=e, marker="o", capsize=4)
    for p, yy in zip(pts, y):
        ax.annotate(f"{yy:.1f}%\n({p['episodes']} ep.)", (p["shots"], yy), textcoords="offset points",
                    xytext=(6, -18), fontsize=7)
    ax.set_xticks(x)
    ax.set_xlabel("shots (examples per class)")
    ax.set_ylabel("accuracy (%), 95% CI")
    proto = main.protocol
    ax.set_title(f"{proto.get('ways')}-way accuracy against shots", fontsize=9)
    ax.grid(alpha=0.3)
    kind = "class" if main.confusion_kind == "class" else "episode-local class position"
    draw_confusion(fig.add_subplot(1, 2, 2), main.confusion, main.confusion_labels,
                   f"confusion, {proto.get('shots')}-shot, summed over {proto.get('episodes')} episodes", kind)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_open_set(figure: dict, path: str | os.PathLike, title: str) -> Path:
    """Open-set figure: histograms of the best score of known and unknown queries, and the
    reliability diagram of the top probability before and after calibration."""
    fig = _figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    k, u = np.asarray(figure["known_scores"]), np.asarray(figure["unknown_scores"])
    bins = np.linspace(min(k.min(), u.min()), max(k.max(), u.max()), 40)
    ax1.hist(k, bins=bins, alpha=0.6, density=True, label=f"known ({len(k)})")
    ax1.hist(u, bins=bins, alpha=0.6, density=True, label=f"unknown ({len(u)})")
    ax1.set_xlabel("best prototype score")
    ax1.set_ylabel("density")
    ax1.legend()
    ax1.set_title("scores")
    ax2.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for key, name in (("reliability_before", "before"), ("reliability_after", "after calibration")):
        pts = figure[key]
        ax2.plot([p["confidence"] for p in pts], [p["accuracy"] for p in pts], marker="o", label=name)
    ax2.set_xlabel("top probability")
    ax2.set_ylabel("accuracy")
    ax2.set_xlim(0, 1)
    ax2.set_ylim(0, 1)
    ax2.legend()
    ax2.set_title("reliability (known queries)")
    fig.suptitle(title)
    return _save(fig, path)
