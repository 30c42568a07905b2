"""The aggregator's tables, as pure functions of MLflow runs and the paper's numbers: no I/O.

A *cell* is (recipe, dataset, model, noise, level): runs of different recipes never share a mean. Every
statistic over seeds is taken within one cell; the push-pull effect pairs a push-pull model with its plain
twin seed by seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
from scipy import stats

from models import plain_name
from perturb import NOISES, PAPER_SUITE, Noise, Perturbation
from sweep.catalog import SWEEPS
from sweep.metrics import parse_noise_metric
from sweep.paper import PAPER_TABLES, PaperTable, paper_cells, paper_results
from sweep.specs import Recipe, describe_recipe

__all__ = [
    "CELL_KEY",
    "RECIPE_SCHEMA",
    "RESULT_SCHEMA",
    "Aggregation",
    "aggregate",
    "cell_statistics",
    "comparison",
    "excluded_trials",
    "has_measurements",
    "paper_table",
    "poisson_cells_as",
    "pushpull_effect",
    "reading_fit",
    "recipe_id",
    "recipe_of",
    "recipes_table",
    "tables_of_sweeps",
    "tidy_results",
    "variant_fit",
]

RESULT_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("recipe", pa.string()),
        ("trial_key", pa.string()),
        ("run_id", pa.string()),
        ("dataset", pa.string()),
        ("arch", pa.string()),
        ("model", pa.string()),
        ("depth", pa.int64()),
        ("width", pa.int64()),
        ("pushpull", pa.bool_()),
        ("h", pa.float64()),
        ("alpha", pa.float64()),
        ("seed", pa.int64()),
        ("noise", pa.string()),
        ("level", pa.float64()),
        ("accuracy", pa.float64()),
        ("epochs_trained", pa.int64()),
        ("status", pa.string()),
        ("start_time", pa.timestamp("ms", tz="UTC")),
        ("end_time", pa.timestamp("ms", tz="UTC")),
    ]
)
RECIPE_SCHEMA = pa.schema(
    [
        ("recipe", pa.string()),
        ("arch", pa.string()),
        ("profile", pa.string()),
        ("changes", pa.string()),
        ("epochs", pa.int64()),
        ("lr", pa.float64()),
        ("milestones", pa.string()),
        ("lr_decay", pa.float64()),
        ("momentum", pa.float64()),
        ("nesterov", pa.bool_()),
        ("weight_decay", pa.float64()),
        ("batch_size", pa.int64()),
        ("augment", pa.bool_()),
        ("normalize", pa.bool_()),
        ("warmup_epochs", pa.float64()),
        ("grad_clip", pa.float64()),
        ("max_train_batches", pa.int64()),
        ("max_test_images", pa.int64()),
        ("eval_batch_size", pa.int64()),
        ("trials", pa.int64()),
    ]
)
CELL_KEY = ["recipe", "dataset", "model", "pushpull", "h", "alpha", "noise", "level"]
MODEL = ["dataset", "model", "pushpull", "h", "alpha"]
NOISE_ORDER = {"clean": 0, "gaussian": 1, "speckle": 2, "poisson": 3}  # other noises follow, by name


def noise_rank(noises: pd.Series) -> pd.Series:
    """A sort key: clean, the paper's noises in its order, then every other noise (sort by name after it)."""
    return noises.map(lambda noise: NOISE_ORDER.get(noise, len(NOISE_ORDER)))


UNKNOWN_RECIPE = "unknown"  # a run whose params do not make a valid recipe (an engine older than recipes)
CONFIDENCE = 0.95


def _param(params: dict[str, str], name: str, kind: type) -> object:
    value = params.get(name)
    if value is None or value == "None":
        return None
    if kind is bool:
        return value == "True"
    return kind(float(value)) if kind is int else kind(value)


def recipe_of(run: object) -> Recipe | None:
    """The recipe a run trained with, from its params; None when they do not make one."""
    try:
        return Recipe.from_params(run.data.params)
    except (ValueError, TypeError):
        return None


