"""The aggregator's tables, as pure functions of MLflow runs and the paper's numbers: no I/O.

A *cell* is (recipe, dataset, model, noise, level): runs of different recipes never share a mean. Every
statistic over seeds is taken within one cell; the push-pull effect pairs a push-pull model with its plain
twin seed by seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from models import plain_name
from perturb import NOISES, PAPER_SUITE, Noise, Perturbation
from sweep.catalog import STUDIES
from sweep.datasets import DATASETS
from sweep.metrics import parse_noise_metric
from sweep.paper import PAPER_TABLES, PaperTable, paper_cells, paper_results
from sweep.search_report import best_point_effect, search_points, twin_points
from sweep.specs import Recipe, describe_recipe

__all__ = [
    "CELL_KEY",
    "DuplicateResults",
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
    "scored_images",
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
NO_RECIPE = "its params make no recipe"  # the reason such a run is listed in ``excluded``
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
    """Per cell (:data:`CELL_KEY`): mean and sample standard deviation of the accuracy over seeds, and
    ``seeds``, the number of distinct seeds with a finite accuracy. A NaN (or infinite) accuracy is dropped
    before anything is counted: it is neither a seed nor part of the mean; a cell whose every accuracy is
    NaN stays, with NaN statistics and 0 seeds. ``results`` holds at most one run per (recipe, model, seed)
    (select_runs)."""
    finite = results["accuracy"].astype("float64")
    finite = finite.where(np.isfinite(finite))
    results = results.assign(accuracy=finite, seed=results["seed"].where(finite.notna()))
    grouped = results.groupby(CELL_KEY, dropna=False, sort=True)
    cells = grouped.agg(accuracy=("accuracy", "mean"), std=("accuracy", "std"), seeds=("seed", "nunique")).reset_index()
    return cells.astype({"seeds": "int64"})


def _paired_interval(pairs: pd.DataFrame, images: float) -> dict[str, object]:
    """The paired statistics of one cell: ``pairs`` holds one row per seed on which both twins have a finite
    accuracy (columns ``difference``, ``accuracy_pp``, ``accuracy_plain``, in percent), ``images`` the
    test images each accuracy was scored on (NaN when unknown: no floor).

    Returns the mean difference, its two-sided 95 % Student t interval, the standard deviation of the
    differences it used (floored, see :func:`pushpull_effect`), whether it was floored, and the paired t
    test's two-sided p-value; with fewer than two pairs, interval, sd and p are NaN.
    """
    n = len(pairs)
    mean = float(pairs["difference"].mean()) if n else math.nan
    if n < 2:
        return {
            "difference": mean,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": math.nan,
            "sd": math.nan,
            "sd_floored": False,
        }
    sd = float(pairs["difference"].std(ddof=1))
    resolution = 100 / images
    floored = sd < resolution  # False when images, and so the resolution, is unknown (NaN)
    if floored:
        p1, p2 = (min(max(float(pairs[arm].mean()) / 100, 0.0), 1.0) for arm in ("accuracy_pp", "accuracy_plain"))
        sd = 100 * math.sqrt(p1 * (1 - p1) / images + p2 * (1 - p2) / images) or resolution
    se = np.float64(sd) / math.sqrt(n)  # numpy: a zero se (no floor known) gives t = inf or NaN, not an error
    with np.errstate(divide="ignore", invalid="ignore"):
        t = abs(mean) / se
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * se)
    p = float(2 * stats.t.sf(t, n - 1))
    return {
        "difference": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "p_value": p,
        "sd": sd,
        "sd_floored": floored,
    }


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of ``p`` (finite, in [0, 1])."""
    control = getattr(stats, "false_discovery_control", None)  # scipy >= 1.11
    if control is not None:
        return np.asarray(control(p, method="bh"), dtype="float64")
    m = len(p)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.empty(m)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def scored_images(recipes: pd.DataFrame | None, recipe: str, dataset: str) -> float:
    """Test images an accuracy of ``recipe`` on ``dataset`` was scored on: the recipe's max_test_images
    (at most the data set's test set, ``DATASETS[dataset].test_images``) when set, else the data set's test
    set; NaN when neither is known. An accuracy is a multiple of 100 / this many points."""
    size = DATASETS[dataset].test_images if dataset in DATASETS else math.nan
    if recipes is not None and "max_test_images" in recipes:
        cap = recipes.loc[recipes["recipe"] == recipe, "max_test_images"].dropna()
        if len(cap):
            return float(min(float(cap.iloc[0]), size)) if not math.isnan(size) else float(cap.iloc[0])
    return float(size)


