"""A study as a TOML file: its data sets, models, recipe fields, seeds, test suites and, optionally, a search
of the push-pull layer's (h, alpha). The paper's own sweeps are such files (sweep/studies/*.toml).

The format (every key but ``models`` optional)::

    description = "ResNet-18 against LeNet-A on MNIST"
    datasets = ["mnist"]             # each model is trained on each (a model may set its own)
    seeds = 2                        # seeds 0..N-1 (--seeds wins)
    suites = ["paper", "shot"]       # scored at the end: the paper's by each trial, others after the last one
    include = ["lenet"]              # the models of built-in studies, before this file's own

    [[models]]                       # one table per model family; a list is a grid axis
    arch = "resnet"                  # lenet | wrn | resnet, and that architecture's fields:
    depth = 18                       #   lenet: variant; wrn: depth, width, dropout; resnet: depth, stem
    pushpull = [false, true]         # h, alpha: push-pull's (defaults 2 and 1)

    [recipe]                         # fields of sweep.specs.Recipe for every architecture ...
    epochs = 15
    [recipe.resnet]                  # ... or for one; a list is a grid axis (milestones: a list of lists)
    lr = [0.01, 0.05]

    [search]                         # instead of a grid of push-pull's h and alpha:
    algorithm = "optuna"             # Ray Tune's Optuna searcher
    samples = 12                     # points (h, alpha) tried, each on every seed
    metric = "noise/gaussian"        # or a list of two, e.g. ["noise/gaussian", "clean"] (sweep.objectives)
    mode = "max"
    scheduler = "asha"               # Tune's ASHA stops the worst points early ("none": every point trains)
    h = [1.0, 3.0]                   # the ranges searched: [low, high]
    alpha = [0.0, 2.0]

Grids expand in the order the file writes them: per seed, per model table, per data set, then the model's
axes (the first written outermost), then the recipe's. Trials that come out equal are merged.

A malformed file raises :class:`StudyError`, whose message is one line naming the file, the key and what
was expected.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import LENET_VARIANTS, ModelSpec
from sweep.datasets import DATASETS
from sweep.specs import ARCHS, Recipe, TrialSpec, apply_overrides, default_recipe, recipe_field_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = ["BUILT_IN", "SEARCH_ALGORITHMS", "SEARCH_SCHEDULERS", "Search", "Study", "StudyError", "load_study"]

BUILT_IN = Path(__file__).with_name("studies")
SEARCH_ALGORITHMS = ("optuna",)
SEARCH_SCHEDULERS = ("asha", "none")
SEARCHED = ("h", "alpha")
# What a [[models]] table may set, per architecture (besides arch, pushpull, h, alpha and datasets).
_MODEL_FIELDS = {"lenet": ("variant",), "wrn": ("depth", "width", "dropout"), "resnet": ("depth", "stem")}
_TOP_KEYS = ("description", "datasets", "seeds", "suites", "include", "models", "recipe", "search")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyError(ValueError):
    """A study file that cannot run; the message is one line: the file, the key, what was expected."""


@dataclass(frozen=True)
class Search:
    """A search of push-pull's (h, alpha) with Ray Tune.

    Attributes:
        algorithm: Tune's searcher (``optuna``).
        samples: points (h, alpha) tried; each trains once per seed.
        metrics: what the searcher optimises, one or two names of sweep.objectives (the first is the one
            ASHA stops on).
        modes: ``max`` or ``min`` per metric.
        scheduler: ``asha`` or ``none``.
        ranges: parameter -> (low, high), for ``h`` and ``alpha``.
    """

    algorithm: str
    samples: int
    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    scheduler: str
    ranges: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class _ModelTable:
    """One [[models]] table: the data sets it trains on and its fields, each a tuple of values (an axis)."""

    datasets: tuple[str, ...]
    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    def points(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(data set, the model's fields) of every point of the table's grid, in grid order."""
        names = [name for name, _ in self.axes]
        for dataset in self.datasets:
            for values in itertools.product(*(values for _, values in self.axes)):
                yield dataset, dict(zip(names, values))


