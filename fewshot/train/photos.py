"""The cifar-cnn recipes: the small tutorial CNN trained on labelled photos through the shared recipe.

A photo encoder here is :func:`fewshot.train.recipes.finetune` started from a
random (seeded) ``cifar-cnn``: the same loop, batcher and export as every other
encoder, with a loss from :mod:`fewshot.losses`. :data:`RECIPES` are the
candidates (supervised cross-entropy as in the Keras tutorial, prototypical and
supervised-contrastive metric learning); :func:`leave_one_class_out` scores one
without looking at any class it will later be tested on: it trains on all base
classes but one and measures few-shot accuracy on held-out photos of the base
classes, the left-out one included (the transfer a new class sees).
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Sequence

import numpy as np

from fewshot.data.dataset import LabelledSet

BASE = ("airplane", "automobile", "bird", "cat", "deer")
NOVEL = ("dog", "frog", "horse", "ship", "truck")
#: episode shape per step (all base classes every step: ways = classes); ~100 photos a step
#: (``augment``: the image warp's overrides; these three predate mirroring and keep it off)
RECIPES: dict[str, dict[str, Any]] = {
    "ce": {"loss": "ce", "shots": 10, "queries": 10, "augment": {"hflip": False}},
    "proto": {"loss": "proto", "shots": 5, "queries": 15, "augment": {"hflip": False}},
    "supcon": {"loss": "supcon", "shots": 10, "queries": 10, "augment": {"hflip": False}},
    # the same episodes, with half the photos mirrored left-right as well as warped
    "proto-flip": {"loss": "proto", "shots": 5, "queries": 15, "augment": {"hflip": True}},
}
#: starting networks (a lever): the tutorial's CNN, or a Conv-4 (4 x [conv3x3 64, BN, ReLU, pool 2], averaged: 64-d)
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "small_cnn": ("small_cnn", {}),
    "conv4": ("conv", {"in_channels": 3, "width": 64, "depth": 4}),
}
#: how the shipped weights (version 2) were made, chosen by :func:`leave_one_class_out` (see
#: CIFAR_MODEL_CARD.md): recipe, starting network, epochs, and whether the encoder averages each
#: photo with its mirror image
SHIPPED: dict[str, Any] = {"recipe": "proto-flip", "arch": "small_cnn", "epochs": 60, "tta_flip": True}


def split_per_class(ds: LabelledSet, held_fraction: float, seed: int) -> tuple[LabelledSet, LabelledSet]:
    """(kept, held out): a seeded random ``held_fraction`` of every class's photos held out."""
    rng = np.random.default_rng([seed, 15])
    labels = np.asarray(ds.labels)
    held: list[int] = []
    for c in ds.classes:
        idx = np.flatnonzero(labels == c)
        held += rng.permutation(idx)[:int(round(held_fraction * len(idx)))].tolist()
    mask = np.zeros(len(ds), dtype=bool)
    mask[held] = True
    return ds.subset(np.flatnonzero(~mask)), ds.subset(np.flatnonzero(mask))


def random_photo_encoder(arch: str = "small_cnn", tta_flip: bool = False) -> Any:
    """A seeded random photo encoder of one of :data:`ARCHS`, with cifar-cnn's preprocessing
    (``tta_flip``: it embeds each photo as the mean with its mirror image)."""
    from fewshot.encoders.builtin import random_cifar_encoder

    name, kwargs = ARCHS[arch]
    # the tutorial CNN keeps cifar-cnn's own seed, so it is exactly ``cifar-cnn@1``'s random start
    return random_cifar_encoder(name, kwargs or None, tta_flip, "cifar-cnn" if arch == "small_cnn" else f"cifar-{arch}")


