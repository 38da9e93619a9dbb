"""cifar-cnn: the shipped photo encoder loads safely and embeds; its architecture and cross-entropy head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def test_the_shipped_weights_load_weights_only_and_embed_photos():
    from fewshot import encoders as reg
    from fewshot.encoders.weights import packaged_path

    path = packaged_path("cifar_cnn.pt")
    assert path.stat().st_size < 5 * 2**20
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code in it
    assert payload["config"]["arch"] == "small_cnn" and payload["config"]["preprocess"]["channels"] == 3
    enc = reg.load("cifar-cnn")
    assert enc.dim == 64 and enc.input_kind == "image" and enc.registered_as == ("cifar-cnn", None)
    photos = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    big = np.random.default_rng(1).integers(0, 256, (1, 96, 64, 3), dtype=np.uint8)  # resized + cropped
    emb = enc.embed(list(photos) + list(big))
    assert emb.shape == (4, 64) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1])


def test_the_tutorial_architecture():
    from fewshot.encoders.archs import build_arch

    m, dim = build_arch("small_cnn")
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert dim == 64 and m(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    assert sum(p.numel() for p in m.parameters()) == 896 + 18496 + 36928 + 65600  # Keras: 122,570 with its head


def test_the_random_start_is_the_same_in_every_process():
    from fewshot.encoders.builtin import cifar_cnn

    assert cifar_cnn(weights="none").fingerprint == cifar_cnn(weights="none").fingerprint


def test_cross_entropy_maps_episode_labels_to_its_classes():
    from fewshot.losses import ClassifierLoss
    from fewshot.train.batches import Batch

    torch.manual_seed(0)
    loss = ClassifierLoss(4, ["a", "b", "c"])
    emb = torch.randn(4, 4)
    batch = Batch(emb, torch.tensor([0, 1, 0, 1]), 2, classes=["c", "a"])  # episode class 0 is "c"
    want = torch.nn.functional.cross_entropy(loss.head(emb), torch.tensor([2, 0, 2, 0]))
    assert torch.allclose(loss.batch_loss(emb, batch), want)
    with pytest.raises(ValueError, match="not one of"):
        loss.batch_loss(emb, Batch(emb, batch.labels, 2, classes=["c", "zebra"]))
