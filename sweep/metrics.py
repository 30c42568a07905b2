"""Names of the metrics a trial reports to Ray Tune and MLflow. Accuracies are in percent.

Per epoch (MLflow ``step`` = epoch, counted from 1): ``epoch`` (epochs trained so far), ``train_loss``, ``train_acc``, ``test_acc`` (clean
test images), ``lr``, ``epoch_seconds``, ``images_per_second``. After the last epoch, one metric per
setting of the data set's noise suite, named ``acc/<noise>/<level>`` with the level written by
``repr(float)`` (``acc/gaussian/0.001``, ``acc/poisson/2.5``). ``python -m sweep.evaluate`` adds the
scores of any other suite to the same run as ``acc/<suite>/<noise>/<level>``
(``acc/poisson-variants/contrast-shot-p12/0.5``). Split on ``/`` and parse the level with ``float``, or
use :func:`parse_noise_metric`.
"""

from __future__ import annotations

from perturb import PAPER_SUITE

__all__ = ["EPOCH_METRICS", "noise_metric", "parse_noise_metric"]

EPOCH_METRICS = ("epoch", "train_loss", "train_acc", "test_acc", "lr", "epoch_seconds", "images_per_second")


def noise_metric(noise: str, level: float, suite: str = PAPER_SUITE) -> str:
    """The name of the accuracy under one noise setting of ``suite``: ``acc/<noise>/<level>`` for the
    paper's suite, ``acc/<suite>/<noise>/<level>`` for any other."""
    prefix = "acc" if suite == PAPER_SUITE else f"acc/{suite}"
    return f"{prefix}/{noise}/{float(level)!r}"


def parse_noise_metric(name: str, suite: str = PAPER_SUITE) -> tuple[str, float] | None:
    """(noise, level) of a name made by :func:`noise_metric` for ``suite``, None for any other metric."""
    parts = name.split("/")
    prefix = ["acc"] if suite == PAPER_SUITE else ["acc", suite]
    if len(parts) != len(prefix) + 2 or parts[:-2] != prefix:
        return None
    try:
        return parts[-2], float(parts[-1])
    except ValueError:
        return None
