"""The synthetic data sets of tests/datasets.py load through the real torchvision classes, and through
sweep.data's loader with its one-line advice when a data set is missing."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from torchvision import datasets

from perturb import noise_suite
from sweep.data import DataUnavailable, load_dataset
from sweep.datasets import DATASETS
from tests.datasets import (
    cifar_checksums_disabled,
    disable_cifar_checksums,
    svhn_checksums_disabled,
    write_cifar,
    write_mnist,
    write_svhn,
)
from tests.processes import closed_port

IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
# What the advice of a missing data set says to put where, {root} for the data root.
WHAT_TO_PUT_WHERE = {
    "mnist": f"the four MNIST IDX files ({IDX_FILES}, or their .gz) in {{root}}/MNIST/raw",
    "fashionmnist": f"the four FashionMNIST IDX files ({IDX_FILES}, or their .gz) in {{root}}/FashionMNIST/raw",
    "kmnist": f"the four KMNIST IDX files ({IDX_FILES}, or their .gz) in {{root}}/KMNIST/raw",
    "cifar10": "the extracted cifar-10-python.tar.gz (folder cifar-10-batches-py) in {root}",
    "cifar100": "the extracted cifar-100-python.tar.gz (folder cifar-100-python) in {root}",
    "svhn": "train_32x32.mat and test_32x32.mat in {root}",
}


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


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_the_table_names_every_data_set_and_its_torchvision_class():
    assert list(DATASETS) == list(WHAT_TO_PUT_WHERE)
    assert {name: info.torchvision_class for name, info in DATASETS.items()} == {
        "mnist": "MNIST",
        "fashionmnist": "FashionMNIST",
        "kmnist": "KMNIST",
        "cifar10": "CIFAR10",
        "cifar100": "CIFAR100",
        "svhn": "SVHN",
    }
    # a mirrored digit or kana is no longer one; a mirrored garment, object or animal still is
    assert [name for name, info in DATASETS.items() if info.flips] == ["fashionmnist", "cifar10", "cifar100"]
    assert {name: len(noise_suite(name)) for name in DATASETS} == {
        "mnist": 24, "fashionmnist": 24, "kmnist": 24, "cifar10": 22, "cifar100": 22, "svhn": 22
    }  # fmt: skip


@pytest.mark.parametrize(("kind", "folder"), [("fashionmnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_an_mnist_like_data_set_loads_from_its_own_folder(tmp_path: Path, kind: str, folder: str) -> None:
    raw = write_mnist(tmp_path, n_train=30, n_test=20, seed=3, kind=kind)  # type: ignore[arg-type]
    assert raw == tmp_path / folder / "raw"
    assert sorted(path.name for path in raw.iterdir()) == sorted(IDX_FILES.split(", "))
    pixels = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8).reshape(30, 28, 28)
    test_pixels = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    written = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    loaded = load_dataset(kind, tmp_path, download=False)
    assert loaded is not None
    assert tuple(loaded.train_images.shape) == (30, 1, 28, 28) and loaded.train_images.dtype == torch.uint8
    assert tuple(loaded.test_images.shape) == (20, 1, 28, 28) and loaded.test_images.dtype == torch.uint8
    assert loaded.train_labels.dtype == torch.int64 and tuple(loaded.test_labels.shape) == (20,)
    assert loaded.train_labels[:6].tolist() == [6, 0, 3, 3, 7, 2] == written[:6].tolist()
    assert np.array_equal(loaded.train_images[:, 0].numpy(), pixels)
    assert np.array_equal(loaded.test_images.numpy().ravel(), test_pixels)
    assert not (tmp_path / "MNIST").exists()  # its own folder only


def test_svhn_loads_with_its_labels_10_as_0(tmp_path: Path) -> None:
    assert write_svhn(tmp_path, n_train=30, n_test=20, seed=3) == tmp_path
    assert sorted(path.name for path in tmp_path.iterdir()) == ["test_32x32.mat", "train_32x32.mat"]
    stored = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    assert stored["X"].shape == (32, 32, 3, 30) and stored["X"].dtype == np.uint8
    assert stored["y"].shape == (30, 1) and stored["y"][:6, 0].tolist() == [6, 10, 3, 3, 7, 2]
    assert sorted(set(stored["y"][:, 0].tolist())) == list(range(1, 11))
    with svhn_checksums_disabled():
        loaded = load_dataset("svhn", tmp_path, download=False)
    assert loaded is not None
    assert tuple(loaded.train_images.shape) == (30, 3, 32, 32) and loaded.train_images.dtype == torch.uint8
    assert tuple(loaded.test_images.shape) == (20, 3, 32, 32) and loaded.test_images.dtype == torch.uint8
    assert loaded.train_images.is_contiguous() and loaded.train_labels.dtype == torch.int64
    assert loaded.train_labels[:6].tolist() == [6, 0, 3, 3, 7, 2]
    assert loaded.train_labels.tolist() == [label % 10 for label in stored["y"][:, 0].tolist()]
    # image i is X[:, :, :, i], rows down, columns across, channels R, G, B
    for i in (0, 1, 29):
        assert np.array_equal(loaded.train_images[i].numpy(), stored["X"][:, :, :, i].transpose(2, 0, 1))
    test = scipy.io.loadmat(tmp_path / "test_32x32.mat")
    assert np.array_equal(loaded.test_images.numpy(), test["X"].transpose(3, 2, 0, 1))
    # the bar of label 0 (image 1) is a white row band: rows 0-2 all 255 in every channel
    assert (loaded.train_images[1, :, 0:3, :] == 255).all() and (loaded.train_images[1, :, 3:, :] < 60).all()


def test_svhn_files_that_fail_their_checksums_do_not_load(tmp_path: Path) -> None:
    write_svhn(tmp_path, n_train=10, n_test=10)
    with pytest.raises(DataUnavailable) as error:
        load_dataset("svhn", tmp_path, download=False)
    assert str(error.value) == (
        f"svhn in {tmp_path} does not load (Dataset not found or corrupted. You can use download=True to "
        f"download it): put train_32x32.mat and test_32x32.mat in {tmp_path}, or pass --data-root DIR"
    )


@pytest.mark.parametrize("name", list(WHAT_TO_PUT_WHERE))
def test_a_missing_data_set_is_named_with_its_files_in_a_dry_run(tmp_path: Path, name: str) -> None:
    where = WHAT_TO_PUT_WHERE[name].format(root=tmp_path)
    with pytest.raises(DataUnavailable) as error:
        load_dataset(name, tmp_path, download=False)
    assert str(error.value) == (
        f"{name} is not in {tmp_path} (a dry run downloads nothing): put {where}, or pass --data-root DIR"
    )
    assert listing(tmp_path) == []


def _unreachable(monkeypatch: pytest.MonkeyPatch, name: str, port: int) -> None:
    """Point the download of ``name`` at a closed port of this machine."""
    cls = getattr(datasets, DATASETS[name].torchvision_class)
    if issubclass(cls, datasets.MNIST):
        monkeypatch.setattr(cls, "mirrors", [f"http://127.0.0.1:{port}/"])
    elif cls is datasets.SVHN:
        unreachable = {
            split: [f"http://127.0.0.1:{port}/{file}", file, md5] for split, (_, file, md5) in cls.split_list.items()
        }
        monkeypatch.setattr(cls, "split_list", unreachable)
    else:
        monkeypatch.setattr(cls, "url", f"http://127.0.0.1:{port}/{cls.filename}")


@pytest.mark.parametrize("name", list(WHAT_TO_PUT_WHERE))
@pytest.mark.parametrize("exists", [False, True], ids=["absent-root", "empty-root"])
def test_a_failed_download_names_the_files_and_leaves_nothing_behind(monkeypatch, tmp_path, name, exists):
    root = tmp_path / "data" / "sets"
    if exists:
        root.mkdir(parents=True)
    with closed_port() as port:
        _unreachable(monkeypatch, name, port)
        with pytest.raises(DataUnavailable) as error:
            load_dataset(name, root, download=True)
    where = WHAT_TO_PUT_WHERE[name].format(root=root)
    assert str(error.value) == (
        f"{name} is not in {root} and could not be downloaded (Connection refused): put {where}, "
        "or pass --data-root DIR"
    )
    assert listing(tmp_path) == (["data", "data/sets"] if exists else [])


def test_an_svhn_with_one_file_is_missing_and_keeps_that_file(monkeypatch, tmp_path: Path) -> None:
    write_svhn(tmp_path, n_train=10, n_test=10)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DataUnavailable, match="a dry run downloads nothing"):
        load_dataset("svhn", tmp_path, download=False)
    with closed_port() as port:
        _unreachable(monkeypatch, "svhn", port)
        with svhn_checksums_disabled(), pytest.raises(DataUnavailable, match="could not be downloaded"):
            load_dataset("svhn", tmp_path, download=True)
    assert listing(tmp_path) == ["train_32x32.mat"]