@dataclass(frozen=True)
class Study:
    """A parsed, validated study. ``recipe``: scope (None: every architecture) -> axes of Recipe fields."""

    name: str
    description: str
    source: str
    models: tuple[_ModelTable, ...]
    recipe: dict[str | None, tuple[tuple[str, tuple[Any, ...]], ...]]
    seeds: int
    suites: tuple[str, ...]
    search: Search | None = None

    @property
    def reference(self) -> str:
        """How a command line names the study: a built-in's name, or the path of a user's file."""
        return self.name if Path(self.source).parent == BUILT_IN else self.source

    def pairs(self) -> list[tuple[str, ModelSpec]]:
        """Every (data set, model) of the study, in grid order, duplicates merged (a searched push-pull model
        with the paper's h and alpha)."""
        pairs = {(dataset, _model_spec(fields, dataset)): None for t in self.models for dataset, fields in t.points()}
        return list(pairs)

    def trials(
        self,
        profile: str = "paper",
        seeds: int | None = None,
        overrides: list[tuple[str | None, str, Any]] | None = None,
    ) -> list[TrialSpec]:
        """The trials, one per (data set, model, recipe, seed), duplicates (same trial key) merged, in grid
        order. With a search, the push-pull model's trials are the searcher's to make (:meth:`search_base`):
        these are the rest, the plain twins. ``overrides`` (``--set``) apply after the study's recipe fields.
        Raises ValueError for bad seeds, a profile or an override that makes a recipe invalid."""
        seeds = self.seeds if seeds is None else seeds
        if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
            raise ValueError(f"--seeds must be an integer >= 1, got {seeds!r}")
        trials: dict[str, TrialSpec] = {}
        for seed in range(seeds):
            for dataset, model in self.pairs():
                if self.search is not None and model.pushpull:
                    continue
                for recipe in self._recipes(model.arch, profile):
                    spec = apply_overrides(TrialSpec(dataset, model, recipe, seed), overrides or [])
                    trials.setdefault(spec.key, spec)
        return list(trials.values())

    def search_base(
        self, profile: str = "paper", overrides: list[tuple[str | None, str, Any]] | None = None
    ) -> TrialSpec | None:
        """The searched push-pull model's trial at the paper's h and alpha, seed 0: each searched trial is
        it with the searcher's h and alpha and its own seed. None without a search."""
        if self.search is None:
            return None
        dataset, model = next((d, m) for d, m in self.pairs() if m.pushpull)
        (recipe,) = self._recipes(model.arch, profile)
        return apply_overrides(TrialSpec(dataset, model, recipe, 0), overrides or [])

    def _recipes(self, arch: str, profile: str) -> list[Recipe]:
        axes = dict(self.recipe.get(None, ())) | dict(self.recipe.get(arch, ()))
        base = default_recipe(arch, profile)
        recipes = []
        for values in itertools.product(*axes.values()):
            try:
                recipes.append(dataclasses.replace(base, **dict(zip(axes, values))))
            except ValueError as error:
                raise ValueError(f"{self.source}: [recipe] for {arch}: {error}") from None
        return recipes


