"""The built-in studies: the paper's five sweeps and ``paper_full``, each a TOML file of sweep/studies read
by :mod:`sweep.study` (the format a user's own study takes)."""

from __future__ import annotations

from typing import Any

from sweep.specs import TrialSpec
from sweep.study import Study, built_in_names, load_study

__all__ = ["STUDIES", "build_sweep"]

STUDIES: dict[str, Study] = {name: load_study(name) for name in built_in_names()}


def build_sweep(
    name: str,
    *,
    profile: str = "paper",
    seeds: int | None = None,
    overrides: list[tuple[str | None, str, Any]] | None = None,
) -> list[TrialSpec]:
    """The trials of study ``name`` (a built-in name or a study file's path), one per (model, recipe, seed),
    duplicates (same trial key) merged, in grid order; ``seeds`` None: the study's own.

    Raises ValueError (a StudyError for the study itself) for an unknown study, profile or seeds, or an
    override that makes a recipe invalid.
    """
    study = STUDIES[name] if name in STUDIES else load_study(name)
    return study.trials(profile, seeds, overrides)
