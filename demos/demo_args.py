"""Command-line pieces the demo scripts share (``python demos/NAME.py`` puts this folder on sys.path)."""
from __future__ import annotations

import argparse


def demo_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose --help shows the demo's docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_ints(p: argparse.ArgumentParser, **defaults: int) -> None:
    """One ``--name`` option of type int per keyword, in the order given (``_`` in a name becomes ``-``)."""
    for name, default in defaults.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, default=default)