def _diverged_seeds(runs: Iterable) -> pd.DataFrame:
    """(recipe, dataset, model, pushpull, h, alpha, seed) of every run of ``runs`` whose trial diverged."""
    rows = [
        {
            "recipe": recipe_id(run),
            "dataset": run.data.params.get("dataset"),
            "model": run.data.params.get("model"),
            "pushpull": _param(run.data.params, "pushpull", bool),
            "h": _param(run.data.params, "h", float),
            "alpha": _param(run.data.params, "alpha", float),
            "seed": _param(run.data.params, "seed", int),
        }
        for run in runs
        if diverged(run)
    ]
    frame = pd.DataFrame(rows, columns=["recipe", "dataset", "model", "pushpull", "h", "alpha", "seed"])
    return frame.astype({"h": "float64", "alpha": "float64"})


TRIAL_KEY = ["recipe", "dataset", "model", "h", "alpha", "seed", "noise", "level"]


class DuplicateResults(ValueError):
    """Two result rows of one trial and cell (a store whose runs the selection cannot tell apart); one line."""


def _check_one_row_per_seed(results: pd.DataFrame) -> None:
    """Raise DuplicateResults (one line, naming the key) unless ``results`` has at most one row per
    :data:`TRIAL_KEY`: two runs of one seed would be paired twice."""
    if results.empty:
        return
    group = results.groupby(TRIAL_KEY, dropna=False, sort=True).ngroup()
    sizes = group.value_counts()
    if sizes.max() > 1:
        rows = results[group == sizes[sizes > 1].index.min()]
        key = ", ".join(f"{name}={rows[name].iloc[0]}" for name in TRIAL_KEY)
        raise DuplicateResults(
            f"{len(rows)} result rows for ({key}), from runs {', '.join(sorted(set(map(str, rows['run_id']))))}: "
            "expected one run per trial (sweep.runs.select_runs)"
        )


EFFECT_KEY = ["recipe", "dataset", "plain", "model", "h", "alpha", "noise", "level"]


