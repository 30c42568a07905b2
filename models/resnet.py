"""torchvision's ResNet-18/34/50 with a stem for small images and, optionally, a push-pull first layer.

The network is ``torchvision.models.resnet18/34/50(weights=None, num_classes=...)`` (randomly initialised,
torchvision's own initialisation) with its first layers chosen by ``stem``:

- ``"imagenet"``: torchvision's stem, a 7x7 stride-2 convolution (padding 3) and a 3x3 stride-2 max
  pooling; the convolution is remade for ``in_channels`` when that is not 3.
- ``"cifar"``: the usual adaptation to 32x32 (and 28x28) images, a 3x3 stride-1 convolution (padding 1)
  and no max pooling, so that the first stage sees the full resolution.

With ``pushpull=(h, alpha)`` the stem's convolution ``conv1`` is a :class:`PushPull2d` of the same
shape (in_channels -> 64, same kernel, stride and padding, no bias). Its pull kernel is derived from the
push kernel and alpha is a fixed float, so the push-pull network has exactly the parameters of its plain
twin (``conv1.weight`` becomes ``conv1.push.weight``).
"""

from __future__ import annotations

import torchvision.models
from torch import nn

from models.pushpull import PushPull2d

__all__ = ["torchvision_resnet"]

_CONSTRUCTORS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}

# (kernel, stride, padding) of conv1 for each stem; 64 output channels in every ResNet.
_STEM_CONV = {"cifar": (3, 1, 1), "imagenet": (7, 2, 3)}
_STEM_CHANNELS = 64


def torchvision_resnet(
    depth: int,
    num_classes: int,
    in_channels: int,
    stem: str,
    pushpull: tuple[float, float] | None = None,
) -> nn.Module:
    """torchvision's ResNet-``depth`` with the given stem, freshly initialised.

    Args:
        depth: 18, 34 or 50.
        num_classes: outputs of the classifier (``fc``).
        in_channels: channels of the input images.
        stem: ``"cifar"`` (3x3 stride-1 conv1, no max pooling) or ``"imagenet"`` (torchvision's 7x7
            stride-2 conv1 and max pooling).
        pushpull: ``(h, alpha)`` to make conv1 a push-pull layer, or None for a plain convolution.

    Shape: (N, in_channels, H, W) -> logits (N, num_classes), for any H, W (global average pooling ends
    the network): the cifar stem leaves 4x4 maps before the pooling from 32x32 or 28x28 images, the
    imagenet stem divides the size by 32 (7x7 from 224x224).
    """
    if depth not in _CONSTRUCTORS:
        raise ValueError(f"ResNet depth must be one of {', '.join(map(str, _CONSTRUCTORS))}, got {depth!r}")
    if stem not in _STEM_CONV:
        raise ValueError(f"unknown ResNet stem {stem!r}: expected one of {', '.join(_STEM_CONV)}")
    model = _CONSTRUCTORS[depth](weights=None, num_classes=num_classes)
    kernel, stride, padding = _STEM_CONV[stem]
    if stem == "cifar":
        model.maxpool = nn.Identity()

    if pushpull is not None:
        h, alpha = pushpull
        conv1: nn.Module = PushPull2d(
            in_channels, _STEM_CHANNELS, kernel, stride=stride, padding=padding, bias=False, h=h, alpha=alpha
        )
        weight = conv1.push.weight
    elif stem == "cifar" or in_channels != 3:
        conv1 = nn.Conv2d(in_channels, _STEM_CHANNELS, kernel, stride=stride, padding=padding, bias=False)
        weight = conv1.weight
    else:
        return model  # torchvision's own conv1, as torchvision initialised it
    # torchvision's initialisation of every convolution, given to the one that replaces its conv1.
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = conv1
    return model
