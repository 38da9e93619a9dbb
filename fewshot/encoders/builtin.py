"""The built-in image encoders: one short builder each."""
from __future__ import annotations

import torch

from fewshot.encoders.archs import strip_head, torchvision_model
from fewshot.encoders.base import TorchImageEncoder
from fewshot.encoders.preprocess import ImagePreprocess
from fewshot.encoders.ensemble import ImageEnsemble
from fewshot.encoders.registry import from_file, load, register
from fewshot.encoders.weights import (imagenet_preprocess_params, imagenet_state_dict, load_weights_file,
                                      packaged_path, seeded_init)
from fewshot.errors import EncoderError

TORCHVISION_DIMS = {"resnet18": 512, "resnet50": 2048, "mobilenet_v3_small": 576, "efficientnet_b0": 1280}


#: omniglot-conv4 versions 2 and 3 (MODEL_CARD.md): the fingerprints an index records.
OMNIGLOT_CONV4_V2_FINGERPRINT = "491ac859bb99b8a0"
OMNIGLOT_CONV4_V3_FINGERPRINT = "8c1e3e09fdbdc758"


def _omniglot_conv4_release(version: int, file: str, fingerprint: str, dim: int, description: str) -> None:
    """Register one released ``omniglot-conv4`` weights file (package data) as ``omniglot-conv4@version``."""
    @register("omniglot-conv4", input_kind="image", dim=dim, weights="package data (trained on Omniglot here)",
              description=description, version=version, fingerprint=fingerprint)
    def build(weights: str | None = None) -> TorchImageEncoder:
        return from_file(weights or packaged_path(file), name="omniglot-conv4")


_omniglot_conv4_release(1, "omniglot_conv4.pt", "a429de09f68c09d5", 64,
                        "version 1: Conv-4 prototypical-network CNN, 28x28 grayscale, 4,000 episodes on 25 alphabets")
_omniglot_conv4_release(2, "omniglot_conv4_v2.pt", OMNIGLOT_CONV4_V2_FINGERPRINT, 64,
                        "version 2: Conv-4 prototypical-network CNN, 28x28 grayscale, 16,000 episodes on all 30 "
                        "background alphabets")
_omniglot_conv4_release(3, "omniglot_conv4_v3.pt", OMNIGLOT_CONV4_V3_FINGERPRINT, 128,
                        "Conv-4 prototypical-network CNN, 128 channels, 28x28 grayscale, 16,000 episodes on all 30 "
                        "background alphabets (a member of the default, omniglot-ensemble)")

#: omniglot-resnet12 version 1 (MODEL_CARD.md): the fingerprint an index records.
OMNIGLOT_RESNET12_FINGERPRINT = "e2bc6014f765931d"


@register("omniglot-resnet12", input_kind="image", dim=256, weights="package data (trained on Omniglot here)",
          description="ResNet-12 prototypical-network CNN (32-64-128-256 channels), 28x28 grayscale, 12,000 "
                      "episodes on all 30 background alphabets (a member of the default, omniglot-ensemble)",
          version=1, fingerprint=OMNIGLOT_RESNET12_FINGERPRINT)
def omniglot_resnet12(weights: str | None = None) -> TorchImageEncoder:
    return from_file(weights or packaged_path("omniglot_resnet12.pt"), name="omniglot-resnet12")


#: omniglot-ensemble version 1 (MODEL_CARD.md): its members' fingerprints combined.
OMNIGLOT_ENSEMBLE_FINGERPRINT = "92d52cf31957d4f5"


@register("omniglot-ensemble", input_kind="image", dim=256 + 128,
          weights="package data (omniglot-resnet12@1 + omniglot-conv4@3)",
          description="the default image encoder: omniglot-resnet12 and omniglot-conv4 on the same image, "
                      "cosine = the mean of theirs",
          version=1, fingerprint=OMNIGLOT_ENSEMBLE_FINGERPRINT)
def omniglot_ensemble(weights: str | None = None) -> ImageEnsemble:
    """Version 1 pins its members' versions: a new release of either is a new ensemble version."""
    if weights is not None:
        raise EncoderError("omniglot-ensemble takes no weights; build ImageEnsemble(...) for other members")
    return ImageEnsemble("omniglot-ensemble", [load("omniglot-resnet12@1"), load("omniglot-conv4@3")])


