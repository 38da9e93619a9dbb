"""Text datasets: CLINC150-style JSON (splits and domains) and labelled tables (CSV/TSV/JSONL).

CLINC150 (``clinc150_dev.json``) holds ``{"train": [[text, intent], ...], "test": ...,
"oos_val": ...}``; ``domains.json`` beside it maps each domain to its intents. The
loader returns one :class:`~fewshot.data.LabelledSet` of kind ``"text"`` with
the train queries as supports and the test queries as queries (``roles``), and
the domain of each intent as its group, so ``--alphabets`` picks held-out
domains and ``--within-alphabet`` draws an episode's intents from one domain,
exactly as Omniglot holds out alphabets. The out-of-scope queries
(:func:`load_clinc_oos`) match no intent: they measure how well the score tells
"none of these" apart.
"""
from __future__ import annotations

import os
from pathlib import Path

from fewshot.data.dataset import LabelledSet
from fewshot.errors import InputError

TEXT_DATA_SUFFIXES = (".json", ".csv", ".tsv", ".jsonl")
SUPPORT_SPLIT, QUERY_SPLIT, OOS_SPLIT = "train", "test", "oos_val"


def _read_json(path: Path) -> object:
    from fewshot.text_inputs import parse_json, read_source

    text, name = read_source(str(path), "dataset")
    return parse_json(text, name)


def _clinc(path: Path) -> dict:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(SUPPORT_SPLIT), list) \
            or not isinstance(data.get(QUERY_SPLIT), list):
        raise InputError(f"{path}: expected CLINC150 JSON with 'train' and 'test' lists of [text, intent]")
    return data


def _domains(path: Path) -> dict[str, str]:
    """intent -> domain from ``domains.json`` beside the data (every intent its own group without it)."""
    f = path.parent / "domains.json"
    if not f.is_file():
        return {}
    doms = _read_json(f)
    if not isinstance(doms, dict):
        raise InputError(f"{f}: expected a JSON object of domain -> [intents]")
    return {intent: dom for dom, intents in doms.items() for intent in intents}


def _pairs(rows: list, split: str, path: Path) -> list[tuple[str, str]]:
    from fewshot.text_inputs import check_text

    out = []
    for n, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 2 and all(isinstance(x, str) for x in row)):
            raise InputError(f"{path}: {split}[{n}] is not a [text, intent] pair")
        out.append((check_text(row[0], f"{path.name}:{split}[{n}]"), row[1]))
    return out


def load_clinc(path: str | os.PathLike, groups: list[str] | None = None,
               exclude_groups: list[str] | None = None) -> LabelledSet:
    """CLINC150 JSON: train queries as supports, test queries as queries; groups = domains."""
    path = Path(path)
    data, domain_of = _clinc(path), _domains(path)
    items, labels, grps, sources, roles = [], [], [], [], []
    for split, role in ((SUPPORT_SPLIT, "support"), (QUERY_SPLIT, "query")):
        for n, (text, intent) in enumerate(_pairs(data[split], split, path)):
            if intent == "oos":
                continue
            items.append(text)
            labels.append(intent)
            grps.append(domain_of.get(intent, "all"))
            sources.append(f"{split}[{n}]")
            roles.append(role)
    ds = LabelledSet(items, labels, grps, sources, "text", roles)
    return ds.keep_groups(str(path), groups, exclude_groups)


def load_clinc_oos(path: str | os.PathLike) -> list[str]:
    """The out-of-scope queries of the validation split (``oos_val``): messages that match no intent."""
    path = Path(path)
    data = _clinc(path)
    if not isinstance(data.get(OOS_SPLIT), list):
        raise InputError(f"{path}: no '{OOS_SPLIT}' list of out-of-scope queries")
    return [t for t, _ in _pairs(data[OOS_SPLIT], OOS_SPLIT, path)]


def load_text_table(path: str | os.PathLike, text_column: str = "text", label_column: str = "label") -> LabelledSet:
    """A CSV/TSV/JSONL table of text and label columns (no groups; any example may support or query)."""
    from fewshot.text_inputs import read_table

    rows = read_table(str(path), text_column, label_column)
    return LabelledSet([it.value for _, it in rows], [lab for lab, _ in rows], kind="text",
                       sources=[f"row {n}" for n in range(1, len(rows) + 1)])


def load_text_dataset(spec: str | os.PathLike, groups: list[str] | None = None,
                      exclude_groups: list[str] | None = None) -> LabelledSet:
    """CLINC150 JSON or a labelled table, by suffix."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"dataset not found: {spec}")
    if path.suffix.lower() == ".json":
        return load_clinc(path, groups, exclude_groups)
    return load_text_table(path).keep_groups(str(path), groups, exclude_groups)
