"""An in-memory labelled image set: the common shape every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageDataset:
    """Images as uint8 [n, h, w] (grayscale, ink high) or [n, h, w, 3] (RGB), with labels.

    ``groups`` names a super-class per image (an Omniglot alphabet), so episodes can
    be drawn from one group at a time; ``sources`` says where each image came from.
    """

    images: np.ndarray
    labels: list[str]
    groups: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.labels) != n:
            raise ValueError(f"{n} images but {len(self.labels)} labels")
        if not self.groups:
            self.groups = ["all"] * n
        if not self.sources:
            self.sources = [f"#{i}" for i in range(n)]
        if len(self.groups) != n or len(self.sources) != n:
            raise ValueError("groups and sources must have one entry per image")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def subset(self, indices) -> "ImageDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(self.images[idx], [self.labels[i] for i in idx],
                            [self.groups[i] for i in idx], [self.sources[i] for i in idx])

    def split_groups(self, held_out: list[str]) -> tuple["ImageDataset", "ImageDataset"]:
        """(rest, held_out): whole groups (alphabets) held out, as Lake et al. validate."""
        held = set(held_out)
        unknown = held - set(self.groups)
        if unknown:
            raise ValueError(f"unknown groups {sorted(unknown)}")
        a = [i for i, g in enumerate(self.groups) if g not in held]
        b = [i for i, g in enumerate(self.groups) if g in held]
        return self.subset(a), self.subset(b)
