"""Fixtures of the FewShotIndex tests: small indexes of synthetic drawings, and a second encoder."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from fewshot.fewshot_index import FewShotIndex
from helpers import drawing, run


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, encoder) -> Path:
    """3 classes x 2 drawings, built once per module; tests work on copies (``ix``)."""
    root = tmp_path_factory.mktemp("bad")
    idx = FewShotIndex.create(root / "idx", encoder=encoder)
    for c, label in enumerate(["alpha", "beta", "gamma"]):
        idx.add(label, [drawing(10 * c), drawing(10 * c + 1)])
    idx.close()
    return root / "idx"


@pytest.fixture()
def ix(tmp_path, pristine) -> Path:
    dst = tmp_path / "idx"
    shutil.copytree(pristine, dst)
    return dst


@pytest.fixture(scope="module")
def seq_index(tmp_path_factory) -> tuple[Path, Path]:
    """An index of the shipped stroke encoder holding one stroke file, and that file."""
    pytest.importorskip("fewshot.sequences")
    from fewshot import encoders

    if "omniglot-strokes-gru" not in {s.name for s in encoders.available()}:
        pytest.skip("no sequence encoder registered")
    root = tmp_path_factory.mktemp("seq")
    good = root / "good.txt"
    good.write_text("START\n10,10,0\n20,15,1\n30,25,2\nBREAK\n12,40,3\n30,42,4\nBREAK\n")
    r = run("init", root / "sidx", "--encoder", "omniglot-strokes-gru")
    assert r.exit_code == 0, r.stderr
    r = run("add", root / "sidx", "--label", "stroke", good)
    assert r.exit_code == 0, r.stderr
    return root / "sidx", good


@pytest.fixture(scope="module")
def encoder_a(encoder):
    """The shipped encoder, the one a reindex starts from."""
    return encoder


@pytest.fixture(scope="module")
def encoder_b_file(tmp_path_factory, encoder_a) -> Path:
    """The shipped encoder with slightly perturbed weights: same dimension, another fingerprint."""
    from fewshot import encoders

    enc = encoders.load("omniglot-conv4")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in enc.module.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    enc.invalidate()
    assert enc.fingerprint != encoder_a.fingerprint and enc.dim == encoder_a.dim
    return enc.save(tmp_path_factory.mktemp("enc") / "other.pt")
