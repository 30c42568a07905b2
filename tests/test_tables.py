"""The pure functions of sweep.tables on small frames: every expected number is a literal worked out by hand or
comes from scipy.stats directly (its paired t test, its t distribution), never from the function under test."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sweep.catalog import build_sweep
from sweep.paper import PAPER_TABLES, paper_cells, paper_results
from sweep.tables import (
    CELL_KEY,
    _paired_interval,
    cell_statistics,
    excluded_trials,
    has_measurements,
    makes_rows,
    noise_rank,
    paper_table,
    prediction_half_width,
    pushpull_effect,
    reading_fit,
    scored_images,
)

T_975 = {1: 12.706204736174707, 2: 4.302652729749462, 3: 3.182446305284263}  # Student t 97.5 % quantiles by df
# Two pairs with differences 1 and 3: mean 2, SD sqrt(2), t = 2 on 1 degree of freedom. The t distribution
# with 1 degree of freedom is Cauchy's: P(|T| > 2) = 1 - 2 atan(2) / pi.
P_T2_DF1 = 1 - 2 * math.atan(2) / math.pi


def results_frame(rows: list[tuple]) -> pd.DataFrame:
    """Result rows (recipe, dataset, model, seed, noise, level, accuracy) of LeNets: a model named P* is the
    push-pull twin (h 2, alpha 1), the others plain (no h, no alpha)."""
    frame = pd.DataFrame(rows, columns=["recipe", "dataset", "model", "seed", "noise", "level", "accuracy"])
    pushpull = frame["model"].str.startswith("P")
    return frame.assign(
        pushpull=pushpull,
        h=np.where(pushpull, 2.0, np.nan),
        alpha=np.where(pushpull, 1.0, np.nan),
        run_id=[f"run-{i}" for i in range(len(frame))],
    )


def pairs_frame(pushpull: list[float], plain: list[float]) -> pd.DataFrame:
    """What _paired_interval takes: one row per seed on which both twins have an accuracy."""
    pp, pl = np.array(pushpull), np.array(plain)
    return pd.DataFrame({"seed": range(len(pp)), "accuracy_pp": pp, "accuracy_plain": pl, "difference": pp - pl})


def cell_of(cells: pd.DataFrame, recipe: str, model: str, noise: str, level: float) -> pd.Series:
    rows = cells[
        (cells["recipe"] == recipe) & (cells["model"] == model) & (cells["noise"] == noise) & (cells["level"] == level)
    ]
    assert len(rows) == 1
    return rows.iloc[0]


def test_cell_statistics_are_the_mean_the_sample_sd_and_the_distinct_seeds():
    cells = cell_statistics(
        results_frame(
            [
                ("r", "mnist", "A", 0, "clean", 0.0, 80.0),
                ("r", "mnist", "A", 1, "clean", 0.0, 82.0),
                ("r", "mnist", "A", 2, "clean", 0.0, 87.0),
                ("r", "mnist", "A", 0, "gaussian", 0.1, 70.0),
                ("r", "mnist", "PA", 0, "clean", 0.0, 90.0),
            ]
        )
    )
    assert list(cells.columns) == [*CELL_KEY, "accuracy", "std", "seeds"]
    assert cells["seeds"].dtype == "int64"
    a = cell_of(cells, "r", "A", "clean", 0.0)
    # 80, 82, 87: mean 83, deviations -3, -1, 4, sample variance (9 + 1 + 16) / 2 = 13
    assert (a["accuracy"], a["std"], a["seeds"]) == (83.0, pytest.approx(math.sqrt(13), rel=1e-12), 3)
    one = cell_of(cells, "r", "A", "gaussian", 0.1)
    assert (one["accuracy"], one["seeds"]) == (70.0, 1) and math.isnan(one["std"])  # one seed: no SD
    assert len(cells) == 3


def test_a_nan_or_infinite_accuracy_is_neither_a_seed_nor_part_of_the_mean():
    cells = cell_statistics(
        results_frame(
            [
                ("r", "mnist", "A", 0, "clean", 0.0, 80.0),
                ("r", "mnist", "A", 1, "clean", 0.0, math.nan),
                ("r", "mnist", "A", 2, "clean", 0.0, math.inf),
                ("r", "mnist", "A", 3, "clean", 0.0, 84.0),
                ("r", "mnist", "B", 0, "clean", 0.0, math.nan),
                ("r", "mnist", "B", 1, "clean", 0.0, -math.inf),
            ]
        )
    )
    a = cell_of(cells, "r", "A", "clean", 0.0)
    # 80 and 84: mean 82, sample SD sqrt(8)
    assert (a["accuracy"], a["std"], a["seeds"]) == (82.0, pytest.approx(math.sqrt(8), rel=1e-12), 2)
    b = cell_of(cells, "r", "B", "clean", 0.0)  # no finite accuracy at all: the cell stays, with 0 seeds
    assert b["seeds"] == 0 and math.isnan(b["accuracy"]) and math.isnan(b["std"])


def test_recipes_never_share_a_cell_and_plain_models_without_h_or_alpha_keep_theirs():
    cells = cell_statistics(
        results_frame(
            [
                ("r1", "mnist", "A", 0, "clean", 0.0, 80.0),
                ("r1", "mnist", "A", 1, "clean", 0.0, 90.0),
                ("r2", "mnist", "A", 0, "clean", 0.0, 50.0),
                ("r2", "mnist", "A", 1, "clean", 0.0, 52.0),
            ]
        )
    )
    assert list(zip(cells["recipe"], cells["accuracy"], cells["seeds"])) == [("r1", 85.0, 2), ("r2", 51.0, 2)]
    assert cells[["h", "alpha"]].isna().all().all()  # NaN h and alpha group, they do not drop the rows


def test_the_paired_interval_is_scipys_paired_t_test():
    pushpull, plain = [81.0, 85.5, 83.25, 90.0], [80.0, 82.0, 83.0, 84.5]
    got = _paired_interval(pairs_frame(pushpull, plain), images=10000)
    differences = np.subtract(pushpull, plain)  # 1, 3.5, 0.25, 5.5: SD 2.4, far above 0.01 points
    test = stats.ttest_rel(pushpull, plain)
    low, high = stats.t.interval(0.95, 3, loc=differences.mean(), scale=stats.sem(differences))
    assert got["difference"] == pytest.approx(2.5625, abs=1e-12)
    assert (got["ci_low"], got["ci_high"], got["p_value"]) == (
        pytest.approx(low, rel=1e-12),
        pytest.approx(high, rel=1e-12),
        pytest.approx(test.pvalue, rel=1e-9),
    )
    assert got["sd"] == pytest.approx(np.std(differences, ddof=1), rel=1e-12) and got["sd_floored"] is False


def test_two_pairs_give_the_cauchy_p_value_and_fewer_give_the_mean_alone():
    got = _paired_interval(pairs_frame([81.0, 85.0], [80.0, 82.0]), images=10000)
    assert (got["difference"], got["ci_low"], got["ci_high"], got["p_value"], got["sd"]) == (
        2.0,
        pytest.approx(2.0 - T_975[1], rel=1e-12),  # half width t * sqrt(2) / sqrt(2)
        pytest.approx(2.0 + T_975[1], rel=1e-12),
        pytest.approx(P_T2_DF1, rel=1e-9),
        pytest.approx(math.sqrt(2), rel=1e-12),
    )
    one = _paired_interval(pairs_frame([81.0], [80.0]), images=10000)
    assert one["difference"] == 1.0 and one["sd_floored"] is False
    assert all(math.isnan(one[name]) for name in ("ci_low", "ci_high", "p_value", "sd"))
    none = _paired_interval(pairs_frame([], []), images=10000)
    assert all(math.isnan(none[name]) for name in ("difference", "ci_low", "ci_high", "p_value", "sd"))


def test_an_sd_below_the_resolution_is_floored_at_the_binomial_standard_error():
    # 4 seeds, push-pull 90 % and plain 80 % on each, 400 test images: resolution 0.25 points, SD 0.
    # Binomial SE of the difference: 100 sqrt(0.9 * 0.1 / 400 + 0.8 * 0.2 / 400) = 100 sqrt(0.25 / 400) = 2.5.
    got = _paired_interval(pairs_frame([90.0] * 4, [80.0] * 4), images=400)
    half = T_975[3] * 2.5 / 2  # t * sd / sqrt(4)
    assert (got["sd"], got["sd_floored"], got["difference"]) == (pytest.approx(2.5, rel=1e-12), True, 10.0)
    assert (got["ci_low"], got["ci_high"], got["p_value"]) == (
        pytest.approx(10.0 - half, rel=1e-12),
        pytest.approx(10.0 + half, rel=1e-12),
        pytest.approx(2 * stats.t.sf(10.0 / 1.25, 3), rel=1e-9),
    )
    # Both arms at 100 %: a binomial SE of 0, so the resolution itself, 100 / 500 = 0.2 points.
    perfect = _paired_interval(pairs_frame([100.0] * 3, [100.0] * 3), images=500)
    half = T_975[2] * 0.2 / math.sqrt(3)
    assert (perfect["sd"], perfect["sd_floored"], perfect["difference"], perfect["p_value"]) == (
        pytest.approx(0.2, rel=1e-12),
        True,
        0.0,
        1.0,
    )
    assert (perfect["ci_low"], perfect["ci_high"]) == (pytest.approx(-half, rel=1e-12), pytest.approx(half, rel=1e-12))
    # An SD at or above the resolution is kept: differences 1.0 and 1.5 at 400 images (0.25): SD 0.354.
    kept = _paired_interval(pairs_frame([81.0, 81.5], [80.0, 80.0]), images=400)
    assert kept["sd_floored"] is False and kept["sd"] == pytest.approx(math.sqrt(0.125), rel=1e-12)


def test_without_a_known_test_set_size_a_zero_sd_is_not_floored():
    # images NaN (a data set of unknown size): nothing to floor at, so identical differences have se 0.
    same = _paired_interval(pairs_frame([82.0, 83.0, 84.0], [80.0, 81.0, 82.0]), images=math.nan)
    assert (same["difference"], same["sd"], same["sd_floored"], same["ci_low"], same["ci_high"], same["p_value"]) == (
        2.0,
        0.0,
        False,
        2.0,
        2.0,
        0.0,
    )
    zero = _paired_interval(pairs_frame([80.0, 81.0], [80.0, 81.0]), images=math.nan)
    assert zero["difference"] == 0.0 and math.isnan(zero["p_value"])  # 0 / 0


def test_the_effect_pairs_twins_by_seed_identity_and_counts_each_twins_seeds():
    # A on seeds 0, 1, 2; PA on seeds 0, 1, 3 (and seed 4, NaN): the pairs are seeds 0 and 1, differences 1, 3.
    results = results_frame(
        [
            ("r", "mnist", "A", 0, "clean", 0.0, 80.0),
            ("r", "mnist", "A", 1, "clean", 0.0, 82.0),
            ("r", "mnist", "A", 2, "clean", 0.0, 84.0),
            ("r", "mnist", "PA", 0, "clean", 0.0, 81.0),
            ("r", "mnist", "PA", 1, "clean", 0.0, 85.0),
            ("r", "mnist", "PA", 3, "clean", 0.0, 99.0),
            ("r", "mnist", "PA", 4, "clean", 0.0, math.nan),
        ]
    )
    effect = pushpull_effect(results, paper_cells())
    assert len(effect) == 1
    row = effect.iloc[0]
    assert (row["recipe"], row["plain"], row["model"], row["noise"], row["level"]) == ("r", "A", "PA", "clean", 0.0)
    counts = ("pairs", "seeds_pushpull", "seeds_plain", "diverged_pushpull", "diverged_plain")
    assert tuple(row[list(counts)]) == (2, 3, 3, 0, 0)
    assert (row["difference"], row["ci_low"], row["ci_high"], row["p_value"], row["q_value"]) == (
        2.0,
        pytest.approx(2.0 - T_975[1], rel=1e-12),
        pytest.approx(2.0 + T_975[1], rel=1e-12),
        pytest.approx(P_T2_DF1, rel=1e-9),
        pytest.approx(P_T2_DF1, rel=1e-9),  # the only tested cell of its family: q = p
    )


def test_scored_images_is_the_recipes_cap_within_the_data_sets_test_set():
    recipes = pd.DataFrame(
        {"recipe": ["small", "large", "uncapped"], "max_test_images": pd.array([500, 20000, None], dtype="Int64")}
    )
    assert scored_images(None, "small", "mnist") == 10000.0
    assert scored_images(recipes, "small", "mnist") == 500.0
    assert scored_images(recipes, "large", "cifar10") == 10000.0  # a cap above the test set scores all of it
    assert scored_images(recipes, "uncapped", "cifar100") == 10000.0
    assert scored_images(recipes, "absent", "mnist") == 10000.0
    assert scored_images(recipes, "small", "imagenet") == 500.0  # a data set of unknown size: the cap
    assert math.isnan(scored_images(recipes, "uncapped", "imagenet"))
    assert scored_images(recipes, "uncapped", "svhn") == 26032.0


def test_the_prediction_interval_is_t_times_sd_times_root_one_plus_one_over_n():
    half = prediction_half_width(pd.Series([2.0, 1.0, 3.0, 1.0]), pd.Series([3, 2, 1, 0]))
    assert half[0] == pytest.approx(T_975[2] * 2.0 * math.sqrt(4 / 3), rel=1e-12)
    assert half[1] == pytest.approx(T_975[1] * 1.0 * math.sqrt(3 / 2), rel=1e-12)
    assert half[2:].isna().all()  # under two seeds: none


def compared_cell(source, reading, noise, level, pushpull, difference, std):
    return {
        "recipe": "r",
        "paper_source": source,
        "reading": reading,
        "noise": noise,
        "level": level,
        "pushpull": pushpull,
        "difference": difference,
        "std": std,
    }


def test_reading_fit_is_the_rmse_per_reading_over_the_cells_that_have_several():
    table2 = "supplementary Table 2"
    compared = pd.DataFrame(
        [
            compared_cell(table2, "header", "poisson", 0.5, False, 3.0, 1.0),
            compared_cell(table2, "header", "poisson", 1.0, False, 4.0, 1.0),
            compared_cell(table2, "header", "poisson", 0.5, True, -1.0, 1.0),
            compared_cell(table2, "header", "poisson", 1.0, True, 1.0, 1.0),
            compared_cell(table2, "text", "poisson", 0.5, False, 1.0, math.nan),
            compared_cell(table2, "text", "poisson", 1.0, False, 1.0, math.nan),
            compared_cell(table2, "text", "poisson", 0.5, True, 0.0, 2.0),
            compared_cell(table2, "text", "poisson", 1.0, True, 0.0, math.nan),
            # one reading only: in no fit, however far off
            compared_cell("supplementary Table 1", "header", "gaussian", 0.1, False, 100.0, 1.0),
            compared_cell(table2, "header", "speckle", 0.1, True, 100.0, 1.0),
        ]
    )
    fit = reading_fit(compared)
    assert list(fit.columns) == ["recipe", "source", "reading", "models", "cells", "rmse", "seed_spread", "fits"]
    assert set(fit["source"]) == {table2}
    got = {
        (row.reading, row.models): (row.cells, row.rmse, row.seed_spread, None if pd.isna(row.fits) else bool(row.fits))
        for row in fit.itertuples()
    }
    expected = {
        # rmse: sqrt((9 + 16) / 2); the spread 1, so 3.54 > 2 x 1 does not fit
        ("header", "plain"): (2, math.sqrt(12.5), 1.0, False),
        ("header", "push-pull"): (2, 1.0, 1.0, True),
        ("header", "all"): (4, math.sqrt(27 / 4), 1.0, False),
        ("text", "plain"): (2, 1.0, math.nan, None),  # no SD: whether it fits cannot be told
        ("text", "push-pull"): (2, 0.0, 2.0, True),  # the spread over the cells that have one
        ("text", "all"): (4, math.sqrt(0.5), 2.0, True),
    }
    assert got.keys() == expected.keys()
    for key, (cells, rmse, spread, fits) in expected.items():
        assert got[key][0] == cells and got[key][1] == pytest.approx(rmse, rel=1e-12), key
        assert got[key][2] == pytest.approx(spread, rel=1e-12, nan_ok=True) and got[key][3] == fits, key
    assert reading_fit(compared[compared["reading"] == "header"]).empty


def test_noises_rank_clean_then_the_papers_in_its_order_then_the_others():
    noises = pd.Series(["poisson", "clean", "shot-clip", "speckle", "gaussian", "contrast"])
    assert list(noise_rank(noises)) == [3, 0, 4, 2, 1, 4]


def test_a_paper_table_has_one_block_per_recipe_and_unmeasured_cells_null_with_0_seeds():
    table = next(t for t in PAPER_TABLES if t.stem == "supp_table1")
    cells = cell_statistics(
        results_frame(
            [
                ("r1", "mnist", "A", 0, "clean", 0.0, 98.0),
                ("r1", "mnist", "A", 1, "clean", 0.0, 99.0),
                ("r2", "mnist", "PA", 0, "gaussian", 0.1, 90.0),
            ]
        )
    )
    laid_out = paper_table(table, cells, paper_results())
    models = ["A", "PA", "B", "PB", "C", "PC", "D", "PD"]
    assert list(zip(laid_out["recipe"], laid_out["model"])) == [("r1", m) for m in models] + [("r2", m) for m in models]
    first = laid_out[laid_out["recipe"] == "r1"].set_index("model")
    second = laid_out[laid_out["recipe"] == "r2"].set_index("model")
    assert (first.loc["A", "clean 0"], first.loc["A", "clean 0 std"], first.loc["A", "clean 0 seeds"]) == (
        98.5,
        pytest.approx(math.sqrt(0.5), rel=1e-12),
        2,
    )
    assert (second.loc["PA", "gaussian 0.1"], second.loc["PA", "gaussian 0.1 seeds"]) == (90.0, 1)
    assert math.isnan(second.loc["PA", "gaussian 0.1 std"])
    # every other cell of either block: null, 0 seeds
    assert int(laid_out.filter(like=" seeds").to_numpy().sum()) == 3
    assert int(laid_out.filter(regex=r"\d$").notna().to_numpy().sum()) == 2
    assert has_measurements(laid_out)
    # Nothing of the table measured: one block, recipe None, every cell null.
    wrn = cells.assign(dataset="cifar10", model="WRN-28-10")
    empty = paper_table(table, wrn, paper_results())
    assert list(empty["model"]) == models and empty["recipe"].isna().all()
    assert not has_measurements(empty) and (empty.filter(like=" seeds") == 0).all().all()


def fake_run(run_id: str, status: str, params: dict, tags: dict) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, status=status),
        data=SimpleNamespace(params={k: str(v) for k, v in params.items()}, tags=tags, metrics={}),
    )


def test_excluded_trials_name_each_reason_and_only_incomplete_or_recipeless_runs():
    specs = build_sweep("lenet")
    plain, pushpull = specs[0].params(), specs[4].params()  # A and PA, seed 0
    bare = {"dataset": "mnist", "model": "B", "seed": 1}  # an older engine's params: no recipe
    runs = [
        fake_run("r1", "FINISHED", plain, {"trial_key": "k1", "sweep": "lenet"}),
        fake_run("r2", "FAILED", pushpull, {"trial_key": "k2", "health": "diverged", "health_reason": "loss is nan"}),
        fake_run("r3", "FAILED", plain, {"trial_key": "k3", "error": "worker died"}),
        fake_run("r4", "RUNNING", plain, {"trial_key": "k4"}),
        fake_run("r5", "FINISHED", bare, {"trial_key": "k5"}),
        fake_run("r6", "FAILED", bare, {"trial_key": "k6", "error": "out of memory"}),
    ]
    excluded = excluded_trials(list(reversed(runs))).set_index("trial_key")
    assert list(excluded.index) == ["k2", "k3", "k4", "k5", "k6"]  # sorted; k1 finished with a recipe
    assert excluded["reason"].to_dict() == {
        "k2": "loss is nan",
        "k3": "worker died",
        "k4": "run is RUNNING",
        "k5": "its params make no recipe",
        "k6": "out of memory; its params make no recipe",
    }
    assert excluded["recipe"].to_dict() == {
        "k2": specs[4].recipe.id,
        "k3": specs[0].recipe.id,
        "k4": specs[0].recipe.id,
        "k5": "unknown",
        "k6": "unknown",
    }
    assert tuple(excluded.loc["k2", ["h", "alpha", "health"]]) == (2.0, 1.0, "diverged")
    assert math.isnan(excluded.loc["k3", "h"]) and excluded.loc["k3", "health"] == ""
    assert excluded.loc["k5", "seed"] == 1
    # Which runs make rows: a finished one; an incomplete one only on request; a diverged one never.
    assert [makes_rows(run, False) for run in runs] == [True, False, False, False, True, False]
    assert [makes_rows(run, True) for run in runs] == [True, False, True, True, True, True]
