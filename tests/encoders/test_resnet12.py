"""ResNet-12: the backbone, training it with the shared loop, exporting it, and the shipped omniglot-resnet12."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot import encoders
from fewshot.encoders import builtin
from fewshot.encoders.archs import build_arch
from fewshot.encoders.resnet12 import ResNet12
from fewshot.train.export import export_image_encoder
from fewshot.train.loop import TrainConfig
from fewshot.train.recipes import train_model
from train.test_devices import blobs


@pytest.mark.parametrize("size", [28, 42])
def test_resnet12_embeds_width_times_eight_at_any_size(size):
    model, dim = build_arch("resnet12", in_channels=1, width=8)
    assert isinstance(model, ResNet12) and dim == model.out_dim == 64
    model.eval()
    out = model(torch.randn(3, 1, size, size))
    assert out.shape == (3, 64) and torch.isfinite(out).all()
    # four residual blocks, each halving the map: 28 -> 14 -> 7 -> 3 -> 1
    assert len(model.features) == 4


def test_resnet12_trains_with_the_shared_loop_and_exports_an_encoder_file(tmp_path):
    data = blobs(size=16)  # four 2x2 pools need at least 16 px
    torch.manual_seed(0)
    model, _ = build_arch("resnet12", in_channels=1, width=4)
    cfg = TrainConfig(ways=6, shots=1, queries=3, steps=4, warmup=1, checkpoint_every=2, rotations=False)
    summary = train_model(model, data, tmp_path / "run", cfg, progress=False, log=lambda s: None)
    assert summary["step"] == 4 and (tmp_path / "run" / "best.pt").is_file()
    enc = export_image_encoder(tmp_path / "run" / "best.pt", tmp_path / "enc.pt", None, name="r12-test",
                               arch_kwargs={"in_channels": 1, "width": 4}, size=16, scale=summary["scale"],
                               arch="resnet12")
    back = encoders.load(str(tmp_path / "enc.pt"))
    assert (back.arch, back.dim, back.fingerprint) == ("resnet12", 32, enc.fingerprint)
    images = [im for im in data.items[:5]]
    np.testing.assert_allclose(back.embed(images), enc.embed(images), atol=1e-6)


def test_the_shipped_omniglot_resnet12_release():
    enc = encoders.load("omniglot-resnet12")
    assert enc.fingerprint == builtin.OMNIGLOT_RESNET12_FINGERPRINT == encoders.load("omniglot-resnet12@1").fingerprint
    assert (enc.arch, enc.arch_kwargs["width"], enc.dim, enc.tta_shift) == ("resnet12", 32, 256, 1)
    assert [(s.version, s.dim) for s in encoders.versions("omniglot-resnet12")] == [(1, 256)]
    ink = np.zeros((28, 28), dtype=np.uint8)
    ink[6:22, 13:15] = 255  # a vertical bar
    bar, other = enc.embed([ink, ink.T])
    assert bar.shape == (256,) and np.isfinite(bar).all()
    assert float(bar @ other) / (np.linalg.norm(bar) * np.linalg.norm(other)) < 0.99  # it sees the difference
