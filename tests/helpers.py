"""Helpers shared by the test modules: synthetic images, CLI runners, digests, child processes.

Plain functions (the shared fixtures are in ``conftest.py`` files). ``tests/`` is on
``sys.path`` through ``pythonpath`` in pyproject.toml, so a test module says
``from helpers import drawing``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


def _default_image_dim() -> int:
    from fewshot.encoders.registry import DEFAULTS, versions

    return versions(DEFAULTS["image"])[-1].dim


#: The embedding size of the default image encoder (the newest omniglot-conv4 release).
DEFAULT_DIM = _default_image_dim()


# --------------------------------------------------------------------------- images


def drawing(seed: int, size: int = 40) -> Image.Image:
    """A random pen drawing (ink on white): distinct content per seed."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 5))):
        pts = [tuple(int(v) for v in rng.integers(4, size - 4, 2)) for _ in range(int(rng.integers(2, 5)))]
        d.line(pts, fill=0, width=int(rng.integers(2, 4)))
    return im


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    """A small RGB JPEG photo: a colour wash per hundred seeds (a class) with noise (no two alike)."""
    import io

    rng = np.random.default_rng(seed)
    base = np.array([(seed // 100) * 80 % 256, 120, 255 - (seed // 100) * 60 % 256], dtype=np.float32)
    a = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def drawing_files(root: Path, seeds) -> list[Path]:
    """``root/<seed>.png`` for each seed: the drawing of that seed."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for s in seeds:
        p = root / f"{s}.png"
        drawing(s).save(p)
        out.append(p)
    return out


def glyph(kind: int, seed: int, size: int = 56, *, one_jitter: bool = False) -> Image.Image:
    """Synthetic ink drawings: a few distinct shapes with a little jitter per example.

    The jitter is drawn afresh for every use, or once per image with ``one_jitter``.
    """
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 255, np.uint8)
    if one_jitter:
        fixed = int(rng.integers(-2, 3))
        j = lambda: fixed  # noqa: E731
    else:
        j = lambda: int(rng.integers(-2, 3))  # noqa: E731
    if kind == 0:
        img[size // 2 - 3 + j():size // 2 + 3, 8:size - 8] = 0  # horizontal bar
    elif kind == 1:
        img[8:size - 8, size // 2 - 3 + j():size // 2 + 3] = 0  # vertical bar
    elif kind == 2:
        for i in range(8, size - 8):
            img[i, max(0, i - 3 + j()):i + 3] = 0  # diagonal
    else:
        img[10:20 + j(), 10:size - 10] = 0
        img[size - 20:size - 10, 10:size - 10] = 0  # two bars
    return Image.fromarray(img)


def glyph_folders(root: Path, *, one_jitter: bool = False) -> dict[str, list[Path]]:
    """``root/<shape>/<shape><k>.png``: 3 glyphs of each of the 4 shapes."""
    out: dict[str, list[Path]] = {}
    for kind, name in enumerate(["hbar", "vbar", "diag", "two"]):
        d = root / name
        d.mkdir(parents=True)
        out[name] = []
        for s in range(3):
            p = d / f"{name}{s}.png"
            glyph(kind, 100 * kind + s, one_jitter=one_jitter).save(p)
            out[name].append(p)
    return out


# --------------------------------------------------------------------------- files


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones too); equal digests = byte-for-byte unchanged."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- the CLI in process


def run(*args):
    """``fewshot ARGS`` through click's runner (stderr apart from stdout; exceptions propagate)."""
    from fewshot.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    r = run(*args)
    assert r.exit_code == 0, r.output + r.stderr
    return r


def invoke(cli, args):
    """``cli ARGS`` through click's runner without progress bars (exceptions are caught)."""
    return CliRunner().invoke(cli, args, env={"FEWSHOT_NO_PROGRESS": "1"})


def cli_with(command) -> Iterator:
    """For a fixture: the ``fewshot`` group with ``command`` registered; unregistered after if it was not there."""
    from fewshot.cli import cli as group

    added = command.name not in group.commands
    if added:
        group.add_command(command)
    yield group
    if added:
        group.commands.pop(command.name, None)


def assert_one_line_error(r, code: int = 1) -> str:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


def fails_cleanly(index_dir: Path, *args, match: str, code: int = 1) -> str:
    """Run the CLI; assert one error line matching ``match`` and ``index_dir`` unchanged."""
    before = tree_digest(index_dir)
    r = run(*args)
    msg = assert_one_line_error(r, code)
    if args[0] != "check":  # check prints its report on stdout, then the error line
        assert r.stdout == ""
    assert match.lower() in msg.lower(), msg
    assert tree_digest(index_dir) == before, "the index changed although the command failed"
    return msg


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    return text


# --------------------------------------------------------------------------- encoders


def perturbed_copy(encoder, path: Path) -> None:
    """Rewrite the encoder file ``path`` with its first weights scaled by 1.01: another fingerprint."""
    import torch

    from fewshot import encoders

    other = encoders.from_file(path)
    with torch.no_grad():
        next(other.module.parameters()).mul_(1.01)
    other.invalidate()
    assert other.fingerprint != encoder.fingerprint
    other.save(path)


# --------------------------------------------------------------------------- child processes


def fewshot_exe() -> str:
    exe = Path(sys.executable).with_name("fewshot")
    if not exe.exists():
        pytest.skip("the fewshot console script is not installed (pip install -e .)")
    return str(exe)


def child_env() -> dict[str, str]:
    return {**os.environ, "FEWSHOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


#: Indexes written by earlier releases, with what they answered then (tests/fixtures/indexes/make_old_*.py).
OLD_INDEXES = REPO / "tests" / "fixtures" / "indexes"


def old_index(tmp_path: Path, name: str) -> Path:
    """A scratch copy of the fixture index ``tests/fixtures/indexes/<name>`` (built by an earlier release)."""
    import shutil

    dst = tmp_path / name
    shutil.copytree(OLD_INDEXES / name, dst)
    return dst


def old_answers(name: str) -> dict:
    """What the release that built fixture index ``name`` answered (``answers_<name>.json``)."""
    return json.loads((OLD_INDEXES / f"answers_{name}.json").read_text())[name]


def assert_upgrades(idx: Path, encoder: str, then_info: dict, new_fingerprint: str, count: int) -> None:
    """``idx`` (a version 1 index) says version 2 is out and how to upgrade, still matches what that
    release's ``info`` printed, and ``fewshot reindex IDX --encoder NAME`` moves it to version 2."""
    import json

    info = json.loads(ok("info", idx, "--json").stdout)
    assert (info["encoder_version"], info["encoder_newest_version"], info["encoder_is_newest"]) == (1, 2, False)
    assert info["upgrade"] == f"fewshot reindex {idx} --encoder {encoder}"
    for key in ("encoder", "fingerprint", "dim", "count", "labels"):
        assert info[key] == then_info[key], key
    out = json.loads(ok("reindex", idx, "--encoder", encoder, "--json").stdout)
    assert out["fingerprint"] == new_fingerprint and out["reembedded"] == count
    info = json.loads(ok("info", idx, "--json").stdout)
    assert (info["encoder_version"], info["encoder_is_newest"], info["upgrade"]) == (2, True, None)
