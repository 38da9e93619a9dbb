"""Metric-learning fine-tuning of an encoder, and switching an index to the result.

    >>> from fewshot.finetune import finetune
    >>> result = finetune("omniglot-conv4", "digits", classes="0-4", out="digits-conv4.pt")
    >>> result.encoder.fingerprint != encoders.load("omniglot-conv4").fingerprint
    True

The recipe itself is :func:`fewshot.train.recipes.finetune` (it knows nothing of
indexes); this module adds ``into=INDEX_DIR``: once the new encoder file is
written, the index is switched to it through :meth:`FewShotIndex.reindex`, which
re-embeds every stored example in one atomic commit. Keeping the switch here is
what lets :meth:`FewShotIndex.finetune` call the recipe without an import cycle.
"""
from __future__ import annotations

import os
from typing import Any

from fewshot.errors import FewShotError
from fewshot.train.prepare import (dataset_from_index, encoder_blocks, freeze_blocks,  # noqa: F401 (public API)
                                   load_training_data, parse_classes, split_classes)
from fewshot.train.recipes import DEFAULTS, FinetuneResult, default_run_dir  # noqa: F401 (public API)
from fewshot.train.recipes import finetune as finetune_encoder


def finetune(encoder: Any = None, data: Any = "digits", *, into: str | os.PathLike | None = None,
             index_dir: str | os.PathLike | None = None, progress: bool = True, **kwargs: Any) -> FinetuneResult:
    """Fine-tune ``encoder`` on labelled ``data`` with a metric-learning loss; return the new encoder.

    Parameters (the CLI options mirror them):

    * ``encoder``: a registered name, an encoder file, or an Encoder object (left unchanged):
      any torch encoder, image (omniglot-conv4, resnet18), sequence (omniglot-strokes-gru) or
      text (text-gru). None: with ``data="index"``, the encoder of the ``into`` index; else
      omniglot-conv4.
    * ``data``: a :class:`~fewshot.data.LabelledSet`, ``"digits"``, a class-per-folder directory,
      an Omniglot-style zip (images or strokes), ``"index"`` (the examples stored in ``into``)
      or an index directory.
    * ``classes``: the classes to train on (``"0-4"``, ``"a,b"``, ``"Greek/*"``); default all.
    * ``loss``: ``"proto"`` (episodic prototypical, default), ``"triplet"`` (batch-hard)
      ``"supcon"`` (supervised contrastive) or ``"ce"`` (cross-entropy over the training classes,
      its head dropped afterwards); ``loss_kwargs`` go to its constructor.
    * episode shape: ``ways`` classes x (``shots`` + ``queries``) examples per step; or
      ``batch_size`` per step, split evenly over ``ways`` classes. Queries are lowered
      to what the smallest class allows; a one-example class trains on two augmented views.
    * ``expand``: new classes from each class's symmetries: ``"dihedral"`` (x8),
      ``"rotations"`` (x4) or ``"none"``; ``"auto"``: dihedral for grayscale image
      encoders, rotations for pen strokes, none for photos and time series.
    * ``augment``: the kind's random augmentation (images: a small affine warp, and for
      photo encoders also left-right mirroring); False for none; for images a dict sets the
      warp's fields (``max_rotate``, ``max_shear``, ``scale_range``, ``max_translate``, ``hflip``).
    * ``train_last`` / ``freeze_until``: train only the last blocks.
    * ``val_fraction`` of the classes is held out; their ``val_ways``-way 1-shot accuracy,
      measured before training and every ``val_every`` steps, picks the best weights
      (``summary["improved"]`` is False when no step beat the start), and ``patience``
      validations without improvement stop the run. With single-example classes there
      is no validation (``summary["notes"]`` says so).
    * ``centre``: ``"keep"`` the encoder's CL2N centre, ``"recompute"`` it on the data, or ``"none"``.
    * ``out``: the new encoder file; ``into``: an index to switch to it (re-embeds all examples).
    * ``resume``: continue the unfinished run in ``run_dir`` (default ``<out>.run``);
      ``fresh`` discards one. Without either an unfinished run is an error.
    * ``device``: where the steps run, ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``
      (a GPU when torch sees one); checkpoints and the new encoder are CPU files either way.
    """
    if encoder is None:
        encoder = _index_encoder(into) if str(data) == "index" and into is not None else "omniglot-conv4"
    result = finetune_encoder(encoder, data, index_dir=index_dir if index_dir is not None else into,
                              progress=progress, **kwargs)
    if into is not None:
        try:
            result.summary["into"] = switch_index(into, result.encoder, progress=progress)
        except Exception as exc:  # the index is intact; say how to retry without training again
            path = result.path
            retry = f"; retry with `fewshot reindex {into} --encoder {path}`" if path is not None else ""
            raise FewShotError(f"could not switch {into} to the new encoder ({type(exc).__name__}: {exc}); "
                               f"the index is unchanged{retry}") from exc
    return result


def _index_encoder(index_dir: str | os.PathLike) -> Any:
    """The encoder an index is bound to (fine-tuning on its own examples starts from it); for an
    ensemble (the image default), its Conv-4 member: the index then moves to the fine-tuned network."""
    from fewshot.fewshot_index import FewShotIndex
    from fewshot.train.recipes import index_finetune_base

    with FewShotIndex.open(index_dir, readonly=True) as idx:
        return index_finetune_base(idx.encoder)


def switch_index(index_dir: str | os.PathLike, encoder: Any, progress: bool = False) -> dict:
    """Switch an index to ``encoder``: re-embed every stored example in one atomic commit.

    The old encoder need not load (only the stored copies matter). If anything
    fails before the commit, the index stays on its old encoder, unchanged.
    """
    from fewshot.fewshot_index import FewShotIndex
    from index import open_store

    with FewShotIndex(open_store(index_dir), encoder) as idx:
        old = idx.store.extra.get("fingerprint")
        out = idx.reindex(encoder, progress=progress)
    return {"index": str(index_dir), "old_fingerprint": old, **out}


__all__ = ["finetune", "FinetuneResult", "parse_classes", "split_classes", "freeze_blocks", "encoder_blocks",
           "load_training_data", "dataset_from_index", "switch_index", "DEFAULTS"]
