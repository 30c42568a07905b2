"""The synthetic data sets of tests/datasets.py load through the real torchvision classes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from tests.datasets import cifar_checksums_disabled, disable_cifar_checksums, write_cifar, write_mnist


def _unpickle(path: Path) -> dict:
    """Load a CIFAR pickle the way torchvision does."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _nearest_centroid_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Test accuracy of classifying each test image by the nearest per-class mean training image."""
    train_x, test_x = train_x.reshape(len(train_x), -1).astype(float), test_x.reshape(len(test_x), -1).astype(float)
    classes = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])
    predicted = classes[((test_x[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return float((predicted == test_y).mean())


def test_mnist_loads_through_torchvision(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, n_train=50, n_test=20, seed=3)
    assert raw == tmp_path / "MNIST" / "raw"
    written = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    train = datasets.MNIST(tmp_path, train=True, download=False)
    test = datasets.MNIST(tmp_path, train=False, download=False)
    assert (len(train), len(test)) == (50, 20)
    assert tuple(train.data.shape) == (50, 28, 28) and train.data.dtype == torch.uint8
    assert train.targets.tolist() == written.tolist()
    assert np.bincount(train.targets.numpy(), minlength=10).tolist() == [5] * 10
    image, label = train[0]
    assert image.size == (28, 28) and 0 <= label < 10
    again = tmp_path / "again"
    write_mnist(again, n_train=50, n_test=20, seed=3)
    assert datasets.MNIST(again, train=True).data.equal(train.data)  # deterministic from seed


def test_mnist_is_learnable(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=100, n_test=50)
    train, test = datasets.MNIST(tmp_path, train=True), datasets.MNIST(tmp_path, train=False)
    accuracy = _nearest_centroid_accuracy(
        train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()
    )
    assert accuracy > 0.9


def test_cifar10_loads_inside_context(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path, "cifar10", n_train=23, n_test=10)
    assert folder == tmp_path / "cifar-10-batches-py"
    batches = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    assert [len(b["labels"]) for b in batches] == [5, 5, 5, 4, 4]
    with cifar_checksums_disabled():
        train = datasets.CIFAR10(tmp_path, train=True)
        test = datasets.CIFAR10(tmp_path, train=False)
    assert train.data.shape == (23, 32, 32, 3) and train.data.dtype == np.uint8
    assert test.data.shape == (10, 32, 32, 3)
    assert train.targets == [label for b in batches for label in b["labels"]]
    assert train.classes == [f"class_{i}" for i in range(10)]
    assert np.array_equal(train.data[0], batches[0]["data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    with pytest.raises(RuntimeError):  # md5 sums are back
        datasets.CIFAR10(tmp_path, train=True)


def test_cifar100_loads_and_all_classes_are_distinct(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path, "cifar100", n_train=300, n_test=200)
    written = _unpickle(folder / "train")
    with cifar_checksums_disabled():
        train = datasets.CIFAR100(tmp_path, train=True)
        test = datasets.CIFAR100(tmp_path, train=False)
    assert train.data.shape == (300, 32, 32, 3) and train.data.dtype == np.uint8
    assert test.data.shape == (200, 32, 32, 3)
    assert train.targets == written["fine_labels"]
    assert written["coarse_labels"] == [label // 5 for label in written["fine_labels"]]
    assert train.classes == [f"class_{i}" for i in range(100)]
    meta = _unpickle(folder / "meta")
    assert meta["coarse_label_names"] == [f"super_{i}" for i in range(20)]
    accuracy = _nearest_centroid_accuracy(train.data, np.array(train.targets), test.data, np.array(test.targets))
    assert accuracy > 0.9
    with pytest.raises(RuntimeError):
        datasets.CIFAR100(tmp_path, train=True)


def test_disable_cifar_checksums_is_permanent_until_restored(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", n_train=5, n_test=5)
    with cifar_checksums_disabled():  # restores whatever was there, even after a permanent disable
        disable_cifar_checksums()
        assert datasets.CIFAR10.meta["md5"] is None and datasets.CIFAR100.train_list[0][1] is None
        assert len(datasets.CIFAR10(tmp_path)) == 5
    assert datasets.CIFAR10.meta["md5"] is not None and datasets.CIFAR100.train_list[0][1] is not None
    with pytest.raises(ValueError):
        write_cifar(tmp_path, "cifar1000")  # type: ignore[arg-type]
