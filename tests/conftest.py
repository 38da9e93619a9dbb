"""Shared fixtures: the real Omniglot data from ../shared/data (skipped when absent), the shipped encoder.

Layout: one folder per package under test (``store/``: ``index/``; ``library/``: the index API,
``fewshot_index.py``, ``check.py``, inputs and limits; ``encoders/``, ``data/``, ``train/``,
``evaluation/``, ``cli/``, ``serve/``; text tests sit with the package each one tests). No folder has an ``__init__.py`` and none is named like a top-level
package (``index``, ``fewshot``): ``tests/`` is on ``sys.path`` and would shadow it. Plain helper
functions are in ``helpers.py`` (``from helpers import drawing``), never imported from a test module.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("FEWSHOT_NO_PROGRESS", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "omniglot"
IMAGES_ZIP = DATA / "images_background.zip"
STROKES_ZIP = DATA / "strokes_background_small1.zip"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real Omniglot data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def omniglot_zip() -> Path:
    return _need(IMAGES_ZIP)


@pytest.fixture(scope="session")
def strokes_zip() -> Path:
    return _need(STROKES_ZIP)


@pytest.fixture(scope="session")
def omniglot_alphabet(tmp_path_factory, omniglot_zip) -> Path:
    """The Korean alphabet (40 characters x 20 drawings), extracted once per session.

    Korean is one of the alphabets held out from the shipped encoder's training.
    """
    out = tmp_path_factory.mktemp("omniglot")
    with zipfile.ZipFile(omniglot_zip) as zf:
        members = [n for n in zf.namelist() if n.startswith("images_background/Korean/") and n.endswith(".png")]
        zf.extractall(out, members)
    return out / "images_background" / "Korean"


@pytest.fixture(scope="module")
def encoder():
    """The shipped image encoder (omniglot-conv4), loaded once per module."""
    from fewshot import encoders

    return encoders.load("omniglot-conv4")