#: What cifar-cnn sees: RGB at 32x32 (shorter side resized, centre crop), normalised by the
#: CIFAR-10 training photos' channel means and deviations.
CIFAR_PREPROCESS = ImagePreprocess(size=32, channels=3, resize="crop", invert="never", interpolation="box",
                                   mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


#: cifar-cnn version 2 (CIFAR_MODEL_CARD.md): the fingerprint an index records.
CIFAR_CNN_V2_FINGERPRINT = "b23fb046139fe6ff"


def random_cifar_encoder(arch: str = "small_cnn", arch_kwargs: dict | None = None, tta_flip: bool = False,
                         seed: str = "cifar-cnn") -> TorchImageEncoder:
    """A photo encoder with cifar-cnn's preprocessing from a seeded random start (the same in every
    process): the tutorial CNN by default, or another architecture to train (a lever)."""
    from fewshot.encoders.archs import build_arch

    with seeded_init(seed):
        module, dim = build_arch(arch, **(arch_kwargs or {}))
    return TorchImageEncoder("cifar-cnn", module, dim, CIFAR_PREPROCESS, arch, arch_kwargs, weights_source="none",
                             tta_flip=tta_flip)


@register("cifar-cnn", input_kind="image", dim=64, weights="package data (trained on 5 CIFAR-10 classes here)",
          description="version 1: the Keras CIFAR-10 tutorial CNN, 32x32 RGB photos, 10 epochs; "
                      "weights='none' is a random (seeded) one", version=1, fingerprint="bd7d052ecdde339e")
def cifar_cnn_v1(weights: str | None = None) -> TorchImageEncoder:
    if weights == "none":
        return random_cifar_encoder()
    return from_file(weights or packaged_path("cifar_cnn.pt"), name="cifar-cnn")


@register("cifar-cnn", input_kind="image", dim=64, weights="package data (trained on 5 CIFAR-10 classes here)",
          description="the Keras CIFAR-10 tutorial CNN, 32x32 RGB photos, 60 epochs with mirror images, each "
                      "photo embedded with its mirror; weights='none' is a random (seeded) one",
          version=2, fingerprint=CIFAR_CNN_V2_FINGERPRINT)
def cifar_cnn(weights: str | None = None) -> TorchImageEncoder:
    if weights == "none":
        return random_cifar_encoder(tta_flip=True)
    return from_file(weights or packaged_path("cifar_cnn_v2.pt"), name="cifar-cnn")


def _load_state_dict(model: torch.nn.Module, arch: str, source: str) -> torch.nn.Module:
    """A local state dict into ``model``: a full classifier's, or one without the head (then the head goes)."""
    sd = load_weights_file(source)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EncoderError(f"{source} is not a state dict (a mapping of names to tensors)")
    try:
        model.load_state_dict(sd)
    except RuntimeError:
        try:
            model, _ = strip_head(model)
            model.load_state_dict(sd)
        except RuntimeError as exc:
            raise EncoderError(f"{source} does not fit {arch}: {str(exc).splitlines()[0][:160]}") from None
    return model


def _torchvision(arch: str, weights: str | None) -> TorchImageEncoder:
    """ImageNet backbone: weights 'imagenet' (default), 'none' (random, seeded by the arch name) or a
    local state-dict path."""
    source = weights or "imagenet"
    with seeded_init(arch):  # 'none' must give the same weights (and fingerprint) in every process
        model = torchvision_model(arch)
    if source == "imagenet":
        model.load_state_dict(imagenet_state_dict(arch))
    elif source != "none":
        model = _load_state_dict(model, arch, source)
    if not isinstance(getattr(model, "fc", None) or getattr(model, "classifier", None), torch.nn.Identity):
        model, dim = strip_head(model)
    else:
        dim = TORCHVISION_DIMS[arch]
    pre = ImagePreprocess(channels=3, resize="crop", invert="never", **imagenet_preprocess_params(arch))
    return TorchImageEncoder(arch, model, dim, pre, arch, weights_source=source)


for _arch, _dim in TORCHVISION_DIMS.items():
    register(_arch, input_kind="image", dim=_dim, weights="torchvision ImageNet (downloaded once, cached)",
             description=f"torchvision {_arch}, pooled penultimate features")(
        lambda weights=None, _a=_arch: _torchvision(_a, weights))