def pushpull_effect(
    results: pd.DataFrame, paper: pd.DataFrame, *, recipes: pd.DataFrame | None = None, diverged_runs: Iterable = ()
) -> pd.DataFrame:
    """The push-pull effect per (recipe, plain model, its push-pull twin, noise, level), paired by seed: an
    estimate per cell, never a verdict (the paper makes no per-cell claim).

    ``results``: :func:`tidy_results`, at most one row per :data:`TRIAL_KEY` (else ValueError); rows of
    runs whose params make no recipe (recipe ``unknown``) are left out. ``recipes``: :func:`recipes_table`,
    for each recipe's ``max_test_images`` (None: every accuracy scored on the data set's whole test set).
    ``diverged_runs``: the runs of trials that diverged (others are ignored), counted per twin.

    A twin cell is listed when both twins have a row in it. A NaN accuracy is dropped before anything is
    counted. For every seed on which both twins have a finite accuracy (a *pair*), difference = push-pull
    accuracy - plain accuracy (percentage points). Columns:

    - :data:`EFFECT_KEY`;
    - ``difference``: mean over the pairs (NaN without one);
    - ``ci_low``, ``ci_high``: its two-sided 95 % Student t interval (NaN with fewer than two pairs);
    - ``p_value``: the paired t test's two-sided p-value for a mean difference of 0 (NaN likewise);
    - ``q_value``: Benjamini-Hochberg adjusted p-value within the cell's noise family, (recipe, dataset,
      noise) with clean a family of its own, over the cells that have a p-value;
    - ``sd``: the standard deviation of the differences that interval and p-value use. An accuracy is a
      multiple of its resolution, 100 / (test images) points (the recipe's ``max_test_images`` when set,
      else the data set's test set, ``DatasetInfo.test_images``), so an SD below that resolution (identical
      differences, say) says nothing about the spread: it is floored at the binomial standard error of a
      difference of two accuracies, 100 * sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n) with p1, p2 the two
      arms' mean accuracies over the pairs as fractions and n the test images (at the resolution where that
      is 0);
    - ``sd_floored``: whether it was floored;
    - ``pairs``: seeds with a finite accuracy of both twins;
    - ``seeds_pushpull``, ``seeds_plain``: distinct seeds with a finite accuracy, per twin;
    - ``diverged_pushpull``, ``diverged_plain``: distinct seeds of that twin's trial (same recipe) that
      diverged, and so have no row in ``results``;
    - ``paper_difference``, ``paper_difference_text``: the paper's difference for the same cell under each
      reading (header, text; NaN where the paper has no such cell).
    """
    results = results[results["recipe"] != UNKNOWN_RECIPE]
    _check_one_row_per_seed(results)
    key = ["recipe", "dataset", "plain", "noise", "level"]
    accuracy = results["accuracy"].astype("float64")
    results = results.assign(plain=results["model"].map(plain_name), accuracy=accuracy.where(np.isfinite(accuracy)))
    plain = results[results["pushpull"].eq(False)][[*key, "seed", "accuracy"]]
    pushpull = results[results["pushpull"].eq(True)][[*key, "model", "h", "alpha", "seed", "accuracy"]]
    columns = [
        *EFFECT_KEY,
        "difference",
        "ci_low",
        "ci_high",
        "p_value",
        "q_value",
        "sd",
        "sd_floored",
        "pairs",
        "seeds_pushpull",
        "seeds_plain",
        "diverged_pushpull",
        "diverged_plain",
        *(name for reading in PAPER_EFFECT_COLUMNS.values() for name in reading),
    ]
    effect = pushpull[EFFECT_KEY].drop_duplicates().merge(plain[key].drop_duplicates(), on=key)
    if effect.empty:
        return pd.DataFrame(columns=columns)
    plain, pushpull = plain.dropna(subset=["accuracy"]), pushpull.dropna(subset=["accuracy"])
    pairs = pushpull.merge(plain, on=[*key, "seed"], suffixes=("_pp", "_plain"))
    pairs["difference"] = pairs["accuracy_pp"] - pairs["accuracy_plain"]
    statistics = pd.DataFrame(
        [
            {
                **dict(zip(EFFECT_KEY, cell)),
                **_paired_interval(group, scored_images(recipes, cell[0], cell[1])),
                "pairs": group["seed"].nunique(),
            }
            for cell, group in pairs.groupby(EFFECT_KEY, dropna=False, sort=True)
        ],
        columns=[*EFFECT_KEY, "difference", "ci_low", "ci_high", "p_value", "sd", "sd_floored", "pairs"],
    )
    gone = _diverged_seeds(diverged_runs).assign(plain=lambda f: f["model"].map(plain_name))
    counts = (
        (pushpull, EFFECT_KEY, "seeds_pushpull"),
        (plain, key, "seeds_plain"),
        (gone[gone["pushpull"].eq(True)], ["recipe", "dataset", "model", "h", "alpha"], "diverged_pushpull"),
        (gone[gone["pushpull"].eq(False)], ["recipe", "dataset", "plain"], "diverged_plain"),
    )
    effect = effect.merge(statistics, how="left", on=EFFECT_KEY)
    for frame, on, name in counts:
        counted = frame.groupby(on, dropna=False)["seed"].nunique().rename(name).reset_index()
        effect = effect.merge(counted.astype({c: effect[c].dtype for c in on}), how="left", on=on)
    integers = ["pairs", "seeds_pushpull", "seeds_plain", "diverged_pushpull", "diverged_plain"]
    effect = effect.fillna({name: 0 for name in integers}).fillna({"sd_floored": False})
    effect = effect.astype({**dict.fromkeys(integers, "int64"), "sd_floored": "bool"})
    effect["q_value"] = math.nan
    for _, family in effect.groupby(["recipe", "dataset", "noise"], sort=False):
        tested = family["p_value"].dropna()
        if len(tested):
            effect.loc[tested.index, "q_value"] = _benjamini_hochberg(tested.to_numpy(dtype="float64"))
    for reading, (difference, source) in PAPER_EFFECT_COLUMNS.items():
        named = _paper_effect(paper, reading).rename(columns={"difference": difference, "paper_source": source})
        effect = effect.merge(named, how="left", on=EFFECT_KEY[1:])
    effect["noise_order"] = noise_rank(effect["noise"])
    effect = effect.sort_values(
        ["recipe", "dataset", "plain", "model", "h", "alpha", "noise_order", "noise", "level"], kind="stable"
    )
    return effect[columns].reset_index(drop=True)


