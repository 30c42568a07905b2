"""A study's search of push-pull's (h, alpha), run by Ray Tune: Optuna suggests the points, Tune's ASHA
stops the worst early, and what neither has is here: every point trains once per seed, and the plain twins
(one per seed) run first, outside the search and the scheduler.

A searched trial's config is the search base's (``config["spec"]``, sweep.study.Study.search_base) with
``config["searched"] = {"h": ..., "alpha": ..., "seed": ...}``; :meth:`sweep.specs.TrialSpec.from_config`
makes its spec. A twin's config is a whole spec with ``config["searched"] = None``.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search import Searcher

if TYPE_CHECKING:
    from sweep.specs import TrialSpec
    from sweep.storage import SweepStorage
    from sweep.study import Search

__all__ = ["SEARCH_STEP", "StudySearcher", "TwinsTrainThrough", "result_metric", "search_setup", "searched_specs"]

# The grid Optuna draws h and alpha on: two decimals, so that names and tables read (h1.73, not h1.7342).
SEARCH_STEP = 0.01


def result_metric(metric: str) -> str:
    """The name under which a trial reports search metric ``metric`` (sweep.objectives) to Tune."""
    return f"search/{metric}"


def _searched(config: dict[str, Any]) -> bool:
    return bool(config.get("searched"))


class StudySearcher(Searcher):
    """Hands out the twins' configs first, then each point the inner searcher suggests once per seed; tells
    the inner searcher a point's result, the mean over its seeds, once all its seeds ended. Saves and restores
    its state (Tune saves the inner searcher's beside it), so that ``--resume`` goes on with the same search."""

    def __init__(self, searcher: Searcher, twins: list[dict[str, Any]], seeds: int) -> None:
        metric, mode = searcher.metric, searcher.mode
        first = (metric[0], mode[0]) if isinstance(metric, list) else (metric, mode)
        super().__init__(metric=first[0], mode=first[1])
        self.searcher = searcher
        self.metrics = metric if isinstance(metric, list) else [metric]
        self.twins = list(twins)
        self.seeds = seeds
        self.twin_ids: set[str] = set()
        self.points = 0
        self.open_point: tuple[str, dict[str, Any], int] | None = None  # (point id, config, next seed)
        self.point_of: dict[str, str] = {}  # trial id -> point id
        self.results: dict[str, list[dict[str, Any] | None]] = {}  # point id -> each ended seed's result

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.twins:
            self.twin_ids.add(trial_id)
            return self.twins.pop(0)
        if self.open_point is None:
            point_id = f"point-{self.points}"
            config = self.searcher.suggest(point_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self.points += 1
            self.open_point = (point_id, config, 0)
        point_id, config, seed = self.open_point
        self.open_point = (point_id, config, seed + 1) if seed + 1 < self.seeds else None
        self.point_of[trial_id] = point_id
        suggested = copy.deepcopy(config)
        suggested["searched"] = {**suggested["searched"], "seed": seed}
        return suggested

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Optuna prunes nothing here: stopping early is the scheduler's."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        point_id = self.point_of.get(trial_id)
        if point_id is None:  # a twin
            return
        ended = self.results.setdefault(point_id, [])
        ended.append(None if error or not result else result)
        if len(ended) < self.seeds:
            return
        means = {}
        for name in self.metrics:
            values = [r[name] for r in ended if r is not None and r.get(name) is not None]
            if values:
                means[name] = sum(values) / len(values)
        finished = len(means) == len(self.metrics)
        self.searcher.on_trial_complete(point_id, means if finished else None, error=not finished)

    # Tune saves a wrapping searcher's own state with get_state and the searcher it wraps (Optuna's) on its own.
    def get_state(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != "searcher"}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class TwinsTrainThrough(AsyncHyperBandScheduler):
    """Tune's ASHA over the searched trials; the plain twins train every epoch, whatever their metric."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if _searched(trial.config):
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if not _searched(trial.config):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if _searched(trial.config):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if _searched(trial.config):
            super().on_trial_remove(tune_controller, trial)


def searched_specs(storage: SweepStorage, sweep: str) -> list[TrialSpec]:
    """The specs of the searched trials Tune made so far in ``sweep``'s folder (each trial folder's
    ``params.json``), in folder order: the trials a search made are known only once it made them."""
    from sweep.specs import TrialSpec

    specs = []
    for folder in storage.folders(sweep):
        text = storage.read_text(f"{sweep}/{folder}/params.json")
        if text is None:
            continue
        config = json.loads(text)
        if _searched(config):
            specs.append(TrialSpec.from_config(config))
    return specs


def search_setup(
    search: Search, base: TrialSpec, twins: list[TrialSpec], seeds: int, slots: int
) -> tuple[dict[str, Any], Searcher, TwinsTrainThrough | None, int]:
    """(the param space's searched part, the searcher, the scheduler or None, the number of trials) of a
    study's search: the twins, then ``search.samples`` points of ``base`` on ``seeds`` seeds each, at most
    ``slots`` trials at once (Tune creates a searcher's trials one at a time without that bound)."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its import set INFO: "A new study created..."

    space = {
        "searched": {name: tune.quniform(low, high, SEARCH_STEP) for name, (low, high) in sorted(search.ranges.items())}
    }
    metrics = [result_metric(m) for m in search.metrics]
    # One metric: Optuna's TPE; two: its multi-objective sampler, on the same seed every launch.
    sampler = OptunaSearch(
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=list(search.modes) if len(metrics) > 1 else search.modes[0],
        seed=0,
    )
    twin_configs = [{"spec": twin.to_dict(), "searched": None} for twin in twins]
    searcher = ConcurrencyLimiter(StudySearcher(sampler, twin_configs, seeds), max_concurrent=max(1, slots))
    scheduler = None
    if search.scheduler == "asha":
        scheduler = TwinsTrainThrough(
            time_attr="epoch",
            metric=metrics[0],
            mode=search.modes[0],
            max_t=base.recipe.epochs,
            grace_period=1,
            reduction_factor=3,
        )
    return space, searcher, scheduler, len(twins) + search.samples * seeds
