"""The MLflow runs of sweeps as the aggregator and the evaluator read them: every run of the sweeps'
experiments, then one run per trial (a rerun or a second sweep of the same trial is passed over), then
the runs of the recipes asked for."""

from __future__ import annotations

from sweep.catalog import STUDIES
from sweep.cli import first_line
from sweep.tables import UNKNOWN_RECIPE, recipe_id
from sweep.tracking import TrackingUnavailable, open_client

__all__ = ["RunsUnavailable", "read_runs", "select_recipes", "select_runs"]


class RunsUnavailable(Exception):
    """The runs asked for cannot be read or are not there; the message is one line."""


def read_runs(tracking_uri: str, sweeps: list[str]) -> tuple[list, list[str]]:
    """Every run of the experiments named ``sweeps`` (when empty: every experiment of the store named
    after a sweep of the catalog), and the names of the experiments that hold them, in catalog order."""
    try:
        client = open_client(tracking_uri)
        names = sweeps or list(STUDIES)
        experiments = [e for e in (client.get_experiment_by_name(n) for n in names) if e is not None]
        runs, token = [], None
        while experiments:
            page = client.search_runs([e.experiment_id for e in experiments], max_results=5000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except TrackingUnavailable as error:
        raise RunsUnavailable(str(error)) from None
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds for a store it cannot read
        raise RunsUnavailable(f"cannot read the MLflow store {tracking_uri}: {first_line(error)}") from None
    if not runs:
        raise RunsUnavailable(f"no runs found for {', '.join(sweeps) or 'any sweep'} in {tracking_uri}")
    held = {e.experiment_id for e in experiments if any(r.info.experiment_id == e.experiment_id for r in runs)}
    return runs, [e.name for e in experiments if e.experiment_id in held]


def _trial_identity(run: object) -> tuple | None:
    """(recipe id, dataset, model, h, alpha, seed) from a run's params, None when they lack a recipe."""
    recipe = recipe_id(run)
    if recipe == UNKNOWN_RECIPE:
        return None
    params = run.data.params
    # A field that does not apply is absent in runs of this engine and "None" in older ones: the same trial.
    return (recipe, *(params.get(name, "None") for name in ("dataset", "model", "h", "alpha", "seed")))


def _latest(runs: list) -> object:
    """The latest FINISHED run, or the latest at all when none finished."""
    return max(
        runs, key=lambda r: (r.info.status == "FINISHED", r.info.end_time or 0, r.info.start_time, r.info.run_id)
    )


def select_runs(runs: list) -> tuple[list, dict[str, int]]:
    """One run per trial, the latest finished one: runs with the same ``trial_key`` tag, or with the same
    (recipe, dataset, model, h, alpha, seed) in their params, are one trial (a rerun, a second sweep).

    Returns the chosen runs, sorted by trial key, and for each chosen run that had duplicates how many
    runs it was chosen over (by run id).
    """
    identity_of_key: dict[str, tuple] = {}
    for run in runs:
        key, identity = run.data.tags.get("trial_key"), _trial_identity(run)
        if key is not None and identity is not None:
            identity_of_key.setdefault(key, identity)
    trials: dict[tuple, list] = {}
    for run in runs:
        key = run.data.tags.get("trial_key")
        if key is not None:
            trials.setdefault(identity_of_key.get(key, ("trial_key", key)), []).append(run)
    chosen = sorted(
        (_latest(group) for group in trials.values()), key=lambda r: (r.data.tags["trial_key"], r.info.run_id)
    )
    passed_over = {_latest(group).info.run_id: len(group) - 1 for group in trials.values() if len(group) > 1}
    return chosen, passed_over


def select_recipes(chosen: list, wanted: list[str]) -> list:
    """The runs of the recipes ``wanted`` (all when empty); an id no run has is RunsUnavailable."""
    if not wanted:
        return chosen
    ids = [recipe_id(run) for run in chosen]  # parsed from each run's params once
    held = {rid: run.data.params.get("arch") for rid, run in zip(ids, chosen)}
    unknown = [r for r in wanted if r not in held]
    if unknown:
        listed = ", ".join(f"{rid} ({arch})" for rid, arch in sorted(held.items()))
        raise RunsUnavailable(f"unknown recipe {unknown[0]!r}: the runs hold {listed}")
    return [run for rid, run in zip(ids, chosen) if rid in wanted]
