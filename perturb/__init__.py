"""Test-time perturbations and the paper's noise suites (pure torch, device-agnostic, no I/O)."""

from perturb.noise import change_contrast, gaussian_noise, poisson_noise, speckle_noise
from perturb.suites import NOISES, Perturbation, noise_seed, noise_suite, perturb, perturb_test_set

__all__ = [
    "NOISES",
    "Perturbation",
    "change_contrast",
    "gaussian_noise",
    "noise_seed",
    "noise_suite",
    "perturb",
    "perturb_test_set",
    "poisson_noise",
    "speckle_noise",
]
