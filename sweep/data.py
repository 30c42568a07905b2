"""Data sets as whole uint8 tensors, loaded through torchvision's own dataset classes.

The driver loads each data set once and hands the tensors to every trial through Ray's object store, so
trials (and cluster workers) never touch the data folder: a missing data set stops the sweep before any
trial starts.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

__all__ = ["DEFAULT_DATA_ROOT", "MEAN_STD", "DataUnavailable", "DatasetTensors", "load_dataset", "resolve_data_root"]

DEFAULT_DATA_ROOT = Path.home() / ".cache" / "pushpull-sweep" / "data"

# Per-channel mean and std of the training images in [0, 1].
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_CLASSES = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
_WHAT_TO_PUT_WHERE = {
    "mnist": "the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte, or their .gz) in {root}/MNIST/raw",
    "cifar10": "the extracted cifar-10-python.tar.gz (folder cifar-10-batches-py) in {root}",
    "cifar100": "the extracted cifar-100-python.tar.gz (folder cifar-100-python) in {root}",
}


class DataUnavailable(RuntimeError):
    """A data set is neither on disk nor downloadable; the message says what to put where."""


@dataclass(frozen=True)
class DatasetTensors:
    """A whole data set. images: (N, C, H, W) uint8; labels: (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _as_tensors(split: datasets.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = split.data
    if isinstance(images, torch.Tensor):  # MNIST: (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR: numpy (N, H, W, C)
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(split.targets, dtype=torch.int64)


def load_dataset(name: str, root: str | Path) -> DatasetTensors:
    """Load ``name`` (``mnist``, ``cifar10``, ``cifar100``) from ``root``, downloading it there if absent.

    Raises DataUnavailable with one line saying what to put where when it is absent and cannot be
    downloaded (an offline machine).
    """
    cls = _CLASSES[name]
    root = str(Path(root).expanduser())
    try:
        train, test = cls(root, train=True), cls(root, train=False)
    except RuntimeError:
        try:
            # torchvision prints each failed mirror; one line of our own says it better.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                train, test = cls(root, train=True, download=True), cls(root, train=False, download=True)
        except Exception as error:  # noqa: BLE001 - any download failure ends in the same advice
            where = _WHAT_TO_PUT_WHERE[name].format(root=root)
            raise DataUnavailable(
                f"{name} is not in {root} and could not be downloaded ({type(error).__name__}): put {where}, "
                f"or pass --data-root DIR"
            ) from None
    train_images, train_labels = _as_tensors(train)
    test_images, test_labels = _as_tensors(test)
    return DatasetTensors(train_images, train_labels, test_images, test_labels)


def resolve_data_root(explicit: str | None) -> str | Path:
    """``--data-root``, else ``$SWEEP_DATA_ROOT``, else :data:`DEFAULT_DATA_ROOT`."""
    return explicit or os.environ.get("SWEEP_DATA_ROOT") or DEFAULT_DATA_ROOT
