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


def test_the_mirror_warp_flips_about_half_the_photos_and_nothing_else():
    from fewshot.train.batches import image_warp, random_affine
    from fewshot.train.loop import TrainConfig

    x = torch.rand(64, 3, 8, 8)
    still = {"max_rotate": 0.0, "max_shear": 0.0, "scale_range": (1.0, 1.0), "max_translate": 0.0}
    same = random_affine(x, image_warp(TrainConfig(augment=still)), torch.Generator().manual_seed(0))
    assert torch.allclose(same, x, atol=1e-5)  # the identity warp, no mirror unless asked
    out = random_affine(x, image_warp(TrainConfig(augment={**still, "hflip": True})), torch.Generator().manual_seed(0))
    mirrored = torch.isclose(out, x.flip(-1), atol=1e-5).flatten(1).all(1)
    kept = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    assert bool((mirrored | kept).all()) and 16 < int(mirrored.sum()) < 48


def test_an_unknown_image_augmentation_is_an_input_error():
    from fewshot.errors import InputError
    from fewshot.train.batches import image_warp
    from fewshot.train.loop import TrainConfig

    with pytest.raises(InputError, match="unknown image augmentation vflip"):
        image_warp(TrainConfig(augment={"vflip": True}))


def test_mirror_averaging_makes_a_photo_and_its_mirror_embed_alike(tmp_path):
    from fewshot import encoders as reg

    enc = reg.load("cifar-cnn@1")  # version 2 averages with the mirror already
    photo = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    plain = enc.embed([photo, photo[:, ::-1].copy()])
    assert not np.allclose(plain[0], plain[1], atol=1e-4)
    before = enc.fingerprint
    enc.tta_flip = True
    enc.invalidate()
    both = enc.embed([photo, photo[:, ::-1].copy()])
    np.testing.assert_allclose(both[0], both[1], atol=1e-5)
    assert enc.fingerprint != before
    again = reg.from_file(enc.save(tmp_path / "flip.pt"))  # the setting travels in the file
    assert again.tta_flip and again.fingerprint == enc.fingerprint
    np.testing.assert_allclose(again.embed([photo]), both[:1], atol=1e-6)


def test_finetuning_mirrors_photos_but_never_characters():
    from fewshot import encoders as reg
    from fewshot.train.recipes import auto_augment

    assert auto_augment(reg.load("cifar-cnn"), True) == {"hflip": True}
    assert auto_augment(reg.load("cifar-cnn"), False) is False
    assert auto_augment(reg.load("cifar-cnn"), {"hflip": False}) == {"hflip": False}
    assert auto_augment(reg.load("omniglot-conv4"), True) is True  # a mirrored letter is another letter
