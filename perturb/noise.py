"""Test-time noise models, as batched torch ops on images in [0, 1] (before mean/std normalisation).

They follow ``skimage.util.random_noise`` (the noise the paper's reference code applied), per image of a
batch, with ``clip=False`` by default as in the reference:

- Gaussian: ``I + N(0, variance)``;
- speckle: ``I + I * N(0, variance)``;
- Poisson: ``Poisson(I * s) / s`` with ``s`` the next power of two of the number of distinct values in the
  image; an image with negative values is first mapped to [0, 1] by ``(I + 1) / (max + 1)`` and mapped
  back afterwards (skimage's signed-range path). The paper applies it after a contrast change
  ``I_C = (I - 0.5) * C + 0.5`` (:func:`change_contrast`).

and, beside them, shot noise with a photon count as ImageNet-C draws it: ``Poisson(I * peak) / peak``
(:func:`shot_noise`), where the noise strength is set by ``peak`` rather than by the image's grey levels.

Every op runs on the device of its batch. Random draws are made on the device of ``generator`` (the
batch's device when None) and moved to the batch: a CPU generator gives the same noise on every device.
"""

from __future__ import annotations

import torch

__all__ = ["change_contrast", "gaussian_noise", "poisson_noise", "shot_noise", "speckle_noise"]


def _standard_normal(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = images.device if generator is None else generator.device
    draws = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
    return draws.to(images.device)


def _low_clip(images: torch.Tensor) -> torch.Tensor:
    """skimage's lower clipping bound per image: -1 for an image with negative values, else 0. (N, 1, ...)"""
    per_image_min = images.flatten(1).amin(dim=1)
    low = torch.where(per_image_min < 0, -1.0, 0.0).to(images.dtype)
    return low.view(-1, *([1] * (images.dim() - 1)))


def _clip(noisy: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return torch.maximum(noisy, _low_clip(images)).clamp(max=1.0)


def _zero_mean_noise(
    name: str, images: torch.Tensor, variance: float, generator: torch.Generator | None, clip: bool, relative: bool
) -> torch.Tensor:
    """``images + N(0, variance)``: Gaussian noise; with ``relative``, ``images + images * N(0, variance)``:
    speckle noise."""
    if not variance >= 0:
        raise ValueError(f"{name} noise variance must be >= 0, got {variance}")
    draws = _standard_normal(images, generator)
    noisy = images + (images * draws if relative else draws) * variance**0.5
    return _clip(noisy, images) if clip else noisy


def gaussian_noise(
    images: torch.Tensor, variance: float, *, generator: torch.Generator | None = None, clip: bool = False
) -> torch.Tensor:
    """``images + N(0, variance)``. images: (N, C, H, W) float in [0, 1]; returns the same shape."""
    return _zero_mean_noise("gaussian", images, variance, generator, clip, relative=False)


def speckle_noise(
    images: torch.Tensor, variance: float, *, generator: torch.Generator | None = None, clip: bool = False
) -> torch.Tensor:
    """``images + images * N(0, variance)``. images: (N, C, H, W) float in [0, 1]; returns the same shape."""
    return _zero_mean_noise("speckle", images, variance, generator, clip, relative=True)


def change_contrast(images: torch.Tensor, contrast: float) -> torch.Tensor:
    """``(images - 0.5) * contrast + 0.5``: contrast > 1 stretches around mid-grey, < 1 flattens."""
    if not contrast > 0:
        raise ValueError(f"contrast factor C must be > 0, got {contrast}")
    return (images - 0.5) * contrast + 0.5


def poisson_noise(
    images: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    clip: bool = False,
) -> torch.Tensor:
    """Poisson noise with ``skimage.util.random_noise(mode="poisson")`` semantics, image by image.

    images: (N, ...) float, each image with values >= -1; returns the same shape and dtype.
    """
    flat = images.flatten(1)
    ordered = flat.sort(dim=1).values
    distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)
    # Photon-count scale: the next power of two of the number of distinct grey values.
    scale = torch.exp2(torch.ceil(torch.log2(distinct.to(torch.float64)))).to(images.dtype).unsqueeze(1)

    signed = (ordered[:, :1] < 0).to(images.dtype)
    span = signed * ordered[:, -1:] + 1  # old_max + 1 on the signed path, 1 otherwise
    rate = (flat + signed) / span * scale
    if bool((rate < 0).any()):
        raise ValueError("poisson noise needs images with values >= -1 (skimage's signed range)")

    device = images.device if generator is None else generator.device
    counts = torch.poisson(rate.to(device), generator=generator).to(images.device)
    noisy = (counts / scale * span - signed).view_as(images)
    return _clip(noisy, images) if clip else noisy


def shot_noise(
    images: torch.Tensor,
    peak: float,
    *,
    generator: torch.Generator | None = None,
    clip: bool = False,
) -> torch.Tensor:
    """Photon shot noise ``Poisson(images * peak) / peak``: ``peak`` photons are expected at intensity 1.

    ImageNet-C's shot noise is this with ``clip=True`` (clipped to [0, 1]) and peaks 60, 25, 12, 5, 3 for
    its severities 1-5. The noise has the image's mean and variance ``images / peak``. Negative intensities
    (an image after a contrast change above 1) emit no photons: their rate is 0.
    images: (N, ...) float; returns the same shape and dtype.
    """
    if not peak > 0:
        raise ValueError(f"shot noise peak must be > 0, got {peak}")
    rate = images.clamp(min=0) * peak
    device = images.device if generator is None else generator.device
    counts = torch.poisson(rate.to(device), generator=generator).to(images.device)
    noisy = counts / peak
    return noisy.clamp(0, 1) if clip else noisy
