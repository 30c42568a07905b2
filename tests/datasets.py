"""Tiny, learnable data sets written in torchvision's own on-disk formats, for the real dataset classes.

MNIST, Fashion-MNIST and KMNIST as the four uncompressed IDX files in ``root/MNIST/raw``,
``root/FashionMNIST/raw`` or ``root/KMNIST/raw``; CIFAR-10/100 as the python pickles in
``root/cifar-10-batches-py`` or ``root/cifar-100-python``; SVHN as the MATLAB files ``root/train_32x32.mat``
and ``root/test_32x32.mat``. Each class is an easy pattern on mild noise: a bright bar whose position
(10 places) encodes ``label % 10``, whose orientation encodes ``label // 10 % 2`` and whose colour encodes
``label // 20`` (CIFAR-100 only: the other colour sets' bars are white), so every one of up to 100 classes
is distinct and a few steps of training rise clearly above chance. Labels are balanced and fixed by ``seed``.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
from torchvision import datasets

__all__ = [
    "cifar_checksums_disabled",
    "disable_cifar_checksums",
    "svhn_checksums_disabled",
    "write_cifar",
    "write_mnist",
    "write_svhn",
]

# Bar colours for CIFAR (RGB); CIFAR-10 uses only the first (white), CIFAR-100 all five.
_COLOURS = np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
_CIFAR_CLASSES = (datasets.CIFAR10, datasets.CIFAR100)
_CIFAR_ATTRIBUTES = ("train_list", "test_list", "meta")
# The IDX data sets by name: each is read by its torchvision class from root/<class name>/raw.
_IDX_CLASSES = {"mnist": datasets.MNIST, "fashionmnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST}


def _labels(count: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` labels cycling through ``classes`` (balanced), in a seeded random order."""
    return rng.permutation(np.arange(count) % classes)


