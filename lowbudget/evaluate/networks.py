"""A ResNet-18-style classifier, defined here so no torchvision is needed.

The layout of He et al. (2016): a 7x7 stride-2 stem and max-pool, four stages of two basic
blocks (64, 128, 256, 512 channels; stride 2 from the second stage), global average pooling
and a linear head. ``width`` scales every stage's channels (64 = the standard network).
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 2, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        chans = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, c_in = [], width
        for i, c in enumerate(chans):
            stages.append(nn.Sequential(BasicBlock(c_in, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(chans[-1], num_classes)
        self.num_features = chans[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 8 * width)
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, num_classes) logits
        return self.fc(self.features(x))
