"""One in-memory labelled set, whatever the input kind: what every loader returns.

Images and sequences used to have a class each (``ImageDataset``,
``SequenceDataset``) with the same labels/groups/sources bookkeeping written
twice and callers telling them apart with ``hasattr``. :class:`LabelledSet`
holds either kind; ``kind`` says which, so code branches on a value, and a new
input kind needs no new container.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

KINDS = ("image", "sequence", "text")


def _infer_kind(items: Any) -> str:
    """An ndarray stack is images; a list of strings is text; a list of per-example arrays is sequences."""
    if isinstance(items, np.ndarray):
        return "image"
    return "text" if len(items) and all(isinstance(x, str) for x in items) else "sequence"


@dataclass
class LabelledSet:
    """Examples with a label, a group and a source each.

    ``items``: uint8 images ``[n, h, w]`` (grayscale, ink high) or ``[n, h, w, 3]``
    (RGB) for ``kind="image"``; a list of float32 ``[T_i, F]`` arrays for
    ``kind="sequence"``; a list of strings for ``kind="text"``. ``groups`` names a super-class per example (an Omniglot
    alphabet) so episodes can be drawn from one group at a time; ``sources`` says
    where each example came from.
    """

    items: Any
    labels: list[str]
    groups: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    kind: str = ""
    #: optional, one per example: "support" or "query" (train/test splits: supports only from support
    #: rows, queries only from query rows); empty: any example may be either
    roles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kind = self.kind or _infer_kind(self.items)
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind != "image":
            self.items = list(self.items)
        n = len(self.items)
        if len(self.labels) != n:
            raise ValueError(f"{n} items but {len(self.labels)} labels")
        self.labels = list(self.labels)
        self.groups = list(self.groups) if len(self.groups) else ["all"] * n
        self.sources = list(self.sources) if len(self.sources) else [f"#{i}" for i in range(n)]
        self.roles = list(self.roles)
        if len(self.groups) != n or len(self.sources) != n or len(self.roles) not in (0, n):
            raise ValueError("groups, sources and roles must have one entry per item")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def take(self, indices: Sequence[int]) -> Any:
        """The items at ``indices``, in the container of this kind (array or list)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.kind == "image":
            return self.items[idx]
        return [self.items[int(i)] for i in idx]

    def subset(self, indices: Sequence[int]) -> "LabelledSet":
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64)]
        return LabelledSet(self.take(idx), [self.labels[i] for i in idx], [self.groups[i] for i in idx],
                           [self.sources[i] for i in idx], self.kind,
                           [self.roles[i] for i in idx] if self.roles else [])

    def with_classes(self, classes: Sequence[str]) -> "LabelledSet":
        """Only the examples of ``classes``."""
        keep = set(classes)
        return self.subset([i for i, lab in enumerate(self.labels) if lab in keep])

    def keep_groups(self, name: str, include: Sequence[str] | None = None,
                    exclude: Sequence[str] | None = None) -> "LabelledSet":
        """Only the groups (alphabets, domains) in ``include`` and none in ``exclude``; ``name``
        (where the data came from) is for the error when a group is unknown or there are none."""
        if not (include or exclude):
            return self
        from fewshot.errors import InputError

        known = set(self.groups)
        if known == {"all"}:
            raise InputError(f"alphabets apply to Omniglot data or folders of groups (root/<group>/<class>/file) "
                             f"only, and {name} has no groups")
        for g in set(include or ()) | set(exclude or ()):
            if g not in known:
                raise InputError(f"unknown alphabet {g!r}; known: {', '.join(sorted(known))}")
        keep, drop = set(include or known), set(exclude or ())
        return self.subset([i for i, g in enumerate(self.groups) if g in keep and g not in drop])

    def split_groups(self, held_out: list[str]) -> tuple["LabelledSet", "LabelledSet"]:
        """(rest, held_out): whole groups (alphabets) held out, as Lake et al. validate."""
        held = set(held_out)
        unknown = held - set(self.groups)
        if unknown:
            raise ValueError(f"unknown groups {sorted(unknown)}; known: {', '.join(sorted(set(self.groups)))}")
        a = [i for i, g in enumerate(self.groups) if g not in held]
        b = [i for i, g in enumerate(self.groups) if g in held]
        return self.subset(a), self.subset(b)

    @staticmethod
    def concat(parts: Sequence["LabelledSet"]) -> "LabelledSet":
        """The examples of ``parts`` one after the other (all of one kind)."""
        kind = parts[0].kind
        items = np.concatenate([p.items for p in parts]) if kind == "image" else [s for p in parts for s in p.items]
        roles = [x for p in parts for x in p.roles] if all(p.roles for p in parts) else []
        return LabelledSet(items, [x for p in parts for x in p.labels], [x for p in parts for x in p.groups],
                           [x for p in parts for x in p.sources], kind, roles)

