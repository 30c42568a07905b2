"""Test-time perturbations, the paper's noise suites and the suites registered for re-scoring (pure torch,
device-agnostic, no I/O)."""

from perturb.noise import change_contrast, gaussian_noise, poisson_noise, shot_noise, speckle_noise
from perturb.suites import (
    NOISE_FAMILIES,
    NOISES,
    PAPER_SUITE,
    SUITES,
    Noise,
    Perturbation,
    Suite,
    apply_perturbation,
    noise_seed,
    noise_suite,
    perturb_test_set,
    suite_settings,
)

# The package's face: the noise ops and perturb.suites' __all__ again, a deliberate twin of that list.
__all__ = [
    "NOISES",
    "NOISE_FAMILIES",
    "PAPER_SUITE",
    "SUITES",
    "Noise",
    "Perturbation",
    "Suite",
    "change_contrast",
    "gaussian_noise",
    "noise_seed",
    "noise_suite",
    "apply_perturbation",
    "perturb_test_set",
    "poisson_noise",
    "shot_noise",
    "speckle_noise",
    "suite_settings",
]