def recipe_id(run: object) -> str:
    """The id of the recipe a run trained with (:attr:`Recipe.id`), ``unknown`` when its params make none."""
    recipe = recipe_of(run)
    return UNKNOWN_RECIPE if recipe is None else recipe.id


def tidy_results(runs: list, suite: str = PAPER_SUITE) -> pd.DataFrame:
    """One row per (run, noise, level) of ``suite`` with :data:`RESULT_SCHEMA`'s columns, sorted deterministically.

    The clean accuracy is one row per run (noise ``clean``, level 0). In the paper's suite the settings that
    leave the images unchanged (Gaussian and speckle variance 0) are that same number and make no row of
    their own; another suite keeps every setting it lists (a curve over contrast holds C = 1).
    """
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        base = {
            "sweep": run.data.tags.get("sweep"),
            "recipe": recipe_id(run),
            "trial_key": run.data.tags.get("trial_key"),
            "run_id": run.info.run_id,
            "dataset": params.get("dataset"),
            "arch": params.get("arch"),
            "model": params.get("model"),
            "depth": _param(params, "depth", int),
            "width": _param(params, "width", int),
            "pushpull": _param(params, "pushpull", bool),
            "h": _param(params, "h", float),
            "alpha": _param(params, "alpha", float),
            "seed": _param(params, "seed", int),
            "epochs_trained": int(metrics["epoch"]) if "epoch" in metrics else None,
            "status": run.info.status,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC") if run.info.start_time else None,
            "end_time": pd.Timestamp(run.info.end_time, unit="ms", tz="UTC") if run.info.end_time else None,
        }
        if "test_acc" in metrics:
            rows.append({**base, "noise": "clean", "level": 0.0, "accuracy": metrics["test_acc"]})
        for name, value in metrics.items():
            parsed = parse_noise_metric(name, suite)
            if parsed is not None and not (
                suite == PAPER_SUITE and parsed[0] in NOISES and Perturbation(*parsed).is_identity
            ):
                rows.append({**base, "noise": parsed[0], "level": parsed[1], "accuracy": value})
    frame = pd.DataFrame(rows, columns=RESULT_SCHEMA.names)
    frame["noise_order"] = noise_rank(frame["noise"])
    order = [
        "dataset",
        "arch",
        "depth",
        "width",
        "model",
        "h",
        "alpha",
        "recipe",
        "seed",
        "noise_order",
        "noise",
        "level",
        "trial_key",
    ]
    frame = frame.sort_values(order, na_position="first", kind="stable")
    return frame.drop(columns="noise_order").reset_index(drop=True)


def recipes_table(runs: list) -> pd.DataFrame:
    """One row per recipe of ``runs`` (:data:`RECIPE_SCHEMA`): its id, architecture, the profile it is
    closest to with the fields that differ from it, every field, and how many of ``runs`` trained with it."""
    rows: dict[tuple[str, str], dict] = {}
    for run in runs:
        recipe, arch = recipe_of(run), run.data.params.get("arch")
        if recipe is None or arch is None:
            continue
        row = rows.get((recipe.id, arch))
        if row is None:
            profile, changes = describe_recipe(arch, recipe)
            row = rows[(recipe.id, arch)] = {
                "recipe": recipe.id,
                "arch": arch,
                "profile": profile,
                "changes": changes,
                **recipe.params(),
                "trials": 0,
            }
        row["trials"] += 1
    frame = pd.DataFrame(list(rows.values()), columns=RECIPE_SCHEMA.names)
    return frame.sort_values(["arch", "recipe"], kind="stable").reset_index(drop=True)


