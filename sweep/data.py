"""Data sets as whole uint8 tensors, loaded through torchvision's own dataset classes.

The driver loads each data set once and puts it into Ray's object store once (:func:`share_datasets`);
a trial fetches the one data set it trains on (:func:`fetch_dataset`), without a copy where it runs on the
CPU. Trials (and cluster workers) never touch the data folder: a missing data set stops the sweep before
any trial starts.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torchvision import datasets

from sweep.cli import first_line
from sweep.datasets import DATASETS
from sweep.defaults import DEFAULT_DATA_ROOT

__all__ = [
    "DataUnavailable",
    "DatasetTensors",
    "fetch_dataset",
    "load_dataset",
    "load_datasets",
    "resolve_data_root",
    "share_datasets",
]


# torchvision's class of each data set of the table. Three kinds load here: MNIST's (FashionMNIST and KMNIST
# are subclasses: the same IDX files in {root}/{class}/raw), CIFAR's (CIFAR100 is a subclass of CIFAR10) and SVHN.
_CLASSES: dict[str, type[datasets.VisionDataset]] = {
    name: getattr(datasets, info.torchvision_class) for name, info in DATASETS.items()
}
_KINDS = (datasets.MNIST, datasets.CIFAR10, datasets.SVHN)
_SVHN_SPLITS = ("train", "test")


def _kind(name: str) -> type[datasets.VisionDataset]:
    """Which of :data:`_KINDS` the class of ``name`` is: what says where its files are and how it loads."""
    cls = _CLASSES[name]
    for kind in _KINDS:
        if issubclass(cls, kind):
            return kind
    raise ValueError(f"{name}: sweep.data loads no data set of torchvision's class {cls.__name__}")


def _what_to_put_where(name: str) -> str:
    """What a user puts where for ``name``, with ``{root}`` for the data root."""
    cls, kind = _CLASSES[name], _kind(name)
    if kind is datasets.MNIST:
        files = ", ".join(Path(archive).with_suffix("").name for archive, _ in cls.resources)
        return f"the four {cls.__name__} IDX files ({files}, or their .gz) in {{root}}/{cls.__name__}/raw"
    if kind is datasets.SVHN:
        return " and ".join(cls.split_list[split][1] for split in _SVHN_SPLITS) + " in {root}"
    return f"the extracted {cls.filename} (folder {cls.base_folder}) in {{root}}"


_WHAT_TO_PUT_WHERE = {name: _what_to_put_where(name) for name in DATASETS}


class DataUnavailable(RuntimeError):
    """A data set is neither on disk nor downloadable; the message says what to put where."""


@dataclass(frozen=True)
class DatasetTensors:
    """A whole data set. images: (N, C, H, W) uint8; labels: (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def test_only(self) -> DatasetTensors:
        """The test split with an empty training split: what scoring needs. New empty tensors, not
        ``[:0]`` views, which would pickle the whole training storage along."""
        return DatasetTensors(
            train_images=torch.empty((0, *self.train_images.shape[1:]), dtype=self.train_images.dtype),
            train_labels=torch.empty(0, dtype=self.train_labels.dtype),
            test_images=self.test_images,
            test_labels=self.test_labels,
        )


def share_datasets(data: dict[str, DatasetTensors]) -> dict[str, Any]:
    """Put each data set into Ray's object store once: {name: ObjectRef}. A trial that is handed the whole
    dict (small: references only) fetches the one data set it needs with :func:`fetch_dataset`. The
    tensors go in as numpy arrays, which Ray hands to every process of a node without a copy."""
    import ray

    return {name: ray.put({f.name: getattr(t, f.name).numpy() for f in fields(t)}) for name, t in data.items()}


def fetch_dataset(reference: Any) -> DatasetTensors:
    """The data set behind a reference of :func:`share_datasets`, its tensors read-only views of Ray's
    shared memory (training reads batches out of them; nothing writes to a data set)."""
    import ray

    arrays = ray.get(reference)
    with warnings.catch_warnings():  # torch warns that the arrays are read-only: they are meant to be
        warnings.simplefilter("ignore", UserWarning)
        return DatasetTensors(**{name: torch.from_numpy(array) for name, array in arrays.items()})


def _as_tensors(split: datasets.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = split.data
    if isinstance(split, datasets.SVHN):  # numpy (N, C, H, W) already, labels 0-9 (torchvision made 10 a 0)
        return torch.from_numpy(images).contiguous(), torch.as_tensor(split.labels, dtype=torch.int64)
    if isinstance(images, torch.Tensor):  # MNIST's kind: (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR: numpy (N, H, W, C)
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(split.targets, dtype=torch.int64)


def _splits(name: str, root: Path, download: bool) -> tuple[datasets.VisionDataset, datasets.VisionDataset]:
    """The training and the test split of ``name`` through its torchvision class (SVHN names its splits)."""
    cls = _CLASSES[name]
    if _kind(name) is datasets.SVHN:
        train, test = _SVHN_SPLITS
        return cls(str(root), split=train, download=download), cls(str(root), split=test, download=download)
    return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)


def _files(name: str, root: Path) -> tuple[list[Path], list[Path]]:
    """The files torchvision's class for ``name`` loads from ``root`` without downloading, and the archives
    from which its ``download=True`` makes them without a network (it extracts an archive that is there;
    SVHN's files are what it downloads, with no archive)."""
    cls, kind = _CLASSES[name], _kind(name)
    if kind is datasets.MNIST:
        raw = root / cls.__name__ / "raw"
        archives = [raw / archive for archive, _ in cls.resources]
        return [path.with_suffix("") for path in archives], archives
    if kind is datasets.SVHN:
        return [root / cls.split_list[split][1] for split in _SVHN_SPLITS], []
    folder = root / cls.base_folder
    names = [entry[0] for entry in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [folder / file for file in names], [root / cls.filename]


def _new_paths(name: str, root: Path) -> list[Path]:
    """The paths a download of ``name`` into ``root`` may create that do not exist now: what to remove when
    it fails, so that a failed download leaves nothing behind."""
    cls, kind = _CLASSES[name], _kind(name)
    if kind is datasets.MNIST:
        candidates = [root / cls.__name__]
    elif kind is datasets.SVHN:
        candidates = _files(name, root)[0]
    else:
        candidates = [root / cls.base_folder, root / cls.filename]
    top = root
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return [path for path in [top, *candidates] if not path.exists()]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)


def load_dataset(name: str, root: str | Path, download: bool = True) -> DatasetTensors | None:
    """Load ``name`` (a key of :data:`sweep.datasets.DATASETS`) from ``root``, downloading it there if absent and
    ``download`` is true (a failed download leaves nothing behind).

    Nothing is created under ``root`` unless a download is tried (torchvision's classes are constructed
    only once their files are there). Raises DataUnavailable with one line saying what to put where when
    the data set is absent and cannot be downloaded (an offline machine, or ``download`` false), or when
    its files do not load. With ``download`` false and only the archives there (which torchvision extracts
    when asked to download), the archives are not checked and the result is None.
    """
    root = Path(root).expanduser()
    where = _WHAT_TO_PUT_WHERE[name].format(root=root)
    files, archives = _files(name, root)
    try:
        if all(path.is_file() for path in files):
            train, test = _splits(name, root, download=False)
        elif not download:
            if archives and all(path.is_file() for path in archives):
                return None
            raise DataUnavailable(
                f"{name} is not in {root} (a dry run downloads nothing): put {where}, or pass --data-root DIR"
            )
        else:
            created = _new_paths(name, root)
            try:
                # torchvision prints each failed mirror; one line of our own says it better.
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    train, test = _splits(name, root, download=True)
            except Exception as error:  # noqa: BLE001 - any download failure ends in the same advice
                _remove(created)
                raise DataUnavailable(
                    f"{name} is not in {root} and could not be downloaded ({_download_failure(error)}): "
                    f"put {where}, or pass --data-root DIR"
                ) from None
        train_images, train_labels = _as_tensors(train)
        test_images, test_labels = _as_tensors(test)
    except DataUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt or truncated file, a failed checksum, ...
        raise DataUnavailable(
            f"{name} in {root} does not load ({first_line(error)}): put {where}, or pass --data-root DIR"
        ) from None
    return DatasetTensors(train_images, train_labels, test_images, test_labels)


def _download_failure(error: Exception) -> str:
    """Why a download failed, in a few words: torchvision's error lists each mirror it tried, with the
    reason after ``<urlopen error [Errno N] ...>`` (the last mirror's reason is kept)."""
    reasons = re.findall(r"<urlopen error (?:\[Errno [^\]]*\] )?([^>]*)>", str(error))
    return reasons[-1] if reasons else first_line(error, 80)


def load_datasets(
    names: Iterable[str], data_root: str | None, download: bool = True
) -> dict[str, DatasetTensors | None]:
    """Each of ``names`` once, in the order given, by :func:`load_dataset` from :func:`resolve_data_root`
    (``data_root``). A data root that was given (the option or ``$SWEEP_DATA_ROOT``) and does not exist is
    a typo, not a place to download into: only the default root is created. Raises DataUnavailable (one
    line) for the first that cannot be had."""
    names = list(dict.fromkeys(names))
    root = resolve_data_root(data_root)
    folder = Path(root).expanduser()
    if folder != DEFAULT_DATA_ROOT and names and not folder.is_dir():
        where = _WHAT_TO_PUT_WHERE[names[0]].format(root=root)
        raise DataUnavailable(f"the data root {root} does not exist: put {where}, or pass --data-root DIR")
    return {name: load_dataset(name, root, download=download) for name in names}


def resolve_data_root(explicit: str | None) -> str | Path:
    """``--data-root``, else ``$SWEEP_DATA_ROOT``, else :data:`DEFAULT_DATA_ROOT`."""
    return explicit or os.environ.get("SWEEP_DATA_ROOT") or DEFAULT_DATA_ROOT
