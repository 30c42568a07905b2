"""Facts that command lines need before anything heavy loads: this module imports nothing but the
standard library, so that ``--help`` and argument errors answer at once (torch, Ray and MLflow load after
the arguments are parsed)."""

from __future__ import annotations

__all__ = ["DEFAULT_OVERHEAD_BUDGET", "PROFILES"]

# The recipes a sweep can be trained with (sweep.specs.default_recipe): the paper's, and a capped one.
PROFILES = ("paper", "smoke")
# The most of a trial's time its per-epoch test evaluation and checkpoints may take (sweep.training.OverheadBudget).
DEFAULT_OVERHEAD_BUDGET = 0.05
