"""LeNet-5 variants of the paper's Table 1, with and without a push-pull first layer."""

from __future__ import annotations

import torch
from torch import nn

from models.pushpull import PushPull2d
from models.spec import LeNetVariant

__all__ = ["LeNet5"]


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 single-channel images.

    conv1 5x5 -> ReLU -> maxpool 2 -> conv2 5x5 -> ReLU -> maxpool 2 -> fc -> ReLU -> fc -> ReLU -> fc.
    With ``pushpull=(h, alpha)`` conv1 is a :class:`PushPull2d` with a bias, like the conv it replaces,
    so both twins have the same number of parameters.

    Shape: (N, 1, 28, 28) -> logits (N, num_classes).
    """

    def __init__(
        self,
        variant: LeNetVariant,
        num_classes: int = 10,
        pushpull: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        if pushpull is None:
            self.conv1: nn.Module = nn.Conv2d(1, variant.conv1, kernel_size=5)
        else:
            h, alpha = pushpull
            self.conv1 = PushPull2d(1, variant.conv1, kernel_size=5, bias=True, h=h, alpha=alpha)
        self.conv2 = nn.Conv2d(variant.conv1, variant.conv2, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        # 28 -> conv 24 -> pool 12 -> conv 8 -> pool 4
        self.fc1 = nn.Linear(variant.conv2 * 4 * 4, variant.fc[0])
        self.fc2 = nn.Linear(variant.fc[0], variant.fc[1])
        self.fc3 = nn.Linear(variant.fc[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)
