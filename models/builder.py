"""Builds a freshly initialised model of the paper's zoo from its :class:`~models.spec.ModelSpec`."""

from __future__ import annotations

from torch import nn

from models.lenet import LeNet5
from models.resnet import torchvision_resnet
from models.spec import LENET_VARIANTS, ModelSpec
from models.wrn import WideResNet

__all__ = ["build_model"]


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model for ``spec`` (on the CPU; move it with ``.to(device)``)."""
    pushpull = (spec.h, spec.alpha) if spec.pushpull else None
    if spec.arch == "lenet":
        return LeNet5(LENET_VARIANTS[spec.variant], num_classes=spec.num_classes, pushpull=pushpull)
    if spec.arch == "resnet":
        return torchvision_resnet(spec.depth, spec.num_classes, spec.channels, spec.stem, pushpull=pushpull)
    return WideResNet(spec.depth, spec.width, num_classes=spec.num_classes, dropout=spec.dropout, pushpull=pushpull)
