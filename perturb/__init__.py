"""Test-time perturbations, the paper's noise suites and the suites registered for re-scoring (pure torch,
device-agnostic, no I/O).

The suites and their settings import without torch; the noise ops load torch on their first use, so that a
command line that checks a suite's name answers at once."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from perturb.noise import change_contrast, gaussian_noise, poisson_noise, shot_noise, speckle_noise

_NOISE_OPS = ("change_contrast", "gaussian_noise", "poisson_noise", "shot_noise", "speckle_noise")

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


def __getattr__(name: str) -> Any:
    if name in _NOISE_OPS:  # PEP 562: perturb.noise (torch) when a noise op is first asked for
        return getattr(importlib.import_module("perturb.noise"), name)
    raise AttributeError(f"module 'perturb' has no attribute {name!r}")
