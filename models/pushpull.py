"""The push-pull layer of Strisciuglio, Lopez-Antequera and Petkov (paper Sec. 3.1).

A drop-in replacement for ``nn.Conv2d`` whose response is

    P(I) = ReLU(k * I) - alpha * ReLU(-k_up * I)

where ``k`` is the learned (push) kernel and ``k_up`` the pull kernel: ``k`` resized by the factor ``h``.
It follows the authors' public implementation (``PPmodule2d``) in kernel sizes, paddings, the negated bias
of the pull branch, gradients through the pull kernel and the state-dict keys (``push.weight``,
``push.bias``, ``alpha``), so their checkpoints load into it. It is not identical in three places:

- a trained alpha (``train_alpha=True``) starts at the given ``alpha`` in every channel
  (``torch.full``, no random draw), whereas ``PPmodule2d`` ignores the given alpha and draws each
  channel's from U(0.5 - r, 0.5 + r), r = 1 / sqrt(in_channels * out_channels), with the global RNG, so
  under the same seed the initial weights of the layers built after it differ too;
- with ``dilation > 1`` the pull padding is scaled by the dilation so that the maps align (the
  reference's differ in size and its forward fails);
- an even kernel size with ``h > 1`` is rejected in the constructor (in both, the pull kernel is odd,
  so its map is one pixel smaller than the push map and the forward would fail).
"""

import math
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PushPull2d", "pull_kernel_size"]


def pull_kernel_size(push_size: int, h: float) -> int:
    """Side of the pull kernel for a square push kernel of side ``push_size`` upsampled by ``h``.

    ``floor(push_size * h)``, made odd by adding 1 when even, so that push and pull kernels share a
    centre; ``h == 1`` keeps the push size. 5x5 at h=2 gives 11, 3x3 at h=2 gives 7, 3x3 at h=1.5 gives 5.
    """
    if h == 1:
        return push_size
    size = math.floor(push_size * h)
    return size + 1 if size % 2 == 0 else size


class PushPull2d(nn.Module):
    """Push-pull convolution: ``ReLU(conv(x, k)) - alpha * ReLU(conv(x, -k_up))``.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: side of the square push kernel (an int, or a pair of equal ints).
        stride, padding, dilation, groups: as for ``nn.Conv2d`` (integers; shared by both branches).
        bias: learn a bias for the push branch; the pull branch then uses the negated bias.
        h: upsampling factor of the pull kernel relative to the push kernel, >= 1.
        alpha: inhibition strength, >= 0. A fixed float unless ``train_alpha``.
        train_alpha: make alpha a learned per-channel parameter of shape (1, out_channels, 1, 1),
            initialised to ``alpha`` (the reference draws it at random instead: see the module
            docstring) and used as ``ReLU(alpha)`` so that it stays >= 0.

    Shape:
        input (N, in_channels, H, W) -> output (N, out_channels, H_out, W_out) with H_out, W_out as for
        ``nn.Conv2d`` with the same arguments: the pull padding ``dilation * (p//2 - k//2) + padding``
        aligns the pull map with the push map.

    With a fixed alpha the layer has exactly the parameters of the ``nn.Conv2d`` it replaces.
    """

    train_alpha: Final[bool]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        h: float = 2.0,
        alpha: float = 1.0,
        train_alpha: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(kernel_size, tuple):
            if len(kernel_size) != 2 or kernel_size[0] != kernel_size[1]:
                raise ValueError(f"PushPull2d needs a square kernel, got kernel_size={kernel_size}")
            kernel_size = kernel_size[0]
        for name, value in (("stride", stride), ("padding", padding), ("dilation", dilation)):
            if not isinstance(value, int):
                raise ValueError(f"PushPull2d needs an integer {name}, got {name}={value!r}")
        if not h >= 1:
            raise ValueError(f"PushPull2d needs h >= 1 (the pull kernel is at least the push kernel), got h={h}")
        if kernel_size % 2 == 0 and h > 1:
            raise ValueError(
                f"PushPull2d needs an odd kernel_size when h > 1 (push and pull kernels share a centre), "
                f"got kernel_size={kernel_size}"
            )
        if not alpha >= 0:
            raise ValueError(f"PushPull2d needs alpha >= 0 (an inhibition strength), got alpha={alpha}")

        self.push = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias)
        self.h = float(h)
        self.pull_size = pull_kernel_size(kernel_size, h)
        # p//2 - k//2 + padding, as in the reference; scaled by the dilation so that the maps still align
        # when it is > 1 (where the reference's maps differ in size and its forward fails).
        self.pull_padding = dilation * (self.pull_size // 2 - kernel_size // 2) + padding
        self.train_alpha = train_alpha
        if train_alpha:
            self.alpha = nn.Parameter(torch.full((1, out_channels, 1, 1), float(alpha)))
        else:
            self.alpha = float(alpha)

    @property
    def pull_weight(self) -> torch.Tensor:
        """The pull kernel k_up, (out_channels, in_channels / groups, p, p), derived from the push kernel.

        Bilinear resize with ``align_corners=True``; gradients flow through it into the push weights.
        """
        weight = self.push.weight
        if self.pull_size == weight.shape[-1]:
            return weight
        return F.interpolate(weight, size=(self.pull_size, self.pull_size), mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.push.bias
        pull_bias = None if bias is None else -bias
        push = F.relu(self.push(x))
        pull = F.relu(
            F.conv2d(
                x,
                -self.pull_weight,
                pull_bias,
                self.push.stride,
                self.pull_padding,
                self.push.dilation,
                self.push.groups,
            )
        )
        if self.train_alpha:
            return push - F.relu(self.alpha) * pull
        return push - self.alpha * pull

    def extra_repr(self) -> str:
        alpha = "trained" if self.train_alpha else f"{self.alpha:g}"
        return f"h={self.h:g}, alpha={alpha}, pull_kernel_size={self.pull_size}, pull_padding={self.pull_padding}"
