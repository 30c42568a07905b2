"""The paper's model zoo: one typed spec, one builder.

The architectures: LeNet-5 variants (``arch="lenet"``), wide residual networks (``"wrn"``) and
torchvision's ResNet-18/34/50 (``"resnet"``), each with a plain or a push-pull first layer.

>>> model = build_model(ModelSpec(arch="wrn", depth=28, width=10, pushpull=True, num_classes=100))
>>> ModelSpec(arch="lenet", variant="A", pushpull=True).name
'PA'
>>> ModelSpec(arch="resnet", depth=50, in_channels=3, pushpull=True).name
'ResNet-50-PP'

The specs and the naming rule import without torch; the networks load torch on their first use, so that
a catalog of specs (and a command line that checks one) answers at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models.spec import (
    DEFAULT_ALPHA,
    DEFAULT_H,
    LENET_VARIANTS,
    RESNET_DEPTHS,
    RESNET_STEMS,
    LeNetVariant,
    ModelSpec,
    plain_name,
    pushpull_name,
)

if TYPE_CHECKING:
    from models.builder import build_model
    from models.lenet import LeNet5
    from models.pushpull import PushPull2d, pull_kernel_size
    from models.resnet import torchvision_resnet
    from models.wrn import WideResNet

# The torch-backed names: each from its module, imported when first asked for (PEP 562).
_TORCH_NAMES = {
    "build_model": "models.builder",
    "LeNet5": "models.lenet",
    "PushPull2d": "models.pushpull",
    "pull_kernel_size": "models.pushpull",
    # Not exported as "resnet": that name is the submodule's, which its first import sets on the package.
    "torchvision_resnet": "models.resnet",
    "WideResNet": "models.wrn",
}

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_H",
    "LENET_VARIANTS",
    "LeNet5",
    "LeNetVariant",
    "ModelSpec",
    "PushPull2d",
    "RESNET_DEPTHS",
    "RESNET_STEMS",
    "WideResNet",
    "build_model",
    "plain_name",
    "pull_kernel_size",
    "pushpull_name",
    "torchvision_resnet",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
