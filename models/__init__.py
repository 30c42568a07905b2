"""The paper's model zoo: one typed spec, one builder.

>>> model = build_model(ModelSpec(arch="wrn", depth=28, width=10, pushpull=True, num_classes=100))
>>> ModelSpec(arch="lenet", variant="A", pushpull=True).name
'PA'
"""

from __future__ import annotations

from models.builder import build_model
from models.lenet import LENET_VARIANTS, LeNet5, LeNetVariant
from models.pushpull import PushPull2d, pull_kernel_size
from models.spec import DEFAULT_ALPHA, DEFAULT_H, ModelSpec, plain_name, pushpull_name
from models.wrn import WideResNet

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_H",
    "LENET_VARIANTS",
    "LeNet5",
    "LeNetVariant",
    "ModelSpec",
    "PushPull2d",
    "WideResNet",
    "build_model",
    "plain_name",
    "pull_kernel_size",
    "pushpull_name",
]