def cell_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Per cell (:data:`CELL_KEY`): mean and sample standard deviation of the accuracy over seeds, and the
    number of distinct seeds. ``results`` holds at most one run per (recipe, model, seed) (select_runs)."""
    grouped = results.groupby(CELL_KEY, dropna=False, sort=True)
    cells = grouped.agg(accuracy=("accuracy", "mean"), std=("accuracy", "std"), seeds=("seed", "nunique")).reset_index()
    return cells.astype({"seeds": "int64"})


def _paired_interval(differences: pd.Series) -> pd.Series:
    """Mean of paired differences, its two-sided 95 % Student t interval, seed count and verdict."""
    n = len(differences)
    mean = float(differences.mean())
    if n < 2:
        low = high = math.nan
    else:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * float(differences.std(ddof=1)) / math.sqrt(n)
        low, high = mean - half, mean + half
    verdict = "better" if low > 0 else "worse" if high < 0 else "inconclusive"  # NaN compares False
    return pd.Series({"difference": mean, "ci_low": low, "ci_high": high, "seeds": n, "verdict": verdict})


EFFECT_KEY = ["recipe", "dataset", "plain", "model", "h", "alpha", "noise", "level"]


def pushpull_effect(results: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """The push-pull effect per (recipe, plain model, its push-pull twin, noise, level), paired by seed.

    For every seed on which both twins were measured, difference = push-pull accuracy - plain accuracy
    (percentage points). Columns: :data:`EFFECT_KEY`, ``difference`` (mean over seeds), ``ci_low`` and
    ``ci_high`` (the paired 95 % Student t interval; NaN for one seed), ``seeds``, ``verdict`` (``better``:
    the interval lies above 0, ``worse``: below, else ``inconclusive``, always so for one seed), and the
    paper's difference for the same cell under each reading (``paper_difference`` for the header,
    ``paper_difference_text`` for the text reading; NaN where the paper has no such cell).
    """
    key = ["recipe", "dataset", "plain", "noise", "level", "seed"]
    results = results.assign(plain=results["model"].map(plain_name))
    plain = results[results["pushpull"].eq(False)][key + ["accuracy"]]
    pushpull = results[results["pushpull"].eq(True)][key + ["model", "h", "alpha", "accuracy"]]
    pairs = pushpull.merge(plain, on=key, suffixes=("_pp", "_plain"))
    columns = [
        *EFFECT_KEY,
        "difference",
        "ci_low",
        "ci_high",
        "seeds",
        "verdict",
        "paper_difference",
        "paper_difference_text",
    ]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    pairs["difference"] = pairs["accuracy_pp"] - pairs["accuracy_plain"]
    effect = pairs.groupby(EFFECT_KEY, sort=True)["difference"].apply(_paired_interval).unstack().reset_index()
    effect = effect.astype({"difference": "float64", "ci_low": "float64", "ci_high": "float64", "seeds": "int64"})
    for reading, column in (("header", "paper_difference"), ("text", "paper_difference_text")):
        effect = effect.merge(
            _paper_effect(paper, reading).rename(columns={"difference": column}), how="left", on=EFFECT_KEY[1:]
        )
    effect["noise_order"] = noise_rank(effect["noise"])
    effect = effect.sort_values(
        ["recipe", "dataset", "plain", "model", "h", "alpha", "noise_order", "noise", "level"], kind="stable"
    )
    return effect[columns].reset_index(drop=True)


def _paper_effect(paper: pd.DataFrame, reading: str) -> pd.DataFrame:
    """The paper's push-pull minus plain difference per twin cell under one reading (of :func:`paper_cells`),
    on the measured (noise, level) it means; a cell printed in several tables is taken from the first in
    PAPER_TABLES order (the main text first)."""
    order = {table.source: i for i, table in enumerate(PAPER_TABLES)}
    cells = paper[paper["reading"] == reading].assign(order=lambda f: f["source"].map(order))
    cells = cells.sort_values("order", kind="stable").assign(plain=lambda f: f["model"].map(plain_name))
    cells = cells.rename(
        columns={
            "noise": "printed_noise",
            "level": "printed_level",
            "measured_noise": "noise",
            "measured_level": "level",
        }
    )
    key = ["dataset", "plain", "noise", "level"]
    plain = cells[~cells["pushpull"]].drop_duplicates(key)[key + ["accuracy"]]
    pushpull = cells[cells["pushpull"]].drop_duplicates([*key, "h", "alpha"])[key + ["model", "h", "alpha", "accuracy"]]
    twins = pushpull.merge(plain, on=key, suffixes=("_pp", "_plain"))
    twins["difference"] = twins["accuracy_pp"] - twins["accuracy_plain"]
    return twins[[*EFFECT_KEY[1:], "difference"]]


def _with_cells(frame: pd.DataFrame, cells: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """``frame`` (paper cells) left-joined with the measured statistics of the same cells."""
    return frame.merge(cells, on=on, how="left", suffixes=("_paper", ""))


def paper_table(table: PaperTable, cells: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our numbers in the layout of one paper table, one block of its rows per recipe measured in it.

    paper: :func:`paper_results` (cells as printed). Each paper column becomes three: the mean over seeds
    (named like the paper's column, e.g. ``gaussian 0.001`` or ``cifar10 push-pull``), ``<column> std``
    and ``<column> seeds``. The first column is ``recipe`` (None when nothing of the table was measured);
    cells a recipe did not measure are null with 0 seeds.
    """
    rows = paper[paper["source"] == table.source].drop(columns="source")
    measured = cells.merge(rows[MODEL].drop_duplicates(), on=MODEL)
    recipes = sorted(measured["recipe"].unique()) or [None]
    return pd.concat([_table_block(table, rows, cells[cells["recipe"] == r], r) for r in recipes], ignore_index=True)


