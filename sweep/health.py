"""Trial health: a model that did not train must never become a row in a results table.

A trial is *diverged* when its training loss turns NaN or infinite at any step (see
``training.NonFiniteLoss``), or when :class:`HealthMonitor` finds that it did not learn: once it has
trained for at least ``MIN_STEPS`` steps (the first epoch of every paper recipe; in the smoke profile,
LeNet's single epoch; never a smoke WRN trial's two steps), its training loss must be clearly below
ln(classes), the loss of a uniform guess, and its clean test accuracy above chance; later, a clean
accuracy that falls back to chance ends it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CHANCE_FACTOR", "LOSS_FACTOR", "MIN_STEPS", "HealthMonitor"]

MIN_STEPS = 100  # fewer steps than this are too few to judge whether a model learns
LOSS_FACTOR = 0.9  # a loss above 0.9 ln(classes) has not clearly left the uniform guess
CHANCE_FACTOR = 1.5  # a clean accuracy below 1.5 x chance (15 % for 10 classes) is chance


@dataclass
class HealthMonitor:
    """Judges a trial epoch by epoch. Its fields are its state, saved in the trial's checkpoint."""

    num_classes: int
    steps: int = 0
    judged: bool = False

    def check_epoch(self, epoch: int, loss: float, accuracy: float, steps: int) -> str | None:
        """The reason the trial diverged after ``epoch`` (1-based), or None while it is healthy.

        loss: mean training loss of the epoch; accuracy: clean test accuracy in percent; steps: the
        optimizer steps of the epoch.
        """
        self.steps += steps
        chance = 100.0 / self.num_classes
        at_chance = accuracy < CHANCE_FACTOR * chance
        if not self.judged:
            if self.steps < MIN_STEPS:
                return None
            self.judged = True
            uniform = math.log(self.num_classes)
            if not loss < LOSS_FACTOR * uniform:
                return f"training loss {loss:.3f} after epoch {epoch} is not clearly below ln({self.num_classes}) = {uniform:.3f}"
            if at_chance:
                return f"clean test accuracy {accuracy:.2f} % after epoch {epoch} is at chance ({chance:g} %)"
            return None
        if at_chance:
            return f"clean test accuracy fell back to chance: {accuracy:.2f} % at epoch {epoch}"
        return None
