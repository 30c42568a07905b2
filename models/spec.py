"""What model to build: the typed, validated spec of the paper's zoo, and its naming rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_ALPHA", "DEFAULT_H", "LENET_VARIANTS", "LeNetVariant", "ModelSpec", "plain_name", "pushpull_name"]


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

# The paper's push-pull setting outside the sensitivity study (Sec. 4).
DEFAULT_H = 2.0
DEFAULT_ALPHA = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """What to build, validated on construction.

    Attributes:
        arch: ``"lenet"`` (28x28 grey images) or ``"wrn"`` (32x32 colour images).
        variant: LeNet configuration ``"A"``..``"D"`` (paper Table 1); LeNet only.
        depth: WRN depth L = 6n + 4; WRN only.
        width: WRN widening factor W >= 1; WRN only.
        pushpull: replace the first convolution with a push-pull layer.
        h: upsampling factor of the pull kernel (>= 1); push-pull only, default 2.
        alpha: inhibition strength (>= 0); push-pull only, default 1.
        num_classes: outputs of the classifier.
        dropout: WRN dropout probability in [0, 1).

    Fields that do not apply to the architecture must stay None, so that two specs that build the same
    network compare (and hash) equal. ``h`` and ``alpha`` are filled with the paper's defaults when
    ``pushpull`` is set and left None otherwise.
    """

    arch: Literal["lenet", "wrn"]
    variant: str | None = None
    depth: int | None = None
    width: int | None = None
    pushpull: bool = False
    h: float | None = None
    alpha: float | None = None
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.arch == "lenet":
            if self.variant not in LENET_VARIANTS:
                raise ValueError(f"unknown LeNet variant {self.variant!r}: expected one of {', '.join(LENET_VARIANTS)}")
            if self.depth is not None or self.width is not None:
                raise ValueError("depth and width apply to arch='wrn' only")
            if self.dropout != 0:
                raise ValueError("dropout applies to arch='wrn' only")
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
            raise ValueError(f"unknown arch {self.arch!r}: expected 'lenet' or 'wrn'")

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

    @property
    def name(self) -> str:
        """The paper's name for the model: ``A``..``D``, ``PA``..``PD``, ``WRN-L-W``, ``WRN-L-W-PP``."""
        plain = str(self.variant) if self.arch == "lenet" else f"WRN-{self.depth}-{self.width}"
        return pushpull_name(plain) if self.pushpull else plain

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input image."""
        return (1, 28, 28) if self.arch == "lenet" else (3, 32, 32)


def pushpull_name(plain: str) -> str:
    """The name of a model with the push-pull layer, from its plain twin's: a LeNet variant gets a ``P``
    before it (``A`` -> ``PA``), a WRN ``-PP`` after it (``WRN-28-10`` -> ``WRN-28-10-PP``)."""
    return f"P{plain}" if plain in LENET_VARIANTS else f"{plain}-PP"


def plain_name(name: str) -> str:
    """The name of a model's plain twin: the inverse of :func:`pushpull_name`; a plain name stays."""
    if name.endswith("-PP"):
        return name.removesuffix("-PP")
    return name[1:] if name.startswith("P") and name[1:] in LENET_VARIANTS else name