def _table_block(table: PaperTable, rows: pd.DataFrame, cells: pd.DataFrame, recipe: str | None) -> pd.DataFrame:
    layout = _with_cells(rows, cells.drop(columns="recipe"), CELL_KEY[1:])
    if table.by_noise:
        keys = ["noise", "level"]
        layout["column"] = [
            f"{d} {'push-pull' if pp else 'plain'}" for d, pp in zip(layout["dataset"], layout["pushpull"])
        ]
    else:
        keys = ["model", "h", "alpha"] if table.source == "paper Table 3" else ["model"]
        layout["column"] = [f"{noise} {level:g}" for noise, level in zip(layout["noise"], layout["level"])]
    # A new row wherever the row keys change, in the paper's order. (Table 2 prints the clean column twice,
    # as Gaussian and as speckle variance 0, so keys alone do not tell its rows apart.)
    row_keys = layout[keys].map(repr)  # repr, so that missing h and alpha compare equal
    layout["row"] = row_keys.ne(row_keys.shift()).any(axis=1).cumsum()
    layout["seeds"] = layout["seeds"].fillna(0).astype("int64")
    columns = list(dict.fromkeys(layout["column"]))
    parts = [layout.drop_duplicates("row").set_index("row")[keys]]
    for value, suffix in (("accuracy", ""), ("std", " std"), ("seeds", " seeds")):
        wide = layout.pivot(index="row", columns="column", values=value)[columns]
        parts.append(wide.add_suffix(suffix))
    block = pd.concat(parts, axis=1).reset_index(drop=True).rename_axis(columns=None)
    block.insert(0, "recipe", recipe)
    return block


