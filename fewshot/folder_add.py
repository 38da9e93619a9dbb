"""Adding a folder of class folders, and finding duplicates, without anything silent.

:meth:`FewShotIndex.add_folder` and ``fewshot add --from-folder`` use these: the
folder scan (:func:`fewshot.inputs.scan_class_folders`) reports empty, nested and
linked folders; duplicates are found by SHA-256, the name an example's stored copy
has in ``examples/``, so the check costs one hash per file and, only when a stored
copy matches, one pass over the records (a removed class leaves its copies until
``check --repair``, so a blob file alone proves nothing).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewshot.inputs import IMAGE_SUFFIXES, SEQUENCE_SUFFIXES, InputItem, file_digest, scan_class_folders, some_names


class FolderNoticeWarning(UserWarning):
    """Something :meth:`FewShotIndex.add_folder` did that the user should know (skipped, merged, ...)."""


@dataclass
class FolderAdd:
    """What an add did: new ids, examples per (stored) label, notices, and the files skipped."""

    ids: list[int]
    labels: dict[str, int]
    notices: list[str]
    skipped: list[str]


def duplicates_notice(dups: list[InputItem], skipped: bool) -> str:
    what = "skipped" if skipped else "added again (--skip-duplicates / skip_duplicates=True leaves them out)"
    return (f"{len(dups)} file(s) are exact duplicates of stored examples or of each other, {what}: "
            f"{some_names([it.name for it in dups])}")


def add_folder_report(idx, root: str | os.PathLike, progress: bool = False,
                      skip_duplicates: bool = False) -> FolderAdd:
    """Add every sub-folder of ``root`` to ``idx`` as a class named after it, in one atomic write."""
    scan = scan_class_folders(root, SEQUENCE_SUFFIXES if idx.encoder.input_kind == "sequence" else IMAGE_SUFFIXES)
    files = [(label, f) for label, fs in scan.classes.items() for f in fs]
    items = idx._items([f for _, f in files])  # files only: one item per file, in order
    dup = duplicate_flags(idx, items)
    dups = [it for it, d in zip(items, dup) if d]
    notices = scan.notices + ([duplicates_notice(dups, skip_duplicates)] if dups else [])
    pairs: dict[str, list[Path]] = {}
    for (label, f), d in zip(files, dup):
        if not (d and skip_duplicates):
            pairs.setdefault(label, []).append(f)
    ids = idx.add_many(list(pairs.items()), progress=progress) if pairs else []
    stored = idx.store.labels()
    labels: dict[str, int] = {}
    for label, fs in pairs.items():
        key = idx.stored_label(label, stored=stored)  # NFC, or the older NFD class it joined
        labels[key] = labels.get(key, 0) + len(fs)
    return FolderAdd(ids, labels, notices, [it.name for it in dups] if skip_duplicates else [])


def add_files_report(idx, label: str, inputs: Any, skip_duplicates: bool = False,
                     progress: bool = False) -> FolderAdd:
    """``add --label LABEL FILE...``: duplicates said (or skipped), as for a folder."""
    label = idx.stored_label(label, must_exist=False)  # refused before any file is read
    new, dups = split_duplicates(idx, inputs)
    keep = [it.value for it in new] if skip_duplicates else inputs  # in the order given
    ids = idx.add(label, keep, progress=progress) if keep else []
    notices = [duplicates_notice(dups, skip_duplicates)] if dups else []
    return FolderAdd(ids, {idx.stored_label(label): len(ids)} if ids else {}, notices,
                     [it.name for it in dups] if skip_duplicates else [])


def split_duplicates(idx, inputs: Any) -> tuple[list[InputItem], list[InputItem]]:
    """(new, duplicates) among ``inputs``: files whose bytes equal a stored example's or an earlier input's.

    In-memory inputs are never duplicates.
    """
    items = idx._items(inputs)
    flags = duplicate_flags(idx, items)
    return [it for it, d in zip(items, flags) if not d], [it for it, d in zip(items, flags) if d]


def duplicate_flags(idx, items: list[InputItem]) -> list[bool]:
    """Per item: is it a file with the bytes of a stored example or of an earlier item?"""
    digests = [file_digest(it.path) if it.path is not None else None for it in items]
    seen = stored_digests(idx, {d for d in digests if d})
    flags = []
    for d in digests:
        flags.append(d is not None and d in seen)
        seen.add(d)
    return flags


def stored_digests(idx, digests: set[str]) -> set[str]:
    """Which of ``digests`` a stored example of ``idx`` has: blob files are candidates, records confirm."""
    if hasattr(idx, "stored_digests"):  # an index behind `fewshot serve`: its server looks
        return idx.stored_digests(digests)
    candidates = {d for d in digests if any((idx.blobs.root / d[:2]).glob(d + "*"))}
    if not candidates:
        return set()
    keys = (str(r.metadata.get("blob", "")) for r in idx.store.records())
    return {k.rsplit("/", 1)[-1][:64] for k in keys} & candidates
