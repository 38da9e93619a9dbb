"""Teacher targets for distillation: pen strokes rendered as images, embedded by an image encoder.

Rendering is the slow part, so each training sequence is rendered in
``teacher_views`` augmented views once per run (view 0 unaugmented), embedded,
and cached in the run folder (``teacher_targets.pt``, keyed by the teacher's
fingerprint and the options that shaped the views) for resumed runs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from fewshot.data.dataset import LabelledSet
from fewshot.encoders.files import atomic_torch_save


@torch.no_grad()
def teacher_targets(teacher: Any, raws: list[np.ndarray], batch: int = 512) -> torch.Tensor:
    """Teacher embeddings of stroke arrays rendered as Omniglot images, centred on their mean and
    L2-normalised (CL2N, as the image encoders are used)."""
    from fewshot.sequences import render_strokes

    out = []
    for i in range(0, len(raws), batch):
        arr = np.stack([teacher.preprocess.to_array(render_strokes(r)) for r in raws[i:i + batch]])
        out.append(torch.from_numpy(teacher.embed_tensor(teacher.preprocess.normalize(arr))))
    t = torch.cat(out)
    return F.normalize(t - t.mean(0), dim=-1)


def augment_raw(raw: np.ndarray, aug: Any, rng: np.random.Generator) -> np.ndarray:
    """An affine-warped, jittered copy of a raw stroke array (same layout, for rendering and training)."""
    from fewshot.sequences import array_to_strokes, strokes_to_array

    ss = array_to_strokes(raw)
    centre = np.concatenate(ss).mean(0)
    warped = aug.strokes([s - centre for s in ss], rng)
    return strokes_to_array([w + centre for w in warped])


def teacher_views(teacher: Any, data: LabelledSet, cfg: Any, out: Path,
                  log: Callable[[str], None] | None = None) -> tuple[list[list[np.ndarray]], torch.Tensor]:
    """(views, targets ``[views, n, teacher_dim]``): ``cfg.teacher_views`` augmented views of every sequence."""
    from fewshot.sequences import SequenceAugment

    t0 = time.time()
    fields = dict(cfg.augment) if isinstance(cfg.augment, dict) else {}
    aug = SequenceAugment(**fields)
    views = [list(data.items)]
    for v in range(1, cfg.teacher_views):
        rng = np.random.default_rng([cfg.seed, v, 99])
        views.append([augment_raw(s, aug, rng) for s in data.items])
    flat = [s for vs in views for s in vs]
    cache = out / "teacher_targets.pt"
    key = f"{teacher.fingerprint}:{len(flat)}:{cfg.seed}:{cfg.symmetries}:{json.dumps(fields, sort_keys=True)}"
    cached = torch.load(cache, weights_only=True) if cache.exists() else None
    if cached is not None and cached.get("key") == key:
        targets = cached["targets"]
    else:
        targets = teacher_targets(teacher, flat).view(len(views), len(data), -1)
        atomic_torch_save({"key": key, "targets": targets}, cache)
    if log:
        log(json.dumps({"teacher_views": len(flat), "seconds": round(time.time() - t0, 1)}))
    return views, targets
