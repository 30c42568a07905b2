"""Names of the metrics a trial reports to Ray Tune and MLflow. Accuracies are in percent.

Per epoch (MLflow ``step`` = epoch, counted from 1): ``epoch`` (epochs trained so far), ``train_loss``, ``train_acc``, ``test_acc`` (clean
test images), ``lr``, ``epoch_seconds``, ``images_per_second``. After the last epoch, one metric per
setting of the data set's noise suite, named ``acc/<noise>/<level>`` with the level written by
``repr(float)`` (``acc/gaussian/0.001``, ``acc/poisson/2.5``). ``python -m sweep.evaluate`` adds the
scores of any other suite to the same run as ``acc/<suite>/<noise>/<level>``
(``acc/poisson-variants/contrast-shot-p12/0.5``). Split on ``/`` and parse the level with ``float``, or
use :func:`parse_noise_metric`.

The same scores again as curves, for MLflow's chart view (which plots a metric against its step): one metric
per noise, ``curve/<noise>`` (``curve/<suite>/<noise>`` for another suite), with step = the index of the
level in increasing order and the levels themselves in the param ``curve_levels/<noise>``
(``0.0,0.001,0.01,...``) and, at the same steps, in the metric ``level/<noise>`` (``level/<suite>/<noise>``),
which a line chart can take as its x axis (X-axis: Metric). See :func:`noise_curves`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from perturb import PAPER_SUITE

if TYPE_CHECKING:  # only a type here: the training loop is none of this module's business
    from sweep.training import EpochStats

__all__ = ["EPOCH_METRICS", "NoiseCurve", "epoch_metrics", "noise_curves", "noise_metric", "parse_noise_metric"]

EPOCH_METRICS = ("epoch", "train_loss", "train_acc", "test_acc", "lr", "epoch_seconds", "images_per_second")


def epoch_metrics(epoch: int, stats: EpochStats, test_acc: float | None) -> dict[str, float]:
    """The :data:`EPOCH_METRICS` of epoch ``epoch`` (counted from 1) trained as ``stats`` says; ``test_acc``
    only when the epoch was evaluated (not None). ``lr`` is the rate of the epoch's last step."""
    metrics = {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_acc": stats.accuracy,
        "test_acc": test_acc,
        "lr": stats.lr,
        "epoch_seconds": stats.seconds,
        "images_per_second": stats.images_per_second,
    }
    return {name: metrics[name] for name in EPOCH_METRICS if metrics[name] is not None}


def _prefixed(kind: str, suite: str) -> str:
    """The start of the names of one kind of noise metric: ``kind`` for the paper's suite, ``kind/<suite>``
    for any other (so that the paper's names stay what they were before other suites existed)."""
    return kind if suite == PAPER_SUITE else f"{kind}/{suite}"


def noise_metric(noise: str, level: float, suite: str = PAPER_SUITE) -> str:
    """The name of the accuracy under one noise setting of ``suite``: ``acc/<noise>/<level>`` for the
    paper's suite, ``acc/<suite>/<noise>/<level>`` for any other."""
    return f"{_prefixed('acc', suite)}/{noise}/{float(level)!r}"


def parse_noise_metric(name: str, suite: str = PAPER_SUITE) -> tuple[str, float] | None:
    """(noise, level) of a name made by :func:`noise_metric` for ``suite``, None for any other metric."""
    parts = name.split("/")
    prefix = _prefixed("acc", suite).split("/")
    if len(parts) != len(prefix) + 2 or parts[:-2] != prefix:
        return None
    try:
        return parts[-2], float(parts[-1])
    except ValueError:
        return None


@dataclass(frozen=True)
class NoiseCurve:
    """The accuracies under one noise, in increasing level order: ``metric`` takes ``accuracies[i]`` at
    step ``i`` and ``level_metric`` takes ``levels[i]``; ``levels_param`` holds ``levels`` as text."""

    metric: str
    levels_param: str
    levels: tuple[float, ...]
    accuracies: tuple[float, ...]
    level_metric: str

    @property
    def levels_text(self) -> str:
        return ",".join(repr(level) for level in self.levels)


def noise_curves(scores: dict[str, float], suite: str = PAPER_SUITE) -> list[NoiseCurve]:
    """The curves of the noise metrics of ``suite`` among ``scores`` (metric name -> accuracy), one per
    noise in the order the noises first appear; other metrics are ignored."""
    by_noise: dict[str, dict[float, float]] = {}
    for name, value in scores.items():
        parsed = parse_noise_metric(name, suite)
        if parsed is not None:
            by_noise.setdefault(parsed[0], {})[parsed[1]] = float(value)
    curves = []
    for noise, points in by_noise.items():
        levels = tuple(sorted(points))
        curves.append(
            NoiseCurve(
                f"{_prefixed('curve', suite)}/{noise}",
                f"{_prefixed('curve_levels', suite)}/{noise}",
                levels,
                tuple(points[level] for level in levels),
                f"{_prefixed('level', suite)}/{noise}",
            )
        )
    return curves
