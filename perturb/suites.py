"""Noise models by name, the noise suites registered for scoring, and the deterministic noisy test sets.

A *noise* is named ``FAMILY[-p<PEAK>][-clip]`` (:class:`Noise`); a :class:`Perturbation` is a noise at one
level. A *suite* (:data:`SUITES`) lists the perturbations a trained model is scored on: ``paper`` at the
end of training, any other by ``python -m sweep.evaluate``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "NOISES",
    "NOISE_FAMILIES",
    "PAPER_SUITE",
    "SUITES",
    "Noise",
    "Perturbation",
    "Suite",
    "noise_seed",
    "noise_suite",
    "apply_perturbation",
    "perturb_test_set",
    "suite_settings",
]

NOISES = ("gaussian", "speckle", "poisson")  # the paper's three

# Every family, with what its level means. Images are in [0, 1]; C is the contrast factor of change_contrast.
NOISE_FAMILIES = {
    "gaussian": "I + N(0, LEVEL): LEVEL is the variance (skimage)",
    "speckle": "I + I * N(0, LEVEL): LEVEL is the variance (skimage)",
    "poisson": "contrast change to C = LEVEL, then skimage's Poisson noise (the paper's text)",
    "poisson-c1clean": "as poisson, but no noise at C = 1, as the paper's CIFAR numbers imply",
    "contrast": "contrast change to C = LEVEL alone, no noise",
    "shot": "Poisson(I * LEVEL) / LEVEL: LEVEL photons at intensity 1 (ImageNet-C's shot noise)",
    "contrast-shot": "contrast change to C = LEVEL, then shot noise with PEAK photons (name: contrast-shot-p<PEAK>)",
}
_NAME = re.compile(r"(?P<family>[a-z0-9-]+?)(?:-p(?P<peak>[0-9]+(?:\.[0-9]+)?))?(?P<clip>-clip)?")
# Above C = 3 a [0, 1] image goes below -1, outside the range skimage's Poisson noise accepts.
MAX_CONTRAST = 3.0


@dataclass(frozen=True)
class Noise:
    """A noise model: a family of :data:`NOISE_FAMILIES` with its fixed parameters.

    Attributes:
        family: a key of NOISE_FAMILIES.
        peak: photons at intensity 1, for ``contrast-shot`` only (``shot`` takes its peak as the level).
        clip: clip the noisy images to [0, 1] (the name ends in ``-clip``).
    """

    family: str
    peak: float | None = None
    clip: bool = False

    def __post_init__(self) -> None:
        if self.family not in NOISE_FAMILIES:
            raise ValueError(
                f"unknown noise {self.family!r}: expected one of {', '.join(NOISE_FAMILIES)} (with -p<PEAK> for contrast-shot, -clip to clip)"
            )
        if self.family == "contrast-shot" and self.peak is None:
            raise ValueError(
                f"contrast-shot needs a peak: contrast-shot-p<PEAK>, e.g. contrast-shot-p12, got {self.name!r}"
            )
        if self.family != "contrast-shot" and self.peak is not None:
            raise ValueError(f"a peak (-p<PEAK>) goes with contrast-shot only, got {self.name!r}")
        if self.peak is not None and not (math.isfinite(self.peak) and self.peak > 0):
            raise ValueError(f"shot noise peak must be > 0, got {self.peak}")

    @property
    def level_is_contrast(self) -> bool:
        """Whether the level is the contrast factor C of a contrast change (as in the paper's Poisson cells)."""
        return self.family in ("poisson", "poisson-c1clean", "contrast", "contrast-shot")

    @property
    def name(self) -> str:
        """``FAMILY[-p<PEAK>][-clip]``, as metric names and tables carry it."""
        peak = "" if self.peak is None else f"-p{self.peak:g}"
        return f"{self.family}{peak}{'-clip' if self.clip else ''}"

    @classmethod
    def parse(cls, name: str) -> Noise:
        """The noise named ``name``: the inverse of :attr:`name`."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError(
                f"unknown noise {name!r}: expected one of {', '.join(NOISE_FAMILIES)} (with -p<PEAK> for contrast-shot, -clip to clip)"
            )
        peak = match["peak"]
        return cls(match["family"], None if peak is None else float(peak), match["clip"] is not None)

    def check_level(self, level: float) -> None:
        """Raise ValueError (one line) when ``level`` is not a level of this family."""
        if not math.isfinite(level):
            raise ValueError(f"{self.name} level must be finite, got {level}")
        if self.family in ("gaussian", "speckle") and level < 0:
            raise ValueError(f"{self.family} noise variance must be >= 0, got {level}")
        if self.family in ("poisson", "poisson-c1clean") and not 0 < level <= MAX_CONTRAST:
            raise ValueError(f"poisson contrast factor C must be in (0, {MAX_CONTRAST:g}], got {level}")
        if self.family in ("contrast", "contrast-shot") and not level > 0:
            raise ValueError(f"contrast factor C must be > 0, got {level}")
        if self.family == "shot" and not level > 0:
            raise ValueError(f"shot noise peak must be > 0, got {level}")

    def severity(self, level: float) -> float:
        """A sort key of this noise's levels, the least severe first: a variance grows with the noise, a peak of
        photons (``shot``) shrinks with it; a contrast C degrades the image both below and above 1, so its levels
        keep their own order, C = 1 between the two sides (as the paper's Figures 5-7 draw them)."""
        return -level if self.family == "shot" else level

    def apply(self, images: torch.Tensor, level: float, generator: torch.Generator | None) -> torch.Tensor:
        """The noisy copy of ``images`` (N, C, H, W) in [0, 1] at ``level``; same shape and device."""
        noisy = self._unclipped(images, level, generator)
        return noisy.clamp(0, 1) if self.clip else noisy

    def _unclipped(self, images: torch.Tensor, level: float, generator: torch.Generator | None) -> torch.Tensor:
        # torch loads with the first noisy image, not with the suites: a command line checks a suite's name at once.
        from perturb.noise import change_contrast, gaussian_noise, poisson_noise, shot_noise, speckle_noise

        if self.family == "gaussian":
            return gaussian_noise(images, level, generator=generator)
        if self.family == "speckle":
            return speckle_noise(images, level, generator=generator)
        if self.family == "shot":
            return shot_noise(images, level, generator=generator)
        if self.family == "poisson-c1clean" and level == 1:
            return images
        contrasted = change_contrast(images, level)
        if self.family == "contrast":
            return contrasted
        if self.family == "contrast-shot":
            return shot_noise(contrasted, self.peak, generator=generator)
        return poisson_noise(contrasted, generator=generator)


@dataclass(frozen=True)
class Perturbation:
    """One test-time noise setting: a noise (named as :attr:`Noise.name`) at one level.

    Attributes:
        noise: e.g. ``"gaussian"`` or ``"speckle"`` (level = variance, >= 0), ``"poisson"`` (level = contrast
            factor C in (0, 3], applied before the Poisson noise), ``"contrast-shot-p12"`` (level = C).
        level: as :data:`NOISE_FAMILIES` says for the noise's family.
    """

    noise: str
    level: float

    def __post_init__(self) -> None:
        Noise.parse(self.noise).check_level(float(self.level))
        object.__setattr__(self, "level", float(self.level))

    @property
    def is_identity(self) -> bool:
        """Whether it leaves images in [0, 1] unchanged: Gaussian or speckle variance 0, a contrast of 1 without noise."""
        return self.same_images() is None

    def same_images(self) -> Perturbation | None:
        """The setting whose noisy images are identical to this one's (it is scored once), None for the clean
        images: ``poisson-c1clean`` at C != 1 is ``poisson``; ``contrast-clip`` at C <= 1 stays in [0, 1]."""
        noise = Noise.parse(self.noise)
        if (noise.family in ("gaussian", "speckle") and self.level == 0) or (
            noise.family in ("contrast", "poisson-c1clean") and self.level == 1
        ):
            return None
        if noise.family == "poisson-c1clean":
            return Perturbation(replace(noise, family="poisson").name, self.level)
        if noise.family == "contrast" and noise.clip and self.level <= 1:
            return Perturbation("contrast", self.level)
        return self


_MNIST_VARIANCES = (0.0, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5)
_MNIST_CONTRASTS = (0.2, 0.3, 0.4, 0.5, 1.0, 1.5, 2.0, 2.5)
_CIFAR_VARIANCES = (0.0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 2e-2, 3e-2)
_CIFAR_CONTRASTS = (0.4, 0.5, 1.0, 1.5, 2.0, 2.5)

_MNIST_LEVELS = {"gaussian": _MNIST_VARIANCES, "speckle": _MNIST_VARIANCES, "poisson": _MNIST_CONTRASTS}
_CIFAR_LEVELS = {"gaussian": _CIFAR_VARIANCES, "speckle": _CIFAR_VARIANCES, "poisson": _CIFAR_CONTRASTS}

# The paper tests MNIST and CIFAR only. A data set it does not test takes the levels of the one it looks like:
# grey 28x28 images (Fashion-MNIST, KMNIST) MNIST's, colour 32x32 photographs (SVHN) CIFAR's.
_SUITE_LEVELS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": _MNIST_LEVELS,
    "fashionmnist": _MNIST_LEVELS,  # grey 28x28, as MNIST
    "kmnist": _MNIST_LEVELS,  # grey 28x28, as MNIST
    "cifar10": _CIFAR_LEVELS,
    "cifar100": _CIFAR_LEVELS,
    "svhn": _CIFAR_LEVELS,  # colour 32x32, as CIFAR
}


def noise_suite(dataset: str) -> tuple[Perturbation, ...]:
    """Every noise setting the paper tests ``dataset`` on, Gaussian, then speckle, then Poisson."""
    return tuple(Perturbation(noise, level) for noise, levels in _levels_of(dataset).items() for level in levels)


def _levels_of(dataset: str) -> dict[str, tuple[float, ...]]:
    if dataset not in _SUITE_LEVELS:
        raise ValueError(f"no noise suite for dataset {dataset!r}: expected one of {', '.join(_SUITE_LEVELS)}")
    return _SUITE_LEVELS[dataset]


# The paper's contrasts on MNIST span those of every data set; ImageNet-C's shot-noise peaks, severities 1-5.
VARIANT_CONTRASTS = _MNIST_CONTRASTS
VARIANT_PEAKS = (60.0, 12.0, 3.0)
SHOT_PEAKS = (60.0, 25.0, 12.0, 5.0, 3.0)


def _poisson_variants(dataset: str) -> tuple[Perturbation, ...]:
    _levels_of(dataset)
    noises = ["poisson", "poisson-c1clean", "contrast", *(f"contrast-shot-p{peak:g}" for peak in VARIANT_PEAKS)]
    return tuple(Perturbation(noise, c) for noise in noises for c in VARIANT_CONTRASTS)


def _shot(dataset: str) -> tuple[Perturbation, ...]:
    _levels_of(dataset)
    return tuple(Perturbation("shot-clip", peak) for peak in SHOT_PEAKS)


@dataclass(frozen=True)
class Suite:
    """A named list of perturbations per data set. settings: dataset -> perturbations, in scoring order."""

    name: str
    description: str
    settings: Callable[[str], tuple[Perturbation, ...]]


PAPER_SUITE = "paper"
SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite(
            PAPER_SUITE,
            "the paper's Gaussian, speckle and contrast + Poisson levels (scored at the end of training)",
            noise_suite,
        ),
        Suite(
            "poisson-variants",
            "readings of the paper's contrast + Poisson protocol: skimage's Poisson, no noise at C = 1, contrast alone, "
            f"shot noise of peak {', '.join(f'{p:g}' for p in VARIANT_PEAKS)} after the contrast change; C = "
            + ", ".join(f"{c:g}" for c in VARIANT_CONTRASTS),
            _poisson_variants,
        ),
        Suite(
            "shot",
            "ImageNet-C's shot noise, severities 1-5 (peak "
            + ", ".join(f"{p:g}" for p in SHOT_PEAKS)
            + "), clipped to [0, 1]",
            _shot,
        ),
    )
}