# The paper's difference in a cell and the table it comes from, per reading of its cells (sweep.paper.READINGS).
PAPER_EFFECT_COLUMNS = {
    "header": ("paper_difference", "paper_source"),
    "text": ("paper_difference_text", "paper_source_text"),
    "swapped": ("paper_difference_swapped", "paper_source_swapped"),
}


def _paper_effect(paper: pd.DataFrame, reading: str) -> pd.DataFrame:
    """The paper's push-pull minus plain difference per twin cell under one reading (of :func:`paper_cells`),
    on the measured (noise, level) it means, with ``paper_source``, the one table both numbers come from.

    The twins are paired within a table; a twin cell printed in several tables is taken from the first in
    PAPER_TABLES order (the main text first: Table 2's CIFAR Poisson C = 1.5 and 2.5, which supplementary
    Tables 4-5 print swapped, come from Table 2 as printed under ``header`` and swapped under ``swapped``).
    Columns :data:`EFFECT_KEY` but recipe, ``difference``, ``paper_source``."""
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
    key = ["source", "dataset", "plain", "noise", "level"]
    plain = cells[~cells["pushpull"]].drop_duplicates(key)[key + ["accuracy"]]
    pushpull = cells[cells["pushpull"]].drop_duplicates([*key, "h", "alpha"])[[*key, "model", "h", "alpha", "accuracy"]]
    twins = pushpull.merge(plain, on=key, suffixes=("_pp", "_plain")).assign(order=lambda f: f["source"].map(order))
    twins = twins.sort_values("order", kind="stable").drop_duplicates(EFFECT_KEY[1:])
    twins["difference"] = twins["accuracy_pp"] - twins["accuracy_plain"]
    twins = twins.rename(columns={"source": "paper_source"})
    return twins[[*EFFECT_KEY[1:], "difference", "paper_source"]].reset_index(drop=True)


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


def prediction_half_width(std: pd.Series, seeds: pd.Series) -> pd.Series:
    """Half the width of the two-sided 95 % prediction interval for one new run of a cell of ``seeds`` runs
    with sample standard deviation ``std``: t_{n-1, 0.975} * std * sqrt(1 + 1/n); NaN under two seeds."""
    n = seeds.astype("float64").where(seeds >= 2)
    return stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std * np.sqrt(1 + 1 / n)


