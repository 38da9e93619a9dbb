"""Conv-N backbones: the Prototypical Networks CNN (Snell et al., 2017) and wider kin.

Each block is conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool. Four blocks on a 28x28
image leave a 1x1 map, so the embedding is the flattened last map. Small, fast on
a CPU, and the standard backbone for Omniglot.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class ConvNet(nn.Module):
    """``depth`` conv blocks of ``width`` channels; output = global-average-pooled map.

    Global average pooling makes the output dimension ``width`` for any input size
    (at 28x28 with four blocks the map is already 1x1, so it changes nothing there).
    """

    def __init__(self, in_channels: int = 1, width: int = 64, depth: int = 4):
        super().__init__()
        chans = [in_channels] + [width] * depth
        self.features = nn.Sequential(*[conv_block(a, b) for a, b in zip(chans, chans[1:])])
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class SmallCNN(nn.Module):
    """The Keras CIFAR-10 tutorial CNN without its classifier: conv3x3 32 -> pool -> conv3x3 64 -> pool
    -> conv3x3 64 -> flatten -> dense ``dim`` (unpadded convolutions, ReLU, 2x2 max-pooling).

    The embedding is the dense layer's output; the tutorial's ReLU and 10-way layer
    belong to the training loss (:class:`fewshot.losses.ClassifierLoss`). Four
    top-level children, so fine-tuning can freeze the early ones block by block.
    """

    def __init__(self, in_channels: int = 3, size: int = 32, dim: int = 64):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ReLU(inplace=True))
        side = ((size - 2) // 2 - 2) // 2 - 2
        if side < 1:
            raise ValueError(f"input size {size} is too small for the small CNN (needs >= 18)")
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, dim))
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.block3(self.block2(self.block1(x))))
