"""The paper's model zoo: one typed spec, one builder.

>>> model = build_model(ModelSpec(arch="wrn", depth=28, width=10, pushpull=True, num_classes=100))
>>> ModelSpec(arch="lenet", variant="A", pushpull=True).name
'PA'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from models.lenet import LENET_VARIANTS, LeNet5, LeNetVariant
from models.pushpull import PushPull2d, pull_kernel_size
from models.wrn import WideResNet

__all__ = [
    "LENET_VARIANTS",
    "LeNet5",
    "LeNetVariant",
    "ModelSpec",
    "PushPull2d",
    "WideResNet",
    "build_model",
    "pull_kernel_size",
]

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
        if self.arch == "lenet":
            return f"P{self.variant}" if self.pushpull else str(self.variant)
        return f"WRN-{self.depth}-{self.width}" + ("-PP" if self.pushpull else "")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input image."""
        return (1, 28, 28) if self.arch == "lenet" else (3, 32, 32)


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model for ``spec`` (on the CPU; move it with ``.to(device)``)."""
    pushpull = (spec.h, spec.alpha) if spec.pushpull else None
    if spec.arch == "lenet":
        return LeNet5(LENET_VARIANTS[spec.variant], num_classes=spec.num_classes, pushpull=pushpull)
    return WideResNet(spec.depth, spec.width, num_classes=spec.num_classes, dropout=spec.dropout, pushpull=pushpull)
