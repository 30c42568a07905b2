"""Names of the metrics a trial reports to Ray Tune and MLflow. Accuracies are in percent.

Per epoch (MLflow ``step`` = epoch, counted from 1): ``epoch`` (epochs trained so far), ``train_loss``, ``train_acc``, ``test_acc`` (clean
test images), ``lr``, ``epoch_seconds``, ``images_per_second``. After the last epoch, one metric per
setting of the data set's noise suite, named ``acc/<noise>/<level>`` with the level written by
``repr(float)`` (``acc/gaussian/0.001``, ``acc/poisson/2.5``): split on ``/`` and parse the level with
``float``, or use :func:`parse_noise_metric`.
"""

from __future__ import annotations

__all__ = ["EPOCH_METRICS", "noise_metric", "parse_noise_metric"]

EPOCH_METRICS = ("epoch", "train_loss", "train_acc", "test_acc", "lr", "epoch_seconds", "images_per_second")


def noise_metric(noise: str, level: float) -> str:
    """``acc/<noise>/<level>``: the name of the accuracy under one noise setting."""
    return f"acc/{noise}/{float(level)!r}"


def parse_noise_metric(name: str) -> tuple[str, float] | None:
    """(noise, level) of a name made by :func:`noise_metric`, None for any other metric."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "acc":
        return None
    try:
        return parts[1], float(parts[2])
    except ValueError:
        return None