def load_study(name_or_path: str) -> Study:
    """The study named ``name_or_path`` (a built-in: a file of sweep/studies) or in the TOML file at that
    path (any name with a ``/`` or ending in ``.toml``). Raises StudyError."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise StudyError(f"no study file {name_or_path}")
        name = path.stem
        if not _NAME.match(name):
            raise StudyError(f"{path}: a study's file name names its sweep: letters, digits, '_', '.', '-' only")
    else:
        path = BUILT_IN / f"{name_or_path}.toml"
        if not path.is_file():
            raise StudyError(
                f"unknown sweep {name_or_path!r}: expected one of {', '.join(built_in_names())}, or a study file (.toml)"
            )
        name = name_or_path
    return _parse(name, path, _read(path))


def built_in_names() -> list[str]:
    """The built-in studies, in the order the catalog lists them: the paper's sweeps as paper_full includes
    them, paper_full, then any other by name."""
    names = sorted(path.stem for path in BUILT_IN.glob("*.toml"))
    order = [*_read(BUILT_IN / "paper_full.toml")["include"], "paper_full"]
    return [n for n in order if n in names] + [n for n in names if n not in order]


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise StudyError(f"{path}: not TOML: {error}") from None
    except OSError as error:
        raise StudyError(f"{path}: cannot read it: {error.strerror}") from None


def _parse(name: str, path: Path, data: dict[str, Any]) -> Study:
    where = str(path)
    unknown = [key for key in data if key not in _TOP_KEYS]
    if unknown:
        raise StudyError(f"{where}: unknown key {unknown[0]!r}: expected one of {', '.join(_TOP_KEYS)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"{where}: description: expected a string")
    datasets = _names(where, "datasets", data.get("datasets", []), DATASETS)
    seeds = data.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise StudyError(f"{where}: seeds: expected an integer >= 1, got {seeds!r}")
    suites = _suites(where, data.get("suites", ["paper"]))
    tables = [table for included in _includes(where, data.get("include", []), name) for table in included.models]
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise StudyError(f"{where}: models: expected tables ([[models]])")
    tables += [_model_table(f"{where}: models[{i}]", table, datasets) for i, table in enumerate(models)]
    if not tables:
        raise StudyError(f"{where}: models: expected at least one [[models]] table (or an include)")
    recipe = _recipe(where, data.get("recipe", {}))
    search = _search(where, data["search"]) if "search" in data else None
    study = Study(name, description, where, tuple(tables), recipe, seeds, suites, search)
    _check_grid(where, study)
    return study


def _names(where: str, key: str, value: Any, known: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str) or item not in known:  # a list or a table in the list: no name
            raise StudyError(f"{where}: {key}: unknown {item!r}: expected one of {', '.join(known)}")
    return tuple(values)


def _suites(where: str, value: Any) -> tuple[str, ...]:
    from perturb import SUITES

    suites = _names(where, "suites", value, SUITES)
    if "paper" not in suites:
        raise StudyError(f"{where}: suites: expected 'paper' among them (every trial is scored on it)")
    return suites


def _includes(where: str, value: Any, name: str) -> list[Study]:
    if not isinstance(value, list):
        raise StudyError(f"{where}: include: expected a list of built-in study names")
    studies = []
    for included in value:
        path = BUILT_IN / f"{included}.toml"
        if not isinstance(included, str) or not path.is_file() or included == name:
            raise StudyError(f"{where}: include: unknown {included!r}: expected one of {', '.join(built_in_names())}")
        studies.append(load_study(included))
    return studies


def _model_table(where: str, table: dict[str, Any], datasets: tuple[str, ...]) -> _ModelTable:
    if "arch" not in table:
        raise StudyError(f"{where}: arch: missing: expected one of {', '.join(ARCHS)}")
    arch = table["arch"]
    if arch not in ARCHS:
        raise StudyError(f"{where}: arch: unknown {arch!r}: expected one of {', '.join(ARCHS)}")
    allowed = ("arch", "datasets", "pushpull", "h", "alpha", *_MODEL_FIELDS[arch])
    for key in table:
        if key not in allowed:
            raise StudyError(f"{where}: {key}: not a field of a {arch} model: expected one of {', '.join(allowed)}")
    own = _names(f"{where}", "datasets", table["datasets"], DATASETS) if "datasets" in table else datasets
    if not own:
        raise StudyError(f"{where}: datasets: expected data sets to train on (the study's or the model's own)")
    axes = []
    for key, value in table.items():
        if key == "datasets":
            continue
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values:
            raise StudyError(f"{where}: {key}: an empty list: expected at least one value")
        for item in values:
            _check_model_value(where, key, item)
        axes.append((key, values))
    return _ModelTable(own, tuple(axes))


# The type each model field takes, and its words in an error.
_MODEL_TYPES = {
    "arch": (str, "a string"),
    "variant": (str, f"a LeNet variant ({', '.join(LENET_VARIANTS)})"),
    "depth": (int, "an integer"),
    "width": (int, "an integer"),
    "dropout": ((int, float), "a number"),
    "stem": (str, "'cifar' or 'imagenet'"),
    "pushpull": (bool, "true or false"),
    "h": ((int, float), "a number >= 1"),
    "alpha": ((int, float), "a number >= 0"),
}


def _check_model_value(where: str, key: str, value: Any) -> None:
    kind, words = _MODEL_TYPES[key]
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise StudyError(f"{where}: {key}: expected {words} or a list of them, got {value!r}")


def _model_spec(fields: dict[str, Any], dataset: str) -> ModelSpec:
    info = DATASETS[dataset]
    extra = {"in_channels": info.channels} if fields["arch"] == "resnet" else {}
    return ModelSpec(**fields, **extra, num_classes=info.num_classes)


def _recipe(where: str, value: Any) -> dict[str | None, tuple[tuple[str, tuple[Any, ...]], ...]]:
    if not isinstance(value, dict):
        raise StudyError(f"{where}: recipe: expected a table ([recipe])")
    scopes: dict[str | None, dict[str, Any]] = {None: {}}
    for key, item in value.items():
        if isinstance(item, dict):
            if key not in ARCHS:
                raise StudyError(f"{where}: recipe.{key}: unknown architecture: expected one of {', '.join(ARCHS)}")
            scopes[key] = item
        else:
            scopes[None][key] = item
    parsed = {}
    for scope, fields in scopes.items():
        prefix = "recipe" if scope is None else f"recipe.{scope}"
        axes = []
        for key, item in fields.items():
            values = _recipe_axis(item) if key == "milestones" else (tuple(item) if isinstance(item, list) else (item,))
            if not values:
                raise StudyError(f"{where}: {prefix}.{key}: an empty list: expected at least one value")
            try:
                axes.append((key, tuple(recipe_field_value(key, v) for v in values)))
            except ValueError as error:
                raise StudyError(f"{where}: {prefix}.{key}: {error}") from None
        parsed[scope] = tuple(axes)
    return parsed


def _recipe_axis(value: Any) -> tuple[Any, ...]:
    """Milestones are a list: a list of lists is their axis."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return tuple(value)
    return (value,)


