"""What model to build: the typed, validated spec of the paper's zoo, and its naming rule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_H",
    "LENET_VARIANTS",
    "RESNET_DEPTHS",
    "RESNET_STEMS",
    "LeNetVariant",
    "ModelSpec",
    "plain_name",
    "pushpull_name",
]


@dataclass(frozen=True)
class LeNetVariant:
    """Layer sizes of one LeNet-5 configuration: channels of conv1 and conv2, hidden fc widths."""

    conv1: int
    conv2: int
    fc: tuple[int, int]


# Paper Table 1. The push-pull twins PA..PD share these sizes and swap conv1 for a push-pull layer.
LENET_VARIANTS: dict[str, LeNetVariant] = {
    "A": LeNetVariant(conv1=6, conv2=16, fc=(128, 64)),
    "B": LeNetVariant(conv1=6, conv2=8, fc=(64, 32)),
    "C": LeNetVariant(conv1=4, conv2=16, fc=(128, 64)),
    "D": LeNetVariant(conv1=4, conv2=8, fc=(64, 32)),
}

# torchvision's ResNets that the zoo builds (basic blocks for 18 and 34, bottlenecks for 50).
RESNET_DEPTHS = (18, 34, 50)
# The first layers of a ResNet: "cifar" a 3x3 stride-1 convolution and no max pooling (for 28x28 and 32x32
# images), "imagenet" torchvision's 7x7 stride-2 convolution and 3x3 stride-2 max pooling.
RESNET_STEMS = ("cifar", "imagenet")

# The paper's push-pull setting outside the sensitivity study (Sec. 4).
DEFAULT_H = 2.0
DEFAULT_ALPHA = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """What to build, validated on construction.

    Attributes:
        arch: ``"lenet"`` (28x28 grey images), ``"wrn"`` (32x32 colour images) or ``"resnet"``
            (torchvision's ResNet, images of ``in_channels`` channels).
        variant: LeNet configuration ``"A"``..``"D"`` (paper Table 1); LeNet only.
        depth: WRN depth L = 6n + 4, or ResNet depth 18, 34 or 50; WRN and ResNet only.
        width: WRN widening factor W >= 1; WRN only.
        pushpull: replace the first convolution with a push-pull layer.
        h: upsampling factor of the pull kernel (>= 1); push-pull only, default 2.
        alpha: inhibition strength (>= 0); push-pull only, default 1.
        num_classes: outputs of the classifier.
        dropout: WRN dropout probability in [0, 1).
        in_channels: channels of the input images (the data set's); ResNet only, where it is required.
            LeNet takes 1 channel and a WRN 3 by construction.
        stem: ``"cifar"`` (3x3 stride-1 convolution, no max pooling; the default) or ``"imagenet"``
            (torchvision's 7x7 stride-2 convolution and max pooling); ResNet only.

    Fields that do not apply to the architecture must stay None, so that two specs that build the same
    network compare (and hash) equal. ``h`` and ``alpha`` are filled with the paper's defaults when
    ``pushpull`` is set and left None otherwise; ``stem`` is filled with ``"cifar"`` for a ResNet.
    """

    arch: Literal["lenet", "wrn", "resnet"]
    variant: str | None = None
    depth: int | None = None
    width: int | None = None
    pushpull: bool = False
    h: float | None = None
    alpha: float | None = None
    num_classes: int = 10
    dropout: float = 0.0
    # Appended after the paper's fields, so that positional construction keeps its meaning.
    in_channels: int | None = None
    stem: Literal["cifar", "imagenet"] | None = None

    def __post_init__(self) -> None:
        if self.arch == "lenet":
            if self.variant not in LENET_VARIANTS:
                raise ValueError(f"unknown LeNet variant {self.variant!r}: expected one of {', '.join(LENET_VARIANTS)}")
            if self.depth is not None or self.width is not None:
                raise ValueError("depth and width apply to arch='wrn' only (depth to arch='resnet' too)")
            if self.dropout != 0:
                raise ValueError("dropout applies to arch='wrn' only")
        elif self.arch == "resnet":
            if self.variant is not None:
                raise ValueError("variant applies to arch='lenet' only")
            if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth not in RESNET_DEPTHS:
                raise ValueError(
                    f"ResNet depth must be one of {', '.join(map(str, RESNET_DEPTHS))}, got {self.depth!r}"
                )
            if self.width is not None:
                raise ValueError("width applies to arch='wrn' only")
            if self.dropout != 0:
                raise ValueError("dropout applies to arch='wrn' only")
            if self.in_channels is None:
                raise ValueError("arch='resnet' needs in_channels (the channels of the data set's images)")
            if not isinstance(self.in_channels, int) or isinstance(self.in_channels, bool) or self.in_channels < 1:
                raise ValueError(f"in_channels must be an integer >= 1, got {self.in_channels!r}")
            stem = "cifar" if self.stem is None else self.stem
            if stem not in RESNET_STEMS:
                raise ValueError(f"unknown ResNet stem {stem!r}: expected one of {', '.join(RESNET_STEMS)}")
            object.__setattr__(self, "stem", stem)
        elif self.arch == "wrn":
            if self.variant is not None:
                raise ValueError("variant applies to arch='lenet' only")
            if not isinstance(self.depth, int) or self.depth < 10 or (self.depth - 4) % 6 != 0:
                raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {self.depth}")
            if not isinstance(self.width, int) or self.width < 1:
                raise ValueError(f"WRN width must be an integer >= 1, got {self.width}")
            if not 0 <= self.dropout < 1:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        else:
            raise ValueError(f"unknown arch {self.arch!r}: expected 'lenet', 'wrn' or 'resnet'")
        if self.arch != "resnet" and (self.in_channels is not None or self.stem is not None):
            raise ValueError("in_channels and stem apply to arch='resnet' only")

        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {self.num_classes}")

        if self.pushpull:
            h = DEFAULT_H if self.h is None else float(self.h)
            alpha = DEFAULT_ALPHA if self.alpha is None else float(self.alpha)
            if not h >= 1:
                raise ValueError(f"push-pull h must be >= 1, got {h}")
            if not alpha >= 0:
                raise ValueError(f"push-pull alpha must be >= 0, got {alpha}")
            object.__setattr__(self, "h", h)
            object.__setattr__(self, "alpha", alpha)
        elif self.h is not None or self.alpha is not None:
            raise ValueError("h and alpha apply only with pushpull=True")

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that identify the model (what a trial key hashes): all of them, less ``in_channels``
        and ``stem`` where they are None (LeNet, WRN). Those two came after the first sweeps ran, so leaving
        them out keeps the keys of every LeNet and WRN spec what they were; a ResNet always has both."""
        fields = dataclasses.asdict(self)
        for name in ("in_channels", "stem"):
            if fields[name] is None:
                del fields[name]
        return fields

    @property
    def name(self) -> str:
        """The paper's name for the model: ``A``..``D``, ``PA``..``PD``, ``WRN-L-W``, ``WRN-L-W-PP``, and
        ``ResNet-D``, ``ResNet-D-PP`` for a ResNet. A ResNet's name shows neither its stem nor its input
        channels (the data set fixes those in practice); trial keys tell such specs apart."""
        if self.arch == "lenet":
            plain = str(self.variant)
        elif self.arch == "wrn":
            plain = f"WRN-{self.depth}-{self.width}"
        else:
            plain = f"ResNet-{self.depth}"
        return pushpull_name(plain) if self.pushpull else plain

    @property
    def channels(self) -> int:
        """Channels of the input images: 1 for LeNet, 3 for a WRN, ``in_channels`` for a ResNet."""
        if self.arch == "resnet":
            assert self.in_channels is not None  # validated in __post_init__
            return self.in_channels
        return 1 if self.arch == "lenet" else 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input image: (1, 28, 28) for LeNet, (3, 32, 32) for a WRN.

        For a ResNet, (in_channels, 32, 32): the CIFAR size, one that it takes, not the only one. A ResNet
        ends in global average pooling, so it takes any image size: the ``"cifar"`` stem keeps the full
        resolution up to the first stage (32x32 and 28x28 images end in 4x4 maps), the ``"imagenet"`` stem
        divides it by 32 (224x224 ends in 7x7, 32x32 already in 1x1).
        """
        if self.arch == "lenet":
            return (1, 28, 28)
        return (self.channels, 32, 32)


def pushpull_name(plain: str) -> str:
    """The name of a model with the push-pull layer, from its plain twin's: a LeNet variant gets a ``P``
    before it (``A`` -> ``PA``), a WRN or ResNet ``-PP`` after it (``WRN-28-10`` -> ``WRN-28-10-PP``,
    ``ResNet-18`` -> ``ResNet-18-PP``)."""
    return f"P{plain}" if plain in LENET_VARIANTS else f"{plain}-PP"


def plain_name(name: str) -> str:
    """The name of a model's plain twin: the inverse of :func:`pushpull_name`; a plain name stays."""
    if name.endswith("-PP"):
        return name.removesuffix("-PP")
    return name[1:] if name.startswith("P") and name[1:] in LENET_VARIANTS else name