def _patterned_images(labels: np.ndarray, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images (N, channels, size, size): noise in 0..59 plus a bar that encodes the label."""
    images = rng.integers(0, 60, size=(len(labels), channels, size, size), dtype=np.uint8)
    band = max(1, size // 10)
    for image, label in zip(images, labels.tolist()):
        start = (label % 10) * (size - band) // 9
        colour = _COLOURS[label // 20][:channels, None, None] if channels == 3 else 255
        if label // 10 % 2 == 0:
            image[:, start : start + band, :] = colour
        else:
            image[:, :, start : start + band] = colour
    return images


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array of 1 (labels, magic 2049) or 3 (images, magic 2051) dims as an IDX file."""
    with open(path, "wb") as f:
        f.write(struct.pack(">i", 2051 if array.ndim == 3 else 2049))
        f.write(struct.pack(f">{array.ndim}i", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(
    root: str | Path,
    n_train: int = 600,
    n_test: int = 100,
    seed: int = 0,
    kind: Literal["mnist", "fashionmnist", "kmnist"] = "mnist",
) -> Path:
    """Write an MNIST (or, by ``kind``, a Fashion-MNIST or a KMNIST: the same IDX files in another folder)
    that ``torchvision.datasets.MNIST(root, train=..., download=False)`` (``FashionMNIST``, ``KMNIST``) loads.

    Returns ``root/MNIST/raw`` (``root/FashionMNIST/raw``, ``root/KMNIST/raw``), holding
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``.
    """
    if kind not in _IDX_CLASSES:
        raise ValueError(f"kind must be one of {', '.join(_IDX_CLASSES)}, not {kind!r}")
    rng = np.random.default_rng(seed)
    raw = Path(root) / _IDX_CLASSES[kind].__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = _labels(count, 10, rng)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", _patterned_images(labels, 28, 1, rng)[:, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_cifar(
    root: str | Path,
    kind: Literal["cifar10", "cifar100"] = "cifar10",
    n_train: int = 100,
    n_test: int = 50,
    seed: int = 0,
) -> Path:
    """Write a CIFAR-10 or CIFAR-100 in torchvision's layout and return its folder under ``root``.

    CIFAR-10 spreads ``n_train`` over ``data_batch_1..5``. Class names are ``class_<i>`` (and
    ``super_<i>`` for CIFAR-100's coarse labels, which are ``label // 5``). torchvision checks the md5
    sum of every file, which these cannot match: load them inside :func:`cifar_checksums_disabled`.
    """
    if kind not in ("cifar10", "cifar100"):
        raise ValueError(f"kind must be 'cifar10' or 'cifar100', not {kind!r}")
    rng = np.random.default_rng(seed)
    cls, classes, label_key = (
        (datasets.CIFAR10, 10, "labels") if kind == "cifar10" else (datasets.CIFAR100, 100, "fine_labels")
    )
    folder = Path(root) / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, count: int) -> None:
        labels = _labels(count, classes, rng)
        entry = {"data": _patterned_images(labels, 32, 3, rng).reshape(count, 3072), label_key: labels.tolist()}
        if kind == "cifar100":
            entry["coarse_labels"] = (labels // 5).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    train_files = [name for name, _ in cls.train_list]
    for i, name in enumerate(train_files):
        dump(name, n_train // len(train_files) + (i < n_train % len(train_files)))
    dump(cls.test_list[0][0], n_test)
    meta: dict[str, list[str]] = {cls.meta["key"]: [f"class_{i}" for i in range(classes)]}
    if kind == "cifar100":
        meta["coarse_label_names"] = [f"super_{i}" for i in range(20)]
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def write_svhn(root: str | Path, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """Write an SVHN that ``torchvision.datasets.SVHN(root, split="train" or "test")`` loads, as SVHN's own
    files are: ``X`` (32, 32, 3, N) uint8 (height, width, channel, image) and ``y`` (N, 1) uint8 with the
    labels 1..10, 10 for the digit 0 (torchvision makes it 0 again).

    Returns ``root``, holding ``train_32x32.mat`` and ``test_32x32.mat``. torchvision checks their md5 sums,
    which these cannot match: load them inside :func:`svhn_checksums_disabled`.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("test", n_test)):
        labels = _labels(count, 10, rng)
        images = _patterned_images(labels, 32, 3, rng)  # (N, C, H, W)
        stored = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(count, 1)
        matrices = {"X": np.ascontiguousarray(images.transpose(2, 3, 1, 0)), "y": stored}
        scipy.io.savemat(folder / datasets.SVHN.split_list[split][1], matrices)
    return folder


@contextlib.contextmanager
def svhn_checksums_disabled() -> Iterator[None]:
    """SVHN accepts any file of the right name for the duration of a ``with`` block (its md5 sums are
    ``None``: torchvision's ``check_integrity(path, None)`` only checks that the file exists); restored after."""
    saved = datasets.SVHN.__dict__["split_list"]
    datasets.SVHN.split_list = {split: [url, filename, None] for split, (url, filename, _) in saved.items()}
    try:
        yield
    finally:
        datasets.SVHN.split_list = saved


def disable_cifar_checksums() -> None:
    """Make CIFAR10/CIFAR100 accept any file of the right name, for good (e.g. in a Ray worker setup hook).

    Sets every md5 in ``train_list``, ``test_list`` and ``meta`` to ``None``; torchvision's
    ``check_integrity(path, None)`` then only checks that the file exists.
    """
    for cls in _CIFAR_CLASSES:
        cls.train_list = [[name, None] for name, _ in cls.train_list]
        cls.test_list = [[name, None] for name, _ in cls.test_list]
        cls.meta = dict(cls.meta, md5=None)


@contextlib.contextmanager
def cifar_checksums_disabled() -> Iterator[None]:
    """:func:`disable_cifar_checksums` for the duration of a ``with`` block; restores the md5 sums after."""
    saved = {cls: {name: copy.deepcopy(cls.__dict__[name]) for name in _CIFAR_ATTRIBUTES} for cls in _CIFAR_CLASSES}
    disable_cifar_checksums()
    try:
        yield
    finally:
        for cls, attributes in saved.items():
            for name, value in attributes.items():
                setattr(cls, name, value)