def suite_settings(suite: str, dataset: str) -> tuple[Perturbation, ...]:
    """The perturbations of suite ``suite`` (a key of :data:`SUITES`) for ``dataset``."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}: expected one of {', '.join(SUITES)}")
    return SUITES[suite].settings(dataset)


def noise_seed(dataset: str, perturbation: Perturbation) -> int:
    """A seed that depends on (dataset, noise, level) only: stable across processes and machines. A clipped
    noise draws what its unclipped twin draws, so that clipping is the only difference between them."""
    source = perturbation.same_images() or perturbation
    unclipped = replace(Noise.parse(source.noise), clip=False).name
    key = f"{dataset}/{unclipped}/{source.level!r}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def apply_perturbation(
    images: torch.Tensor, perturbation: Perturbation, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply one noise setting to a batch. images: (N, C, H, W) in [0, 1]; returns the same shape."""
    return Noise.parse(perturbation.noise).apply(images, perturbation.level, generator)


def perturb_test_set(images: torch.Tensor, dataset: str, perturbation: Perturbation) -> torch.Tensor:
    """The noisy copy of a whole test set that every model of a sweep is scored on.

    images: (N, C, H, W) in [0, 1] on any device; returns the same shape on the same device. The noise
    is drawn from a CPU generator seeded by :func:`noise_seed`, so it is bit-identical on CPU and GPU and
    for every model, whatever batch size the caller later evaluates with.
    """
    import torch

    generator = torch.Generator(device="cpu").manual_seed(noise_seed(dataset, perturbation))
    return apply_perturbation(images, perturbation, generator=generator)
