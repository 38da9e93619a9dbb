"""Time-series classification data: UCR/UEA ``.ts`` files (as shipped inside the aeon wheel) -> LabelledSet.

aeon cannot always be installed next to fewshot's own pins (aeon 1.6 holds numpy
below 2.4), so the files are parsed here, without aeon: :func:`aeon_data_dir`
finds them in an installed aeon (any environment: ``FEWSHOT_AEON_DATA`` or
``--aeon-data`` point at its ``aeon/datasets/data`` folder) and :func:`read_ts`
reads the format (header lines starting with ``@``, then one series per line:
channels separated by ``:``, values by ``,``, the class label last; ``?`` is a
missing value, accepted only as padding at the end; channels of unequal length are
cut to the shortest).

Every series of a set must have the same channel count (:func:`series_set`
refuses mixtures with one clear error): the channel order is what makes two
series of one data set comparable.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from fewshot.data.dataset import LabelledSet
from fewshot.errors import InputError
from fewshot.sequences import check_array

#: The classification problems shipped in the aeon 1.6 wheel (aeon/datasets/data). The others there
#: are forecasting, regression, anomaly or segmentation data (Airline, CardanoSentiment, Covid3Month, ...).
AEON_CLASSIFICATION = ("ACSF1", "ArrowHead", "BasicMotions", "Covid3Month_disc", "GunPoint", "ItalyPowerDemand",
                       "JapaneseVowels", "OSULeaf", "PickupGestureWiimoteZ", "UnitTest")
AEON_DATA_ENV = "FEWSHOT_AEON_DATA"


def aeon_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The ``aeon/datasets/data`` folder: ``explicit``, else ``$FEWSHOT_AEON_DATA``, else the installed aeon."""
    for cand in (explicit, os.environ.get(AEON_DATA_ENV)):
        if cand:
            p = Path(cand)
            if not p.is_dir():
                raise InputError(f"{p}: no such folder (expected aeon/datasets/data of an aeon installation)")
            return p
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"aeon is not installed here; pip install 'fewshot[timeseries]' or set {AEON_DATA_ENV} "
                         "to the aeon/datasets/data folder of an aeon installed elsewhere")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def parse_ts(text: str, name: str = "<ts>") -> tuple[list[np.ndarray], list[str]]:
    """The body of a ``.ts`` file -> (float32 ``[T, C]`` arrays, labels)."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "@data") + 1
    except StopIteration:
        raise InputError(f"{name}: no @data line (not a .ts file)") from None
    series, labels = [], []
    for lineno, ln in enumerate(lines[start:], start + 1):
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        *chans, label = ln.split(":")
        if not chans:
            raise InputError(f"{name}, line {lineno}: expected channels and a label separated by ':'")
        try:
            vals = [np.array([np.nan if v.strip() == "?" else float(v) for v in c.split(",")], np.float32)
                    for c in chans]
        except ValueError:
            raise InputError(f"{name}, line {lineno}: a value is not a number") from None
        t = min(len(v) for v in vals)
        series.append(check_array(np.stack([v[:t] for v in vals], 1), f"{name}, line {lineno}"))
        labels.append(label.strip())
    if not series:
        raise InputError(f"{name}: no series after @data")
    return series, labels


def read_ts(path: str | os.PathLike) -> tuple[list[np.ndarray], list[str]]:
    """A ``.ts`` file -> (arrays, labels)."""
    path = Path(path)
    return parse_ts(path.read_text(encoding="utf-8", errors="replace"), str(path))


def series_set(series: Sequence[np.ndarray], labels: Sequence[str], groups: Sequence[str] = (),
               sources: Sequence[str] = (), roles: Sequence[str] = ()) -> LabelledSet:
    """A LabelledSet of kind ``sequence`` from ``[T_i, C]`` arrays that share their channel count."""
    arrays = [check_array(s, src) for s, src in zip(series, sources or [f"#{i}" for i in range(len(series))])]
    counts = sorted({a.shape[1] for a in arrays})
    if len(counts) > 1:
        first = {c: next(i for i, a in enumerate(arrays) if a.shape[1] == c) for c in counts}
        raise InputError("series with different channel counts cannot form one set: "
                         + ", ".join(f"{c} (e.g. #{i})" for c, i in first.items()))
    return LabelledSet(arrays, list(labels), list(groups), list(sources), kind="sequence", roles=list(roles))


def load_ucr(name: str, data_dir: str | os.PathLike | None = None, prefix_labels: bool = True) -> LabelledSet:
    """Train and test splits of one problem, together (group = the problem; role unused).

    Labels become ``"<problem>/<label>"`` when ``prefix_labels`` so that several problems
    can be pooled without their class names colliding; ``sources`` say ``<problem>_<SPLIT>:<row>``.
    """
    folder = aeon_data_dir(data_dir) / name
    series: list[np.ndarray] = []
    labels: list[str] = []
    sources: list[str] = []
    for split in ("TRAIN", "TEST"):
        path = folder / f"{name}_{split}.ts"
        if not path.is_file():
            raise InputError(f"{path}: not found (is {name} a data set shipped with aeon?)")
        s, lab = read_ts(path)
        series += s
        labels += [f"{name}/{x}" if prefix_labels else x for x in lab]
        sources += [f"{name}_{split}:{i}" for i in range(len(s))]
    return series_set(series, labels, [name] * len(series), sources)


def split_classes(ds: LabelledSet) -> tuple[list[int], list[int]]:
    """(rows of the first half of the classes, rows of the rest): the "unseen classes" protocol of the demo.

    Classes are ordered by their name within the problem (shorter first: "2" before "10").
    """
    raw = sorted({lab.split("/", 1)[-1] for lab in ds.classes}, key=lambda c: (len(c), c))
    first = set(raw[: len(raw) // 2])
    in_first = [lab.split("/", 1)[-1] in first for lab in ds.labels]
    return [i for i, f in enumerate(in_first) if f], [i for i, f in enumerate(in_first) if not f]