def comparison(cells: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Every measured cell beside the paper's number, once per (paper table, reading) that prints it.

    paper: :func:`paper_cells`. ``noise`` and ``level`` are the paper's column as printed,
    ``measured_noise`` and ``measured_level`` the cell of ours it is compared with, ``protocol_note`` says
    why they differ ("" where the header means what it says).
    """
    paper = paper.drop_duplicates(["source", "reading", *MODEL, "noise", "level"])  # Table 2 prints clean twice
    ours = cells.rename(columns={"noise": "measured_noise", "level": "measured_level"})
    joined = paper.merge(ours, on=[*MODEL, "measured_noise", "measured_level"], how="inner", suffixes=("_paper", ""))
    joined = joined.rename(columns={"accuracy_paper": "paper_accuracy"})
    joined["difference"] = joined["accuracy"] - joined["paper_accuracy"]
    columns = [
        "recipe",
        "source",
        "reading",
        *MODEL,
        "noise",
        "level",
        "measured_noise",
        "measured_level",
        "accuracy",
        "std",
        "seeds",
        "paper_accuracy",
        "difference",
        "protocol_note",
    ]
    order = {table.source: i for i, table in enumerate(PAPER_TABLES)}
    joined = joined.assign(order=joined["source"].map(order)).sort_values(["recipe", "order"], kind="stable")
    return joined[columns].reset_index(drop=True)


def reading_fit(compared: pd.DataFrame) -> pd.DataFrame:
    """How well our measurements fit each reading of a table that has several (supplementary Table 2).

    compared: :func:`comparison`. Over the cells that more than one reading covers, the root mean square of
    (ours - paper) in points per (recipe, source, reading) and ``models``: ``plain``, ``push-pull`` or
    ``all``; columns recipe, source, reading, models, cells, rmse.
    """
    columns = ["recipe", "source", "reading", "models", "cells", "rmse"]
    alternative = compared[compared["reading"] != "header"][["source", "noise", "level"]].drop_duplicates()
    ambiguous = compared.merge(alternative, on=["source", "noise", "level"])
    if ambiguous.empty:
        return pd.DataFrame(columns=columns)
    by_kind = ambiguous.assign(models=ambiguous["pushpull"].map({False: "plain", True: "push-pull"}))
    both = pd.concat([by_kind, ambiguous.assign(models="all")], ignore_index=True)
    grouped = both.groupby(["recipe", "source", "reading", "models"], sort=True)["difference"]
    fit = grouped.agg(cells="count", rmse=lambda d: math.sqrt(float((d**2).mean()))).reset_index()
    return fit[columns]


def poisson_cells_as(noise: str, paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's Poisson cells (of :func:`paper_cells`, every reading) compared with ``noise``, a noise whose
    level is a contrast, at the contrast each reading means (a CIFAR C = 1 cell at C = 1, not clean)."""
    printed = paper[paper["noise"] == "poisson"]
    contrast = printed["measured_level"].where(printed["measured_noise"] != "clean", printed["level"])
    return printed.assign(measured_noise=noise, measured_level=contrast)


def variant_fit(cells: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """How close each noise of a suite whose level is a contrast comes to the paper's contrast + Poisson cells.

    cells: :func:`cell_statistics` of a suite's results; paper: :func:`paper_cells`. Every printed Poisson
    cell is compared, under each reading, with our cell of each such noise at the contrast the reading
    means (a CIFAR C = 1 cell at C = 1: whether that means no noise is what the variants test). Columns
    recipe, source, reading, noise, models (``plain``, ``push-pull``, ``all``), cells, rmse (points), sorted
    so that the nearest noise comes first within each (recipe, source, reading, models).
    """
    columns = ["recipe", "source", "reading", "noise", "models", "cells", "rmse"]
    noises = sorted(n for n in set(cells["noise"]) if n != "clean" and Noise.parse(n).level_is_contrast)
    compared = [comparison(cells, poisson_cells_as(noise, paper)) for noise in noises]
    compared = [frame for frame in compared if not frame.empty]
    if not compared:
        return pd.DataFrame(columns=columns)
    joined = pd.concat(compared, ignore_index=True).rename(
        columns={"noise": "printed_noise", "measured_noise": "noise"}
    )
    by_kind = joined.assign(models=joined["pushpull"].map({False: "plain", True: "push-pull"}))
    both = pd.concat([by_kind, joined.assign(models="all")], ignore_index=True)
    grouped = both.groupby(["recipe", "source", "reading", "noise", "models"], sort=True)["difference"]
    fit = grouped.agg(cells="count", rmse=lambda d: math.sqrt(float((d**2).mean()))).reset_index()
    fit = fit.sort_values(["recipe", "source", "reading", "models", "rmse", "noise"], kind="stable")
    return fit[columns].reset_index(drop=True)


EXCLUDED_COLUMNS = ["sweep", "recipe", "trial_key", "run_id", "dataset", "model", "seed", "status", "health", "reason"]


def diverged(run: object) -> bool:
    """Whether the run's trial diverged (it did not train)."""
    return run.data.tags.get("health") == "diverged"


def makes_rows(run: object, include_incomplete: bool) -> bool:
    """Whether a run becomes rows of the tables: a FINISHED one, or with ``include_incomplete`` an
    unfinished or failed one, never a diverged one (a model that did not train is no result)."""
    return run.info.status == "FINISHED" or (include_incomplete and not diverged(run))


def excluded_trials(runs: list) -> pd.DataFrame:
    """One row per trial left out of the tables (diverged, failed, unfinished), with the reason."""
    rows = [
        {
            "sweep": run.data.tags.get("sweep"),
            "recipe": recipe_id(run),
            "trial_key": run.data.tags.get("trial_key"),
            "run_id": run.info.run_id,
            "dataset": run.data.params.get("dataset"),
            "model": run.data.params.get("model"),
            "seed": _param(run.data.params, "seed", int),
            "status": run.info.status,
            "health": run.data.tags.get("health", ""),
            "reason": run.data.tags.get("health_reason") or run.data.tags.get("error") or f"run is {run.info.status}",
        }
        for run in runs
        if run.info.status != "FINISHED"
    ]
    frame = pd.DataFrame(rows, columns=EXCLUDED_COLUMNS).astype({"seed": "Int64"})
    return frame.sort_values("trial_key", kind="stable").reset_index(drop=True)


def tables_of_sweeps(sweeps: list[str]) -> tuple[PaperTable, ...]:
    """The paper tables that hold a cell of a model trained by one of ``sweeps`` (catalog names)."""
    models = {(dataset, spec.name) for name in sweeps for dataset, spec in SWEEPS[name][1]}
    paper = paper_results()
    printed = {(s, d, m) for s, d, m in zip(paper["source"], paper["dataset"], paper["model"])}
    return tuple(t for t in PAPER_TABLES if any((t.source, d, m) in printed for d, m in models))


def has_measurements(table: pd.DataFrame) -> bool:
    """Whether a paper-shaped table holds at least one measured cell."""
    return bool(table.filter(like=" seeds").gt(0).any().any())


@dataclass(frozen=True)
class Aggregation:
    """Everything the aggregator computes from one run per trial; :meth:`files` are the tables it writes.

    ``cells`` (:func:`cell_statistics`) and ``paper`` (:func:`paper_cells`) are kept for the report.
    """

    suite: str
    results: pd.DataFrame
    recipes: pd.DataFrame
    cells: pd.DataFrame
    effect: pd.DataFrame
    comparison: pd.DataFrame
    reading_fit: pd.DataFrame
    variant_fit: pd.DataFrame
    excluded: pd.DataFrame
    paper_tables: dict[str, pd.DataFrame]
    paper: pd.DataFrame

    def files(self) -> dict[str, pd.DataFrame]:
        """File stem -> table, in the order they are written. A suite other than the paper's has no paper
        tables and compares with the paper through ``variant_fit`` only."""
        if self.suite != PAPER_SUITE:
            return {
                "results": self.results,
                "recipes": self.recipes,
                "pushpull_effect": self.effect,
                "variant_fit": self.variant_fit,
                "excluded": self.excluded,
            }
        return {
            "results": self.results,
            "recipes": self.recipes,
            **self.paper_tables,
            "pushpull_effect": self.effect,
            "comparison": self.comparison,
            "reading_fit": self.reading_fit,
            "excluded": self.excluded,
        }


def aggregate(
    chosen: list, sweeps: list[str], include_incomplete: bool = False, suite: str = PAPER_SUITE
) -> Aggregation:
    """All tables of ``suite``'s scores from one run per trial (see sweep.runs.select_runs), the paper
    tables limited to those of ``sweeps``. The runs that make rows are chosen by :func:`makes_rows`; the
    others are listed in ``excluded``."""
    kept = [r for r in chosen if makes_rows(r, include_incomplete)]
    results = tidy_results(kept, suite)
    cells = cell_statistics(results)
    printed, paper = paper_results(), paper_cells()
    compared = comparison(cells, paper)
    return Aggregation(
        suite=suite,
        results=results,
        recipes=recipes_table(kept),
        cells=cells,
        effect=pushpull_effect(results, paper),
        comparison=compared,
        reading_fit=reading_fit(compared),
        variant_fit=variant_fit(cells, paper),
        excluded=excluded_trials([r for r in chosen if not makes_rows(r, include_incomplete)]),
        paper_tables={t.stem: paper_table(t, cells, printed) for t in tables_of_sweeps(sweeps)}
        if suite == PAPER_SUITE
        else {},
        paper=paper,
    )
