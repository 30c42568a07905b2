"""The paper's noise suites per data set, and the deterministic noisy test sets built from them."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import torch

from perturb.noise import change_contrast, gaussian_noise, poisson_noise, speckle_noise

__all__ = ["NOISES", "Perturbation", "noise_seed", "noise_suite", "perturb", "perturb_test_set"]

NOISES = ("gaussian", "speckle", "poisson")

# Above C = 3 a [0, 1] image goes below -1, outside the range skimage's Poisson noise accepts.
MAX_CONTRAST = 3.0


@dataclass(frozen=True)
class Perturbation:
    """One test-time noise setting.

    Attributes:
        noise: ``"gaussian"`` or ``"speckle"`` (level = variance of the noise, >= 0) or ``"poisson"``
            (level = contrast factor C in (0, 3], applied before the Poisson noise).
        level: as above.
    """

    noise: Literal["gaussian", "speckle", "poisson"]
    level: float

    def __post_init__(self) -> None:
        if self.noise not in NOISES:
            raise ValueError(f"unknown noise {self.noise!r}: expected one of {', '.join(NOISES)}")
        level = float(self.level)
        if not math.isfinite(level):
            raise ValueError(f"{self.noise} level must be finite, got {self.level}")
        if self.noise == "poisson":
            if not 0 < level <= MAX_CONTRAST:
                raise ValueError(f"poisson contrast factor C must be in (0, {MAX_CONTRAST:g}], got {self.level}")
        elif level < 0:
            raise ValueError(f"{self.noise} noise variance must be >= 0, got {self.level}")
        object.__setattr__(self, "level", level)

    @property
    def is_identity(self) -> bool:
        """Whether it leaves images unchanged: Gaussian or speckle noise of variance 0 (the clean images)."""
        return self.noise != "poisson" and self.level == 0


_MNIST_VARIANCES = (0.0, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5)
_MNIST_CONTRASTS = (0.2, 0.3, 0.4, 0.5, 1.0, 1.5, 2.0, 2.5)
_CIFAR_VARIANCES = (0.0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 2e-2, 3e-2)
_CIFAR_CONTRASTS = (0.4, 0.5, 1.0, 1.5, 2.0, 2.5)

_SUITE_LEVELS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": {"gaussian": _MNIST_VARIANCES, "speckle": _MNIST_VARIANCES, "poisson": _MNIST_CONTRASTS},
    "cifar10": {"gaussian": _CIFAR_VARIANCES, "speckle": _CIFAR_VARIANCES, "poisson": _CIFAR_CONTRASTS},
    "cifar100": {"gaussian": _CIFAR_VARIANCES, "speckle": _CIFAR_VARIANCES, "poisson": _CIFAR_CONTRASTS},
}


def noise_suite(dataset: str) -> tuple[Perturbation, ...]:
    """Every noise setting the paper tests ``dataset`` on, Gaussian, then speckle, then Poisson."""
    if dataset not in _SUITE_LEVELS:
        raise ValueError(f"no noise suite for dataset {dataset!r}: expected one of {', '.join(_SUITE_LEVELS)}")
    return tuple(
        Perturbation(noise, level) for noise, levels in _SUITE_LEVELS[dataset].items() for level in levels
    )


def noise_seed(dataset: str, perturbation: Perturbation) -> int:
    """A seed that depends on (dataset, noise, level) only: stable across processes and machines."""
    key = f"{dataset}/{perturbation.noise}/{perturbation.level!r}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def perturb(
    images: torch.Tensor,
    perturbation: Perturbation,
    *,
    generator: torch.Generator | None = None,
    clip: bool = False,
) -> torch.Tensor:
    """Apply one noise setting to a batch. images: (N, C, H, W) in [0, 1]; returns the same shape."""
    if perturbation.noise == "gaussian":
        return gaussian_noise(images, perturbation.level, generator=generator, clip=clip)
    if perturbation.noise == "speckle":
        return speckle_noise(images, perturbation.level, generator=generator, clip=clip)
    return poisson_noise(change_contrast(images, perturbation.level), generator=generator, clip=clip)


def perturb_test_set(
    images: torch.Tensor,
    dataset: str,
    perturbation: Perturbation,
    *,
    clip: bool = False,
) -> torch.Tensor:
    """The noisy copy of a whole test set that every model of a sweep is scored on.

    images: (N, C, H, W) in [0, 1] on any device; returns the same shape on the same device. The noise
    is drawn from a CPU generator seeded by :func:`noise_seed`, so it is bit-identical on CPU and GPU and
    for every model, whatever batch size the caller later evaluates with.
    """
    generator = torch.Generator(device="cpu").manual_seed(noise_seed(dataset, perturbation))
    return perturb(images, perturbation, generator=generator, clip=clip)