def train_photo_encoder(data: LabelledSet, recipe: str = "ce", epochs: int = 10, out: str | os.PathLike | None = None,
                        seed: int = 0, threads: int = 0, lr: float = 1e-3, name: str = "cifar-cnn",
                        progress: bool = True, log: Callable[[str], None] | None = None,
                        arch: str = "small_cnn", tta_flip: bool = False) -> Any:
    """A cifar-cnn trained from a seeded random start on every class of ``data`` for ``epochs`` passes.

    With ``tta_flip`` the encoder averages each photo with its mirror image (its centre too is
    computed so); training itself sees single views. Written to ``out`` when given. No validation
    classes are held out (the recipe is chosen beforehand, see :func:`leave_one_class_out`), so the
    run takes its fixed number of steps and the last weights are kept.
    """
    from fewshot.train.recipes import finetune

    r = RECIPES[recipe]
    ways = len(data.classes)
    steps = max(1, epochs * len(data) // (ways * (r["shots"] + r["queries"])))
    with tempfile.TemporaryDirectory(prefix="cifar-cnn-run-") as tmp:
        result = finetune(random_photo_encoder(arch, tta_flip), data, loss=r["loss"], ways=ways, shots=r["shots"],
                          queries=r["queries"], augment=r["augment"], steps=steps, lr=lr, val_fraction=0.0,
                          seed=seed, centre="recompute", out=out, name=name, run_dir=os.path.join(tmp, "run"), threads=threads,
                          progress=progress, log=log, checkpoint_every=max(100, steps // 10))
    result.summary.update(recipe=recipe, epochs=epochs, steps=steps, arch=arch, tta_flip=tta_flip)
    return result


def transfer_accuracy(encoder: Any, held: LabelledSet, shots: Sequence[int] = (1, 5), episodes: int = 600,
                      queries: int = 15, seed: int = 0) -> dict[int, Any]:
    """``{shots: EvalResult}``: 5-way (or all-class) nearest-prototype episodes on ``held`` (evaluation kernel)."""
    from fewshot.evaluation.embedding import embed_dataset
    from fewshot.evaluation.kernel import evaluate_embeddings

    emb = embed_dataset(encoder, held, progress=False)
    ways = min(5, len(held.classes))
    return {k: evaluate_embeddings(emb, held, ways, k, queries, episodes, seed) for k in shots}


def leave_one_class_out(base: LabelledSet, recipe: str, left_out: str, epochs: int = 10, held_fraction: float = 0.1,
                        seed: int = 0, threads: int = 0, progress: bool = True, arch: str = "small_cnn") -> dict:
    """Train ``recipe`` on the base classes but ``left_out`` (their kept photos); score it on the held-out
    photos of all base classes, 5-way 1- and 5-shot. Only base-class photos are used."""
    kept, held = split_per_class(base, held_fraction, seed)
    train = kept.with_classes([c for c in base.classes if c != left_out])
    result = train_photo_encoder(train, recipe, epochs, seed=seed, threads=threads, progress=progress, arch=arch)
    row = {"recipe": recipe, "arch": arch, "epochs": epochs, "left_out": left_out,
           "seconds": result.summary["seconds_total"]}
    for tta in ("", "_flip"):  # as trained, then with mirror-image averaging at embedding time (a lever)
        result.encoder.tta_flip = bool(tta)
        result.encoder.invalidate()
        scores = transfer_accuracy(result.encoder, held, seed=seed + 1)
        row.update({f"acc_{k}shot{tta}": round(float(r.accuracy), 4) for k, r in scores.items()})
        row.update({f"ci95_{k}shot{tta}": round(float(r.ci95), 4) for k, r in scores.items()})
    return row


def train_classifier(data: LabelledSet, steps: int, per_class: int = 10, seed: int = 0, threads: int = 0,
                     lr: float = 1e-3, augment: bool | dict = True, progress: bool = False
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """The small CNN from its seeded random start, trained with cross-entropy over ``data``'s classes
    (the shared loop, ``per_class`` photos of every class a step); returns ``predict(images) -> class names``.

    The tutorial's classifier (ten classes, ten epochs) and the from-scratch baseline on a
    few support photos are both this. A class with a single photo is trained on two views of it.
    """
    from fewshot.losses import ClassifierLoss
    from fewshot.train.loop import LossTerm, TrainConfig, fit
    from fewshot.train.prepare import to_encoder_arrays
    from fewshot.train.recipes import kind_batcher

    enc = random_photo_encoder("small_cnn")  # the tutorial CNN, whatever the newest cifar-cnn is
    arrays = to_encoder_arrays(data, enc.preprocess)
    smallest = min(arrays.labels.count(c) for c in arrays.classes)
    if smallest == 1:
        arrays, smallest = LabelledSet.concat([arrays, arrays]), 2
    take = min(per_class, smallest)
    cfg = TrainConfig(ways=len(arrays.classes), shots=take // 2, queries=take - take // 2, steps=steps, lr=lr,
                      warmup=min(20, steps // 10), rotations=False, augment=augment, checkpoint_every=steps,
                      seed=seed, threads=threads)
    loss = ClassifierLoss(enc.dim, arrays.classes)
    with tempfile.TemporaryDirectory(prefix="small-cnn-") as tmp:
        fit(enc.module, [LossTerm("ce", loss)], kind_batcher(arrays, cfg, enc), arrays, tmp, cfg, progress=progress)
    enc.module.eval()
    loss.eval()
    names = np.asarray(loss.classes)

    def predict(images: np.ndarray) -> np.ndarray:
        import torch

        x = to_encoder_arrays(LabelledSet(images, ["?"] * len(images), kind="image"), enc.preprocess).items
        with torch.inference_mode():
            out = [loss.head(enc.module(enc.preprocess.normalize(x[i:i + 512]))).argmax(1).numpy()
                   for i in range(0, len(x), 512)]
        return names[np.concatenate(out)]
    return predict
