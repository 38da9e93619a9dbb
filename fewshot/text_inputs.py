"""Text inputs: strings, ``.txt`` files, one-per-line query files and labelled tables.

Text is the first input kind added as a plug-in; everything that turns what a
user passes into text items lives here, so the CLI and the library refuse the
same bad text the same way (one :class:`~fewshot.errors.InputError`):

* empty or whitespace-only text;
* text longer than ``FEWSHOT_MAX_TEXT_CHARS`` characters (default 10,000);
* bytes that are not UTF-8 (a UTF-8 byte-order mark is allowed);
* files larger than ``FEWSHOT_MAX_TEXT_FILE_BYTES`` (checked before reading).

In the library a ``str`` is always the text itself, never a path: pass a
:class:`pathlib.Path` for a ``.txt`` file (one example per file; a folder
expands to its ``.txt`` files). The ``input`` field of predictions and search
results holds the text cut to :data:`DISPLAY_CHARS` characters.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewshot.errors import InputError
from fewshot.inputs import InputItem, display_path, expand_inputs
from fewshot.limits import check_size, limit, read_file

#: Characters of a text shown in ``input`` fields (results, ``--json``); longer texts end in "...".
DISPLAY_CHARS = 80
TEXT_FILE_SUFFIXES = (".txt",)
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
DEFAULT_TEXT_COLUMN, DEFAULT_LABEL_COLUMN = "text", "label"
_FILE_LIMIT = "FEWSHOT_MAX_TEXT_FILE_BYTES"


def shorten(text: str, n: int = DISPLAY_CHARS) -> str:
    """One display line: whitespace runs become one space, cut to ``n`` characters with '...'."""
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


def check_text(text: Any, name: str) -> str:
    """``text`` if it is usable; else one InputError naming it (empty, too long, not a string)."""
    if not isinstance(text, str):
        raise InputError(f"{name}: expected text (str), got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{name}: text is empty or only whitespace")
    check_size(len(text), name, "FEWSHOT_MAX_TEXT_CHARS", unit="characters")
    return text


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 bytes (an optional byte-order mark) to str; anything else is refused, never guessed."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text (undecodable byte at offset {exc.start})") from None


@dataclass
class TextItem(InputItem):
    """One text example held in memory; ``name`` is its display form, ``value`` the full text.

    An index stores it as the text itself, UTF-8, in a ``.txt`` blob (:mod:`fewshot.input_kinds`).
    """


def text_item(text: Any, name: str | None = None) -> TextItem:
    """A checked :class:`TextItem`."""
    shown = name or (shorten(text) if isinstance(text, str) else "") or "<empty text>"
    return TextItem(check_text(text, shown), shown)


def text_items(inputs: Any) -> list[InputItem]:
    """Strings, lists of strings, Paths of ``.txt`` files or folders of them -> items (checked strings)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise InputError(f"unsupported text input of type {type(inputs).__name__}: pass a string, a list of "
                         "strings, or pathlib.Path objects of .txt files")
    items: list[InputItem] = []
    for i, x in enumerate(inputs):
        if isinstance(x, InputItem):
            items.append(x)
        elif isinstance(x, str):
            items.append(text_item(x, None))
        elif isinstance(x, os.PathLike):
            found = expand_inputs([x], TEXT_FILE_SUFFIXES)
            bad = [it for it in found if it.path is not None and it.path.suffix.lower() not in TEXT_FILE_SUFFIXES]
            if bad:
                raise InputError(f"{bad[0].name}: text inputs are strings or .txt files (only .txt, "
                                 f"one example per file), not {bad[0].path.suffix or 'extension-less'} files")
            items += found
        else:
            raise InputError(f"unsupported text input #{i} of type {type(x).__name__}: pass strings "
                             "or pathlib.Path objects of .txt files")
    return items


def read_item_text(item: InputItem) -> str:
    """The text of an item: in memory, or a whole file (one example), read within the limits."""
    if isinstance(item.value, str):
        return check_text(item.value, item.name)
    data = read_file(item.value, item.name, _FILE_LIMIT)
    return check_text(decode_text(data, item.name), item.name)


def read_source(path: str, what: str = "input") -> tuple[str, str]:
    """(decoded text, name) of a file, or of standard input for ``-``."""
    if path == "-":
        data = sys.stdin.buffer.read(limit(_FILE_LIMIT) + 1)
        check_size(len(data), "<stdin>", _FILE_LIMIT)
        return decode_text(data, "<stdin>"), "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file not found: {display_path(p)}")
    name = display_path(p)
    return decode_text(read_file(p, name, _FILE_LIMIT), name), name


def read_lines(path: str) -> list[TextItem]:
    """One query per line (blank lines skipped) from a file or ``-``; none at all is an error."""
    text, name = read_source(path)
    items = [text_item(line, None) for line in text.splitlines() if line.strip()]
    if not items:
        raise InputError(f"{name}: holds no text (one query per line expected)")
    return items


def parse_json(text: str, name: str) -> Any:
    """JSON text -> value; a syntax error is one InputError naming where."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name} is not JSON ({exc.msg} at line {exc.lineno})") from None


def _rows(text: str, fmt: str, name: str) -> list[dict]:
    """Rows of a CSV/TSV (with a header) or JSONL text as dicts."""
    if fmt == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{name}: line {n}")
            if not isinstance(row, dict):
                raise InputError(f"{name}: line {n} is not a JSON object")
            rows.append(row)
        return rows
    try:
        return list(csv.DictReader(io.StringIO(text), delimiter="\t" if fmt == ".tsv" else ","))
    except csv.Error as exc:
        raise InputError(f"{name}: not readable as {fmt[1:].upper()} ({exc})") from None


def sniff_format(text: str) -> str:
    """The table format of standard input: JSONL if it starts with '{', TSV if its header has a tab."""
    head = text.lstrip()[:1]
    if head == "{":
        return ".jsonl"
    return ".tsv" if "\t" in text.split("\n", 1)[0] else ".csv"


def read_table(path: str, text_column: str = DEFAULT_TEXT_COLUMN,
               label_column: str = DEFAULT_LABEL_COLUMN) -> list[tuple[str, TextItem]]:
    """(label, text item) pairs from a CSV/TSV/JSONL file (or ``-``) with a text and a label column."""
    suffix = Path(path).suffix.lower() if path != "-" else ""
    if path != "-" and suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path}: a labelled examples file must be .csv, .tsv or .jsonl "
                         "(or give --label with a .txt file of one example per line)")
    text, name = read_source(path)
    rows = _rows(text, suffix or sniff_format(text), name)
    if not rows:
        raise InputError(f"{name}: holds no examples")
    missing = [c for c in (text_column, label_column) if c not in rows[0]]
    if missing:
        raise InputError(f"{name}: no column {missing[0]!r} (columns: {', '.join(map(str, rows[0]))}); "
                         "choose them with --text-column / --label-column")
    out = []
    for n, row in enumerate(rows, 1):
        label, text_ = row.get(label_column), row.get(text_column)
        where = f"{name} row {n}"
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"{where}: empty or missing label")
        if not isinstance(text_, str):
            raise InputError(f"{where}: the text is {'missing' if text_ is None else type(text_).__name__}, "
                             "not a string")
        try:
            out.append((label, text_item(text_)))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return out
