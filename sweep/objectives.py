"""What a search metric means: the one home of the objective a study's (h, alpha) search maximises.

A study that searches push-pull's (h, alpha) names its objective by one of :data:`METRICS`' names (or
``noise/<family>`` for a noise of the paper's suite). The trainable reports :func:`metric_value` to Ray Tune
every epoch it scores the noises; the aggregator (sweep.search_report) takes the same function per trial,
so the number Optuna saw and the number the report ranks are one and the same. Every metric is an accuracy
in percent, so a search maximises it.

Pure: no torch, no pandas; the paper's noises come from :mod:`perturb`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from perturb import NOISES, Perturbation

__all__ = ["METRICS", "check_metric", "metric_families", "metric_label", "metric_value"]

_FAMILY_PREFIX = "noise/"
# The paper's noise families as the y axis of a figure says them.
_FAMILY_WORDS = {"gaussian": "Gaussian noise", "speckle": "speckle noise", "poisson": "contrast + Poisson noise"}

METRICS = {
    "clean": "the clean test accuracy (%)",
    "noise": (
        "the mean accuracy (%) over every setting of the paper's noise suite that changes the images (Gaussian, "
        "speckle and contrast + Poisson; Gaussian and speckle variance 0 are the clean images again and are left "
        "out), each setting weighing the same"
    ),
    **{
        f"{_FAMILY_PREFIX}{family}": (
            f"the mean accuracy (%) over the settings of the paper's {_FAMILY_WORDS[family]} that change the images"
        )
        for family in NOISES
    },
}


def check_metric(name: str) -> str:
    """``name`` when it names a search metric (a key of :data:`METRICS`), else ValueError (one line)."""
    if name not in METRICS:
        raise ValueError(f"unknown search metric {name!r}: expected one of {', '.join(METRICS)}")
    return name


def metric_families(name: str) -> tuple[str, ...]:
    """The noise families metric ``name`` averages over: none for ``clean``, the paper's three for ``noise``."""
    check_metric(name)
    if name == "clean":
        return ()
    return NOISES if name == "noise" else (name.removeprefix(_FAMILY_PREFIX),)


def metric_label(name: str) -> str:
    """What metric ``name`` is, as an axis says it: ``mean accuracy under Gaussian noise (%)``."""
    families = metric_families(name)
    if not families:
        return "clean test accuracy (%)"
    if len(families) > 1:
        return "mean accuracy under noise (%)"
    return f"mean accuracy under {_FAMILY_WORDS[families[0]]} (%)"


def metric_value(clean: float | None, accuracies: Mapping[tuple[str, float], float], name: str) -> float:
    """The value of search metric ``name`` (:data:`METRICS`) for one trial.

    ``clean``: the clean test accuracy (%), None when not scored; ``accuracies``: (noise, level) -> accuracy
    (%), the paper's suite or any part of it (other noises are ignored). A setting that leaves the images
    unchanged (:attr:`perturb.Perturbation.is_identity`: Gaussian or speckle variance 0) is no noise and is
    skipped. Returns the clean accuracy, or the plain mean of the accuracies the metric averages over; NaN
    when there is none, and NaN when one of them is NaN (a model that scored NaN is not robust).
    """
    families = metric_families(name)
    if not families:
        return math.nan if clean is None else float(clean)
    chosen = [
        float(accuracy)
        for (noise, level), accuracy in accuracies.items()
        if noise in families and not Perturbation(noise, level).is_identity
    ]
    return math.fsum(chosen) / len(chosen) if chosen else math.nan
