"""The data sets a study can train on: one table of what each one is (no torch, no I/O).

Loading them is :mod:`sweep.data`'s business; this table is what the catalog, the specs, training and
scoring need to know of a data set by its name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "DatasetInfo"]


@dataclass(frozen=True)
class DatasetInfo:
    """One data set.

    Attributes:
        torchvision_class: the name of its class in ``torchvision.datasets``.
        channels: image channels (1 grey, 3 colour).
        size: image height = width, pixels.
        num_classes: classes of its labels.
        mean, std: per-channel mean and standard deviation of its training images in [0, 1] (what
            ``normalize`` subtracts and divides by).
        flips: whether an image mirrored left-right keeps its label (``augment`` flips only then: a
            mirrored digit is no digit).
        test_images: images of its test split.
    """

    torchvision_class: str
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flips: bool
    test_images: int


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", 1, 28, 10, (0.1307,), (0.3081,), flips=False, test_images=10_000),
    "fashionmnist": DatasetInfo("FashionMNIST", 1, 28, 10, (0.2860,), (0.3530,), flips=True, test_images=10_000),
    "kmnist": DatasetInfo("KMNIST", 1, 28, 10, (0.1918,), (0.3483,), flips=False, test_images=10_000),
    "cifar10": DatasetInfo(
        "CIFAR10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), flips=True, test_images=10_000
    ),
    "cifar100": DatasetInfo(
        "CIFAR100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), flips=True, test_images=10_000
    ),
    "svhn": DatasetInfo(
        "SVHN", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), flips=False, test_images=26_032
    ),
}
