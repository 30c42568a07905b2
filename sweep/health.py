"""Trial health: a model that did not train must never become a row in a results table.

A trial is *diverged* when its training loss turns NaN or infinite at any step (see
``training.NonFiniteLoss``), or when :class:`HealthMonitor` finds that it did not learn. The monitor judges
once, after the epoch in which the trial reaches ``MIN_STEPS`` optimizer steps (the first epoch of every
paper recipe; in the smoke profile, LeNet's single epoch of 100 steps; never a smoke WRN trial's two
steps). Its window is every step up to then; with q = a quarter of the window's steps (rounded down),

- *late*, the mean loss of the window's last q steps, and *early*, that of its first q steps;
- the trial learned when late < ``LOSS_FACTOR`` x ln(classes) (ln(classes) is the loss of a uniform guess),
- or when its loss is still clearly falling: late < ``FALL_FACTOR`` x min(early, ln(classes));
- it diverged when neither holds, or when its clean test accuracy after that epoch is at chance (below
  ``CHANCE_FACTOR`` x 100/classes %); later, a clean accuracy that falls back to chance ends it too.

Why this rule (per-step losses of real MNIST runs, smoke profile: LeNet, batch 64, SGD Nesterov, 100 steps,
q = 25; tests/data/loss_traces.json holds them). The mean of the whole window, judged before, counted the
plateau at ln(10) = 2.303 that every LeNet starts on: LeNet D and PD of seed 1 at lr 0.01 had window means
2.111 and 2.117 (not below 0.9 ln 10 = 2.072) and were ended, although their late means were 1.645 and 1.663
and their test accuracy 57 % and 53 %. Judged late, all 160 trials (8 LeNets x seeds 0-19) at lr 0.01 learn;
the slowest, PB of seed 17, has late 2.127 (0.924 ln 10: not below 0.9 ln 10) after early 2.305, and the
falling clause keeps it (32 % test accuracy). Collapses settle at ln(classes): PA and PB at lr 0.1 (smoke,
seeds 2, 3, 6, 8) and A (seed 1) and PA (seed 4) at lr 0.1 in the paper recipe's first epoch (469 steps) end
with late means 2.303-2.312 (1.000-1.004 ln 10) and one class predicted. Falling is measured against
min(early, ln(classes)), not early alone, because a collapse often starts with a spike: PA at lr 0.5 (seed
1) has early 3.409 and late 2.318, a fall of 32 % that only returns to the uniform guess; a trial that
learned and then collapsed (PB at lr 0.1, seed 6: 1.192 in its second quarter, late 2.312) is not falling
either. So the healthy slow starters sit at or below 0.924 ln(classes) late and the collapses at or above
1.000. 0.97 lies nearer the collapses because they sit on a fixed point, the uniform guess, where a 25-step
mean varies by 0.002-0.003 (0.07 away: over twenty times that), while the slow starters' late losses have a
long tail (the next slowest are at 0.884 and 0.870), so that side keeps the wider margin (0.106). Over all
258 recorded runs (lr 0.01 to 0.5, smoke and paper windows) the loss verdict then agrees with the test
accuracy: every run it ends scores at most 16.2 %, every run it keeps at least 20.8 %. For CIFAR-100 (ln 100
= 4.605) the bounds are 4.145 late, or 4.467 late and falling, and a WRN whose first-epoch mean sits near
4.14 is judged on that epoch's last quarter, below its mean while the loss falls (not measured: CIFAR is not
on these machines).

The monitor's state is its fields (saved in the trial's checkpoint with ``dataclasses.asdict``): besides
counters, the losses of the window's steps taken so far (fewer than ``MIN_STEPS`` floats; emptied once
judged), so a trial interrupted and resumed between epochs gets the verdict it would have got unbroken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["CHANCE_FACTOR", "FALL_FACTOR", "LOSS_FACTOR", "MIN_STEPS", "HealthMonitor"]

MIN_STEPS = 100  # fewer steps than this are too few to judge whether a model learns
LOSS_FACTOR = 0.9  # a late loss above 0.9 ln(classes) has not clearly left the uniform guess ...
FALL_FACTOR = 0.97  # ... unless it is 3 % below both its early loss and ln(classes): still falling
CHANCE_FACTOR = 1.5  # a clean accuracy below 1.5 x chance (15 % for 10 classes) is chance


@dataclass
class HealthMonitor:
    """Judges a trial epoch by epoch. Its fields are its state, saved in the trial's checkpoint.

    steps: optimizer steps taken so far; judged: whether the learning verdict was given; window: the loss of
    every step taken and not yet judged (plain floats, in order).
    """

    num_classes: int
    steps: int = 0
    judged: bool = False
    window: list[float] = field(default_factory=list)

    def check_epoch(self, epoch: int, step_losses: Sequence[float], accuracy: float | None) -> str | None:
        """The reason the trial diverged after ``epoch`` (1-based), or None while it is healthy.

        step_losses: the training loss of each optimizer step of the epoch, in order (``EpochStats.step_losses``);
        accuracy: clean test accuracy in percent after the epoch, None when the epoch was not evaluated
        (see ``sweep.training.OverheadBudget``): then only the losses are judged.
        """
        for step, value in enumerate(step_losses):
            if not math.isfinite(value):
                return f"loss is {value} at epoch {epoch} step {step + 1}"
        self.steps += len(step_losses)
        chance = 100.0 / self.num_classes
        at_chance = accuracy is not None and accuracy < CHANCE_FACTOR * chance
        if not self.judged:
            self.window.extend(float(value) for value in step_losses)
            if self.steps < MIN_STEPS:
                return None
            window, self.window, self.judged = self.window, [], True
            quarter = max(1, len(window) // 4)
            early, late = sum(window[:quarter]) / quarter, sum(window[-quarter:]) / quarter
            uniform = math.log(self.num_classes)
            learned = late < LOSS_FACTOR * uniform
            falling = late < FALL_FACTOR * min(early, uniform)
            if not (learned or falling):
                first = self.steps - len(window) + 1
                return (
                    f"training loss {late:.3f} over steps {self.steps - quarter + 1}-{self.steps} (epoch {epoch}) is "
                    f"neither clearly below ln({self.num_classes}) = {uniform:.3f} nor clearly falling "
                    f"(steps {first}-{first + quarter - 1}: {early:.3f})"
                )
            if at_chance:
                return f"clean test accuracy {accuracy:.2f} % after epoch {epoch} is at chance ({chance:g} %)"
            return None
        if at_chance:
            return f"clean test accuracy fell back to chance: {accuracy:.2f} % at epoch {epoch}"
        return None
