"""Train the shipped cifar-cnn encoder on the five CIFAR-10 base classes (never the five novel ones).

    # 1. choose the recipe on base classes only: leave one base class out, score few-shot on held-out photos
    python demos/train_cifar_encoder.py --select --left-out automobile,deer --json runs/cifar_select.json
    # 2. train a recipe on all five base classes (all their photos) and write the encoder file
    #    (version 2, CIFAR_MODEL_CARD.md; version 1 was --recipe proto --epochs 10)
    python demos/train_cifar_encoder.py --recipe proto-flip --epochs 60 --tta-flip \
        --out fewshot/encoders/weights/cifar_cnn_v2.pt

Recipes (fewshot.train.photos.RECIPES): ``ce`` (supervised cross-entropy, the Keras tutorial's
head), ``proto`` (prototypical episodes), ``supcon`` (supervised contrastive), ``proto-flip``
(prototypical, mirror images among the augmentations); Adam through the shared fine-tuning recipe
and training loop. ``--arch conv4`` starts from a Conv-4 instead of the tutorial CNN (a lever).
"""
from __future__ import annotations

import json
import os
import time

from fewshot.data.registry import load_dataset
from fewshot.metrics import json_safe
from fewshot.train.photos import ARCHS, BASE, RECIPES, leave_one_class_out, train_photo_encoder

from demo_args import demo_parser

DATA = "../shared/data/cifar10/cifar10_train.zip"


def main() -> None:
    p = demo_parser(__doc__)
    p.add_argument("--data", default=DATA)
    p.add_argument("--select", action="store_true", help="leave-one-base-class-out scores of the recipes")
    p.add_argument("--recipes", default=",".join(RECIPES), help="recipes to score with --select")
    p.add_argument("--left-out", default="automobile,deer", help="base classes left out in turn (--select)")
    p.add_argument("--recipe", default="ce", choices=sorted(RECIPES))
    p.add_argument("--out", default="runs/cifar_cnn.pt")
    p.add_argument("--arch", default="small_cnn", choices=sorted(ARCHS), help="starting network (a lever)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tta-flip", action="store_true", help="the encoder averages each photo with its mirror image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results to this file (--select: appended to)")
    a = p.parse_args()
    t0 = time.time()
    base = load_dataset(a.data, size=32, rgb=True).with_classes(BASE)
    print(f"loaded {len(base)} base-class photos in {time.time() - t0:.1f}s", flush=True)
    if a.select:
        out = json.load(open(a.json)) if a.json and os.path.exists(a.json) else []
        for left in a.left_out.split(","):
            for recipe in a.recipes.split(","):
                row = leave_one_class_out(base, recipe, left, a.epochs, seed=a.seed, threads=a.threads,
                                          progress=False, arch=a.arch)
                print(json.dumps(row), flush=True)
                out.append(row)
                if a.json:
                    open(a.json, "w").write(json.dumps(out, indent=1) + "\n")
        return
    result = train_photo_encoder(base, a.recipe, a.epochs, out=a.out, seed=a.seed, threads=a.threads,
                                 progress=False, log=print, arch=a.arch, tta_flip=a.tta_flip)
    summary = {**result.to_dict(), "recipe": a.recipe, "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(json_safe(summary), indent=1))
    if a.json:
        open(a.json, "w").write(json.dumps(json_safe(summary), indent=1) + "\n")


if __name__ == "__main__":
    main()