def _search(where: str, value: Any) -> Search:
    if not isinstance(value, dict):
        raise StudyError(f"{where}: search: expected a table ([search])")
    from sweep.objectives import check_metric

    allowed = ("algorithm", "samples", "metric", "mode", "scheduler", *SEARCHED)
    for key in value:
        if key not in allowed:
            raise StudyError(f"{where}: search.{key}: unknown key: expected one of {', '.join(allowed)}")
    algorithm = value.get("algorithm", "optuna")
    if algorithm not in SEARCH_ALGORITHMS:
        raise StudyError(
            f"{where}: search.algorithm: unknown {algorithm!r}: expected one of {', '.join(SEARCH_ALGORITHMS)}"
        )
    samples = value.get("samples")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise StudyError(f"{where}: search.samples: expected an integer >= 1, got {samples!r}")
    metrics = value.get("metric", "noise")
    metrics = tuple(metrics) if isinstance(metrics, list) else (metrics,)
    if not 1 <= len(metrics) <= 2 or not all(isinstance(m, str) for m in metrics):
        raise StudyError(
            f"{where}: search.metric: expected a metric name or a list of two, got {value.get('metric')!r}"
        )
    try:
        metrics = tuple(check_metric(m) for m in metrics)
    except ValueError as error:
        raise StudyError(f"{where}: search.metric: {error}") from None
    modes = value.get("mode", "max")
    modes = tuple(modes) if isinstance(modes, list) else (modes,) * len(metrics)
    if len(modes) != len(metrics) or any(m not in ("max", "min") for m in modes):
        raise StudyError(f"{where}: search.mode: expected 'max' or 'min' (one per metric), got {value.get('mode')!r}")
    scheduler = value.get("scheduler", "none")
    if scheduler not in SEARCH_SCHEDULERS:
        raise StudyError(
            f"{where}: search.scheduler: unknown {scheduler!r}: expected one of {', '.join(SEARCH_SCHEDULERS)}"
        )
    ranges = {}
    for key, lowest in (("h", 1.0), ("alpha", 0.0)):
        bounds = value.get(key)
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
        ):
            raise StudyError(f"{where}: search.{key}: expected a range [low, high] of two numbers, got {bounds!r}")
        low, high = float(bounds[0]), float(bounds[1])
        if not lowest <= low < high:
            raise StudyError(f"{where}: search.{key}: expected {lowest:g} <= low < high, got [{low:g}, {high:g}]")
        ranges[key] = (low, high)
    return Search(algorithm, samples, metrics, modes, scheduler, ranges)


def _check_grid(where: str, study: Study) -> None:
    """Every model of the grid builds and fits its data set; a search has one push-pull model to search."""
    for table in study.models if study.search is not None else ():  # before a model with them fails to build
        for key in SEARCHED:
            if key in dict(table.axes):
                raise StudyError(f"{where}: models: {key} is searched ([search]): leave it out of [[models]]")
    for dataset, fields in (point for table in study.models for point in table.points()):
        try:
            model = _model_spec(fields, dataset)
            TrialSpec(dataset, model, default_recipe(model.arch, "smoke"))
        except ValueError as error:
            shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
            raise StudyError(f"{where}: models ({shown}) on {dataset}: {error}") from None
    if study.search is None:
        return
    pushpull = {(d, m.name) for d, m in study.pairs() if m.pushpull}
    if len(pushpull) != 1:
        raise StudyError(
            f"{where}: search: expected exactly one push-pull model to search (pushpull = [false, true] of one model "
            f"on one data set), got {len(pushpull)}"
        )
    if any(len(values) > 1 for axes in study.recipe.values() for _, values in axes):
        raise StudyError(f"{where}: recipe: a search trains one recipe: expected no list (grid axis) in [recipe]")
