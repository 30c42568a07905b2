"""Facts that command lines need before anything heavy loads: this module imports nothing but the
standard library, so that ``--help`` and argument errors answer at once (torch, Ray and MLflow load after
the arguments are parsed)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_DATA_ROOT", "DEFAULT_MARGIN", "DEFAULT_OVERHEAD_BUDGET", "PROFILES"]

# Where the data sets are, and are downloaded to, without --data-root or $SWEEP_DATA_ROOT (sweep.data).
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "pushpull-sweep" / "data"

# The recipes a sweep can be trained with (sweep.specs.default_recipe): the paper's, and a capped one.
PROFILES = ("paper", "smoke")
# The most of a trial's time its per-epoch test evaluation and checkpoints may take (sweep.training.OverheadBudget).
DEFAULT_OVERHEAD_BUDGET = 0.05
DEFAULT_MARGIN = 1.0  # points of accuracy within which push-pull and its twin count as equivalent (claims)