def comparison(cells: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Every measured cell beside the paper's number, once per (paper table, reading) that prints it.

    paper: :func:`paper_cells`. ``paper_source`` is the paper table the number comes from, ``noise`` and
    ``level`` its column as printed, ``measured_noise`` and ``measured_level`` the cell of ours it is
    compared with, ``protocol_note`` says why they differ ("" where the header means what it says).
    ``prediction_low`` and ``prediction_high``: our 95 % prediction interval for one new run of the cell
    (:func:`prediction_half_width` either side of the mean; NaN under two seeds): the paper's numbers are
    single runs, so this, not mean +- SD, is where one of them lies if it measured what we measure;
    ``outside_prediction``: whether the paper's number lies outside it (null under two seeds).
    """
    paper = paper.drop_duplicates(["source", "reading", *MODEL, "noise", "level"])  # Table 2 prints clean twice
    ours = cells.rename(columns={"noise": "measured_noise", "level": "measured_level"})
    joined = paper.merge(ours, on=[*MODEL, "measured_noise", "measured_level"], how="inner", suffixes=("_paper", ""))
    joined = joined.rename(columns={"accuracy_paper": "paper_accuracy", "source": "paper_source"})
    joined["difference"] = joined["accuracy"] - joined["paper_accuracy"]
    half = prediction_half_width(joined["std"], joined["seeds"])
    joined["prediction_low"], joined["prediction_high"] = joined["accuracy"] - half, joined["accuracy"] + half
    inside = joined["paper_accuracy"].between(joined["prediction_low"], joined["prediction_high"])
    joined["outside_prediction"] = pd.array(~inside, dtype="boolean").copy()
    joined.loc[half.isna(), "outside_prediction"] = pd.NA
    columns = [
        "recipe",
        "paper_source",
        "reading",
        *MODEL,
        "noise",
        "level",
        "measured_noise",
        "measured_level",
        "accuracy",
        "std",
        "seeds",
        "prediction_low",
        "prediction_high",
        "paper_accuracy",
        "outside_prediction",
        "difference",
        "protocol_note",
    ]
    order = {table.source: i for i, table in enumerate(PAPER_TABLES)}
    joined = joined.assign(order=joined["paper_source"].map(order)).sort_values(["recipe", "order"], kind="stable")
    return joined[columns].reset_index(drop=True)


FIT_SPREADS = 2  # a reading or variant fits when its RMSE is at most this many seed spreads


def _rms(values: pd.Series) -> float:
    """Root mean square of the values that are not NaN (NaN when none is)."""
    return math.sqrt(float((values**2).mean()))


def _fit(compared: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: cells, rmse of ``difference``, ``seed_spread`` (the root mean square of the
    cells' ``std``, over those that have one) and ``fits`` (rmse <= FIT_SPREADS * seed_spread; null
    without a seed spread)."""
    grouped = compared.groupby(by, sort=True)
    fit = grouped.agg(cells=("difference", "count"), rmse=("difference", _rms), seed_spread=("std", _rms))
    fit = fit.reset_index()
    fits = pd.array(fit["rmse"] <= FIT_SPREADS * fit["seed_spread"], dtype="boolean").copy()
    fits[fit["seed_spread"].isna().to_numpy()] = pd.NA
    return fit.assign(fits=fits)


def reading_fit(compared: pd.DataFrame) -> pd.DataFrame:
    """How well our measurements fit each reading of a table that has several (supplementary Table 2, Table 2).

    compared: :func:`comparison`. Over the cells that more than one reading covers, the root mean square of
    (ours - paper) in points per (recipe, source, reading) and ``models``: ``plain``, ``push-pull`` or
    ``all``; columns recipe, source (the paper table), reading, models, cells, rmse, seed_spread (the root
    mean square of our cells' SD over seeds, over the same cells) and fits (rmse within
    :data:`FIT_SPREADS` seed spreads; null without a spread: one seed).
    """
    columns = ["recipe", "source", "reading", "models", "cells", "rmse", "seed_spread", "fits"]
    compared = compared.rename(columns={"paper_source": "source"})
    alternative = compared[compared["reading"] != "header"][["source", "noise", "level"]].drop_duplicates()
    ambiguous = compared.merge(alternative, on=["source", "noise", "level"])
    if ambiguous.empty:
        return pd.DataFrame(columns=columns)
    by_kind = ambiguous.assign(models=ambiguous["pushpull"].map({False: "plain", True: "push-pull"}))
    both = pd.concat([by_kind, ambiguous.assign(models="all")], ignore_index=True)
    return _fit(both, ["recipe", "source", "reading", "models"])[columns]


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
    recipe, source, reading, noise, models (``plain``, ``push-pull``, ``all``), cells, rmse (points),
    seed_spread and fits (as in :func:`reading_fit`), sorted so that the nearest noise comes first within
    each (recipe, source, reading, models).
    """
    columns = ["recipe", "source", "reading", "noise", "models", "cells", "rmse", "seed_spread", "fits"]
    noises = sorted(n for n in set(cells["noise"]) if n != "clean" and Noise.parse(n).level_is_contrast)
    compared = [comparison(cells, poisson_cells_as(noise, paper)) for noise in noises]
    compared = [frame for frame in compared if not frame.empty]
    if not compared:
        return pd.DataFrame(columns=columns)
    joined = pd.concat(compared, ignore_index=True).rename(
        columns={"noise": "printed_noise", "measured_noise": "noise", "paper_source": "source"}
    )
    by_kind = joined.assign(models=joined["pushpull"].map({False: "plain", True: "push-pull"}))
    both = pd.concat([by_kind, joined.assign(models="all")], ignore_index=True)
    fit = _fit(both, ["recipe", "source", "reading", "noise", "models"])
    fit = fit.sort_values(["recipe", "source", "reading", "models", "rmse", "noise"], kind="stable")
    return fit[columns].reset_index(drop=True)


EXCLUDED_COLUMNS = [
    "sweep",
    "recipe",
    "trial_key",
    "run_id",
    "dataset",
    "model",
    "h",
    "alpha",
    "seed",
    "status",
    "health",
    "reason",
]


def diverged(run: object) -> bool:
    """Whether the run's trial diverged (it did not train)."""
    return run.data.tags.get("health") == "diverged"


def makes_rows(run: object, include_incomplete: bool) -> bool:
    """Whether a run becomes rows of the tables: a FINISHED one, or with ``include_incomplete`` an
    unfinished or failed one, never a diverged one (a model that did not train is no result)."""
    return run.info.status == "FINISHED" or (include_incomplete and not diverged(run))


def _exclusion_reason(run: object, recipe: str) -> str:
    """Why a run is listed in ``excluded``: its health or error (or status) when it did not finish, and
    :data:`NO_RECIPE` when its params make no recipe (both, joined by "; ", when both hold)."""
    reasons = []
    if run.info.status != "FINISHED":
        tags = run.data.tags
        reasons.append(tags.get("health_reason") or tags.get("error") or f"run is {run.info.status}")
    if recipe == UNKNOWN_RECIPE:
        reasons.append(NO_RECIPE)
    return "; ".join(reasons)


def excluded_trials(runs: list) -> pd.DataFrame:
    """One row per trial of ``runs`` left out of the tables (diverged, failed, unfinished), or out of the
    push-pull effect (its params make no recipe: ``reason`` says :data:`NO_RECIPE`), with the reason."""
    recipes = [recipe_id(run) for run in runs]
    rows = [
        {
            "sweep": run.data.tags.get("sweep"),
            "recipe": recipe,
            "trial_key": run.data.tags.get("trial_key"),
            "run_id": run.info.run_id,
            "dataset": run.data.params.get("dataset"),
            "model": run.data.params.get("model"),
            "h": _param(run.data.params, "h", float),
            "alpha": _param(run.data.params, "alpha", float),
            "seed": _param(run.data.params, "seed", int),
            "status": run.info.status,
            "health": run.data.tags.get("health", ""),
            "reason": _exclusion_reason(run, recipe),
        }
        for run, recipe in zip(runs, recipes)
        if run.info.status != "FINISHED" or recipe == UNKNOWN_RECIPE
    ]
    frame = pd.DataFrame(rows, columns=EXCLUDED_COLUMNS).astype({"seed": "Int64", "h": "float64", "alpha": "float64"})
    return frame.sort_values("trial_key", kind="stable").reset_index(drop=True)


def tables_of_sweeps(sweeps: list[str]) -> tuple[PaperTable, ...]:
    """The paper tables that hold a cell of a model trained by one of ``sweeps`` (built-in study names; a
    study of a user's own holds none)."""
    models = {(dataset, spec.name) for name in sweeps if name in STUDIES for dataset, spec in STUDIES[name].pairs()}
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

    The searched (h, alpha) (sweep.search_report, the paper's suite only): ``search_points`` one row per
    (h, alpha) of every push-pull model of one recipe and data set trained with two or more, scored by
    ``search_metric`` in ``search_mode``'s direction; ``search_twins`` their plain twins (for the report);
    ``search_best_effect`` the push-pull effect of each group's best point. None where nothing was searched.
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
    claims: pd.DataFrame | None = None  # sweep.claims.claims_table of ``results``, the paper's suite only
    search_metric: str = "noise"  # sweep.objectives.METRICS
    search_mode: str = "max"
    search_points: pd.DataFrame | None = None
    search_twins: pd.DataFrame | None = None
    search_best_effect: pd.DataFrame | None = None

    def files(self) -> dict[str, pd.DataFrame]:
        """File stem -> table, in the order they are written. A suite other than the paper's has no paper
        tables and compares with the paper through ``variant_fit`` only; ``search_points`` and
        ``search_best_effect`` are written where some push-pull model was trained with two or more (h, alpha)."""
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
            **({} if self.claims is None else {"claims": self.claims}),
            **self.paper_tables,
            "pushpull_effect": self.effect,
            **self._search_files(),
            "comparison": self.comparison,
            "reading_fit": self.reading_fit,
            "excluded": self.excluded,
        }

    def _search_files(self) -> dict[str, pd.DataFrame]:
        """The searched (h, alpha)'s tables, where a push-pull model was trained with two or more."""
        if self.search_points is None or self.search_points.empty:
            return {}
        return {"search_points": self.search_points, "search_best_effect": self.search_best_effect}


def aggregate(
    chosen: list,
    sweeps: list[str],
    include_incomplete: bool = False,
    suite: str = PAPER_SUITE,
    search_metric: str = "noise",
    search_mode: str = "max",
) -> Aggregation:
    """All tables of ``suite``'s scores from one run per trial (see sweep.runs.select_runs), the paper
    tables limited to those of ``sweeps``. The runs that make rows are chosen by :func:`makes_rows`; the
    others are listed in ``excluded``, and so are those whose params make no recipe (in the tables, under
    recipe ``unknown``, but not in the push-pull effect). In the paper's suite, every push-pull model
    trained with two or more (h, alpha) is scored by ``search_metric`` (sweep.objectives.METRICS; ValueError
    for another name) in ``search_mode``'s direction (``max`` or ``min``): sweep.search_report."""
    kept = [r for r in chosen if makes_rows(r, include_incomplete)]
    results = tidy_results(kept, suite)
    recipes = recipes_table(kept)
    cells = cell_statistics(results)
    printed, paper = paper_results(), paper_cells()
    compared = comparison(cells, paper)
    left_out = [r for r in chosen if not makes_rows(r, include_incomplete) or recipe_id(r) == UNKNOWN_RECIPE]
    effect = pushpull_effect(results, paper, recipes=recipes, diverged_runs=[r for r in chosen if diverged(r)])
    points = search_points(results, search_metric, search_mode)  # checks the metric and mode in any suite
    searched = suite == PAPER_SUITE and not points.empty  # the metrics are the paper suite's noises
    return Aggregation(
        suite=suite,
        results=results,
        recipes=recipes,
        cells=cells,
        effect=effect,
        comparison=compared,
        reading_fit=reading_fit(compared),
        variant_fit=variant_fit(cells, paper),
        excluded=excluded_trials(left_out),
        paper_tables={t.stem: paper_table(t, cells, printed) for t in tables_of_sweeps(sweeps)}
        if suite == PAPER_SUITE
        else {},
        paper=paper,
        search_metric=search_metric,
        search_mode=search_mode,
        search_points=points if searched else None,
        search_twins=twin_points(results, points, search_metric) if searched else None,
        search_best_effect=best_point_effect(effect, points) if searched else None,
    )
