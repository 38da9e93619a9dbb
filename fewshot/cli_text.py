"""The text options of the CLI (``--text``, ``--from-file``, ``--text-column``, ``--label-column``).

Kept out of :mod:`fewshot.cli` so the commands only gain a decorator and a call:
these helpers turn the options into text items (or (label, items) pairs for
``add``) and refuse text options on an index of another kind with one line.
Nothing here imports torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

text_option = click.option("--text", "texts", multiple=True, metavar="TEXT",
                           help="A text input (repeatable); '-' reads one text from standard input.")


def from_file_option(help_text: str):
    return click.option("--from-file", "from_file", default=None, metavar="FILE|-", help=help_text)


QUERY_FILE_HELP = "Text queries, one per line (blank lines skipped); '-' reads standard input."
ADD_FILE_HELP = ("Labelled text examples: .csv/.tsv (with a header) or .jsonl with a text and a label column; "
                 "with --label, a .txt file (or '-') of one example per line.")
text_column_option = click.option("--text-column", default="text", show_default=True,
                                  help="Column (or JSON key) of --from-file holding the text.")
label_column_option = click.option("--label-column", default="label", show_default=True,
                                   help="Column (or JSON key) of --from-file holding the label.")


def wants_text(texts: tuple, from_file: str | None) -> bool:
    return bool(texts) or from_file is not None


def _texts(texts: tuple) -> list:
    from fewshot.text_inputs import read_source, text_item

    out = []
    for t in texts:
        if t == "-":
            body, name = read_source("-")
            out.append(text_item(body.rstrip("\n")))
        else:
            out.append(text_item(t))
    return out


def require_text_index(idx: Any, index_dir: str) -> None:
    """Text options on an image or stroke index: one clear error, before anything is read."""
    kind = idx.encoder.input_kind
    if kind != "text":
        raise click.ClickException(f"--text / --from-file give text, but {index_dir} holds {kind}s "
                                   f"(encoder {idx.encoder.name}); create a text index with "
                                   "`fewshot init DIR --kind text`")


def query_inputs(files: tuple, texts: tuple, from_file: str | None, kind: str) -> list:
    """What classify/search/embed read: FILE... as given, plus text items; FILE... of a text
    encoder are ``.txt`` files (one example each)."""
    from fewshot.text_inputs import read_lines

    if not files and not wants_text(texts, from_file):
        raise click.UsageError("give FILE..., --text TEXT or --from-file FILE")
    if kind != "text":
        return list(files)
    items = [Path(f) for f in files] + _texts(texts)
    if from_file is not None:
        items += read_lines(from_file)
    return items


def add_pairs(label: str | None, texts: tuple, from_file: str | None, text_column: str,
              label_column: str) -> list[tuple[str, list]]:
    """(label, text items) pairs for ``add``: --label with --text / a one-per-line file, or a labelled table."""
    from fewshot.text_inputs import read_lines, read_table

    if label is not None:
        items = _texts(texts) + (read_lines(from_file) if from_file is not None else [])
        return [(label, items)]
    pairs: dict[str, list] = {}
    for lab, item in read_table(from_file, text_column, label_column):
        pairs.setdefault(lab, []).append(item)
    return list(pairs.items())


def check_add_usage(label: str | None, files: tuple, from_folder: str | None, texts: tuple,
                    from_file: str | None, skip_duplicates: bool) -> None:
    """The usage rules of ``add`` with text options (the file/folder rules stay in the command)."""
    if files or from_folder is not None:
        raise click.UsageError("--text / --from-file take no FILE arguments and no --from-folder")
    if texts and label is None:
        raise click.UsageError("--text needs --label LABEL")
    if from_file is not None and label is not None and from_file != "-" \
            and Path(from_file).suffix.lower() in (".csv", ".tsv", ".jsonl"):
        raise click.UsageError("a labelled table (.csv/.tsv/.jsonl) carries its labels; drop --label "
                               "(or give a .txt file of one example per line)")
    if skip_duplicates:
        raise click.UsageError("--skip-duplicates applies to files and folders, not to --text / --from-file")
