"""Architectures by name: each builder returns (module producing pooled features, feature dim).

Torchvision classifiers lose their last layer (``fc`` / ``classifier`` becomes
identity), so the output is the pooled penultimate layer.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from fewshot.encoders.conv import ConvNet, SmallCNN
from fewshot.encoders.resnet12 import ResNet12

ArchBuilder = Callable[..., tuple[nn.Module, int]]


def _small_cnn(in_channels: int = 3, size: int = 32, dim: int = 64) -> tuple[nn.Module, int]:
    m = SmallCNN(in_channels, size, dim)
    return m, m.out_dim


def _conv(in_channels: int = 1, width: int = 64, depth: int = 4) -> tuple[nn.Module, int]:
    m = ConvNet(in_channels, width, depth)
    return m, m.out_dim


def _resnet12(in_channels: int = 1, width: int = 64) -> tuple[nn.Module, int]:
    m = ResNet12(in_channels, width)
    return m, m.out_dim


def strip_head(model: nn.Module) -> tuple[nn.Module, int]:
    """Replace a torchvision classifier's last layer by identity; return (model, feature dim)."""
    if hasattr(model, "fc"):  # ResNets
        dim = model.fc.in_features
        model.fc = nn.Identity()
    elif hasattr(model, "classifier"):  # MobileNet, EfficientNet: features after pooling+flatten
        first = next(m for m in model.classifier.modules() if isinstance(m, nn.Linear))
        dim = first.in_features
        model.classifier = nn.Identity()
    else:
        raise ValueError(f"do not know how to strip the head of {type(model).__name__}")
    return model, dim


def torchvision_model(arch: str, weights=None) -> nn.Module:
    """The full torchvision classifier (with head), optionally with a weights enum."""
    import torchvision

    return getattr(torchvision.models, arch)(weights=weights)


def _tv(arch: str) -> ArchBuilder:
    def build() -> tuple[nn.Module, int]:
        return strip_head(torchvision_model(arch))
    return build


ARCHS: dict[str, ArchBuilder] = {
    "conv": _conv,
    "small_cnn": _small_cnn,
    "resnet12": _resnet12,
    "resnet18": _tv("resnet18"),
    "resnet50": _tv("resnet50"),
    "mobilenet_v3_small": _tv("mobilenet_v3_small"),
    "efficientnet_b0": _tv("efficientnet_b0"),
}


def build_arch(arch: str, **kwargs) -> tuple[nn.Module, int]:
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}")
    return ARCHS[arch](**kwargs)
