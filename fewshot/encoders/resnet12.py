"""ResNet-12: the residual backbone of TADAM and MetaOptNet (Oreshkin et al. 2018; Lee et al. 2019).

Four residual blocks; each is three conv3x3 -> BatchNorm layers (LeakyReLU 0.1 between
them), a 1x1 conv -> BatchNorm shortcut, the sum through LeakyReLU, then a 2x2 max-pool.
Channels double from block to block (``width`` x 1, 2, 4, 8), so the embedding, the
global average of the last map, has ``8 * width`` dimensions. On a 28x28 character the
maps are 28, 14, 7, 3 px, and the last pool leaves 1x1, as Conv-4 does.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]


class ResidualBlock(nn.Module):
    """Three conv3x3 layers plus a 1x1 shortcut, summed, then halved by max-pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        act = nn.LeakyReLU(0.1)
        self.body = nn.Sequential(*_conv_bn(cin, cout), act, *_conv_bn(cout, cout), act, *_conv_bn(cout, cout))
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, k=1))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """Four residual blocks of ``width`` x (1, 2, 4, 8) channels; output = global-average-pooled map."""

    def __init__(self, in_channels: int = 1, width: int = 64):
        super().__init__()
        chans = [in_channels] + [width * m for m in (1, 2, 4, 8)]
        self.features = nn.Sequential(*[ResidualBlock(a, b) for a, b in zip(chans, chans[1:])])
        self.out_dim = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))
