"""Wide residual networks WRN-L-W for 32x32 images (Zagoruyko & Komodakis, BMVC 2016).

Pre-activation basic blocks (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3), three groups of (L-4)/6 blocks
with widths 16W, 32W, 64W after a 16-channel 3x3 stem, then BN-ReLU, global average pooling and a linear
classifier. The stem can be a :class:`PushPull2d` (the paper's WRN-L-W-PP), which adds no parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.pushpull import PushPull2d

__all__ = ["WideResNet"]


class _PreActBlock(nn.Module):
    """Pre-activation basic block; a 1x1 projection on the shortcut when the shape changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_planes == out_planes and stride == 1
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )
        self.projects = not isinstance(self.shortcut, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = F.relu(self.bn1(x))
        # A projected shortcut starts from the pre-activation, as in the reference WRN code.
        residual = self.shortcut(preact) if self.projects else x
        out = self.conv1(preact)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-width for CIFAR.

    Args:
        depth: L, of the form 6n+4 (n blocks per group).
        width: widening factor W >= 1.
        num_classes: outputs of the classifier.
        dropout: dropout probability between the two convolutions of each block.
        pushpull: ``(h, alpha)`` to make the stem a push-pull layer, or None for a plain convolution.

    Shape: (N, 3, 32, 32) -> logits (N, num_classes).
    """

    def __init__(
        self,
        depth: int,
        width: int,
        num_classes: int = 10,
        dropout: float = 0.0,
        pushpull: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        blocks_per_group = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        if pushpull is None:
            self.stem: nn.Module = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        else:
            h, alpha = pushpull
            self.stem = PushPull2d(3, widths[0], 3, padding=1, bias=False, h=h, alpha=alpha)
        groups = []
        for group, stride in enumerate((1, 2, 2)):
            in_planes, out_planes = widths[group], widths[group + 1]
            blocks = [_PreActBlock(in_planes, out_planes, stride, dropout)]
            blocks += [_PreActBlock(out_planes, out_planes, 1, dropout) for _ in range(blocks_per_group - 1)]
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.stem(x))
        x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)
