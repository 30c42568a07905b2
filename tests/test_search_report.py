"""The searched (h, alpha): what a search metric means (sweep.objectives), each point's clean accuracy and
robustness, its Pareto front and its best (sweep.search_report), the figure, and the aggregator's tables and
report section. Every expected number is a literal worked out by hand from the frames below."""

import dataclasses
import math
import re
from types import SimpleNamespace

import matplotlib.text
import numpy as np
import pandas as pd
import pytest

from perturb import noise_suite
from sweep import report
from sweep.catalog import build_sweep
from sweep.metrics import noise_metric
from sweep.objectives import METRICS, check_metric, metric_families, metric_label, metric_value
from sweep.paper import paper_cells
from sweep.search_report import BEST, FRONT, TWIN, best_point_effect, search_figure, search_points, twin_points
from sweep.tables import aggregate, pushpull_effect

NEGATIVE_ZERO = re.compile(r"[-\u2212]0(\.0+)?(?![.\d])")  # -0, -0.00, and with matplotlib's minus sign

# (noise, level) of the hand-made frame: Gaussian variance 0 leaves the images unchanged and must be skipped
# (its accuracy, 0, would pull every mean down); contrast + Poisson at C = 1 is noise (Poisson noise is added).
SETTINGS = [
    ("gaussian", 0.0),
    ("gaussian", 0.1),
    ("gaussian", 0.3),
    ("speckle", 0.1),
    ("poisson", 0.5),
    ("poisson", 1.0),
]
# model, h, alpha -> per seed (0, 1): clean, then the accuracy at each of SETTINGS.
ACCURACIES = {
    ("PA", 1.0, 0.5): ([99, 0, 90, 80, 92, 70, 74], [98, 0, 88, 78, 90, 68, 72]),
    ("PA", 1.5, 1.0): ([97, 0, 92, 84, 94, 74, 78], [96, 0, 92, 84, 94, 74, 78]),
    ("PA", 2.0, 1.0): ([96, 0, 91, 83, 93, 73, 77], [96, 0, 91, 83, 93, 73, 77]),
    ("PA", 2.5, 1.5): ([95, 0, 95, 87, 96, 78, 82], [94, 0, 93, 85, 94, 76, 80]),
    ("PB", 2.0, 1.0): ([99, 0, 99, 99, 99, 99, 99], [99, 0, 99, 99, 99, 99, 99]),  # one (h, alpha): no search
    ("A", None, None): ([99.5, 0, 80, 70, 82, 60, 64], [99.5, 0, 80, 70, 82, 60, 64]),
}
# By hand, per seed: "noise" is the mean of the 5 settings after the identity one (gaussian 0.1, 0.3,
# speckle 0.1, poisson 0.5, 1), e.g. (1, 0.5) seed 0: (90 + 80 + 92 + 70 + 74) / 5 = 81.2, seed 1: 79.2.
# (h, alpha) -> clean, gaussian, speckle, poisson, noise (means over the two seeds)
EXPECTED = {
    (2.5, 1.5): (94.5, 90.0, 95.0, 79.0, 86.6),  # seeds: 356 + 82 = 438 / 5 = 87.6; 348 + 80 = 428 / 5 = 85.6
    (1.5, 1.0): (96.5, 88.0, 94.0, 76.0, 84.4),  # (92 + 84 + 94 + 74 + 78) / 5 = 422 / 5 = 84.4
    (2.0, 1.0): (96.0, 87.0, 93.0, 75.0, 83.4),  # (91 + 83 + 93 + 73 + 77) / 5 = 417 / 5 = 83.4
    (1.0, 0.5): (98.5, 84.0, 91.0, 71.0, 80.2),  # 81.2 and 79.2
}
TWIN_EXPECTED = (99.5, 75.0, 82.0, 62.0, 71.2)  # A: (80 + 70 + 82 + 60 + 64) / 5 = 356 / 5 = 71.2


def hand_results(
    accuracies: dict = ACCURACIES, recipe: str = "r1", dataset: str = "mnist", epochs: dict | None = None
) -> pd.DataFrame:
    """Rows as tidy_results makes them (recipe, dataset, model, pushpull, h, alpha, seed, epochs_trained,
    noise, level, accuracy, run_id), the identity setting included, so that search_points must skip it.
    ``epochs``: (model, h, alpha) -> epochs trained, for those that trained fewer than 3."""
    rows = []
    for (model, h, alpha), seeds in accuracies.items():
        for seed, (clean, *noisy) in enumerate(seeds):
            base = {"recipe": recipe, "dataset": dataset, "model": model, "pushpull": h is not None}
            base |= {"h": h, "alpha": alpha, "seed": seed, "run_id": f"{model}-{h}-{alpha}-{seed}"}
            base["epochs_trained"] = (epochs or {}).get((model, h, alpha), 3)
            rows.append({**base, "noise": "clean", "level": 0.0, "accuracy": float(clean)})
            rows += [{**base, "noise": n, "level": v, "accuracy": float(a)} for (n, v), a in zip(SETTINGS, noisy)]
    return pd.DataFrame(rows).astype({"h": "float64", "alpha": "float64"})


# --- sweep.objectives ---------------------------------------------------------------------------------------


def test_metric_names_are_clean_noise_and_one_per_paper_noise():
    assert list(METRICS) == ["clean", "noise", "noise/gaussian", "noise/speckle", "noise/poisson"]
    assert [check_metric(name) for name in METRICS] == list(METRICS)
    assert metric_families("clean") == () and metric_families("noise") == ("gaussian", "speckle", "poisson")
    assert metric_families("noise/speckle") == ("speckle",)
    assert metric_label("noise/gaussian") == "mean accuracy under Gaussian noise (%)"
    assert metric_label("noise") == "mean accuracy under noise (%)"
    assert metric_label("clean") == "clean test accuracy (%)"


@pytest.mark.parametrize("name", ["accuracy", "noise/contrast", "noise/", "Noise", "noise/gaussian/0.1"])
def test_an_unknown_metric_is_a_one_line_error_listing_the_allowed(name):
    with pytest.raises(ValueError) as error:
        check_metric(name)
    assert str(error.value) == (
        f"unknown search metric {name!r}: expected one of clean, noise, noise/gaussian, noise/speckle, noise/poisson"
    )
    with pytest.raises(ValueError, match="unknown search metric"):
        metric_value(90.0, {}, name)


def test_metric_value_averages_the_settings_that_change_the_images():
    accuracies = {
        ("gaussian", 0.0): 0.0,  # the clean images: skipped
        ("speckle", 0.0): 0.0,  # likewise
        ("gaussian", 0.1): 90.0,
        ("gaussian", 0.5): 60.0,
        ("speckle", 0.1): 80.0,
        ("poisson", 1.0): 70.0,  # contrast 1, then Poisson noise: noise
        ("contrast", 0.5): 10.0,  # not a noise of the paper's suite: ignored
    }
    assert metric_value(95.0, accuracies, "clean") == 95.0
    assert metric_value(95.0, accuracies, "noise") == 75.0  # (90 + 60 + 80 + 70) / 4
    assert metric_value(95.0, accuracies, "noise/gaussian") == 75.0  # (90 + 60) / 2
    assert metric_value(None, accuracies, "noise/speckle") == 80.0
    assert metric_value(None, accuracies, "noise/poisson") == 70.0


def test_metric_value_is_nan_with_nothing_to_average_or_a_nan_accuracy():
    assert math.isnan(metric_value(None, {("gaussian", 0.1): 90.0}, "clean"))
    assert math.isnan(metric_value(95.0, {}, "noise"))
    assert math.isnan(metric_value(95.0, {("speckle", 0.0): 95.0, ("gaussian", 0.1): 90.0}, "noise/speckle"))
    assert math.isnan(metric_value(95.0, {("gaussian", 0.1): 90.0, ("gaussian", 0.2): math.nan}, "noise/gaussian"))
    assert metric_value(95.0, {("gaussian", 0.1): 90.0, ("speckle", 0.2): math.nan}, "noise/gaussian") == 90.0


# --- sweep.search_report ------------------------------------------------------------------------------------


def test_a_point_stopped_early_is_listed_last_and_is_neither_best_nor_on_the_front():
    # (2.5, 1.5) has the best robustness (86.6) but trained 1 epoch of 3: ASHA stopped it.
    points = search_points(hand_results(epochs={("PA", 2.5, 1.5): 1}))
    assert points[["h", "alpha", "epochs", "pareto", "best"]].values.tolist() == [
        [1.5, 1.0, 3, True, True],
        [2.0, 1.0, 3, False, False],
        [1.0, 0.5, 3, True, False],
        [2.5, 1.5, 1, False, False],
    ]


def test_search_points_score_each_h_and_alpha_best_first_with_its_pareto_front():
    points = search_points(hand_results())
    assert list(points.columns) == [
        "recipe",
        "dataset",
        "model",
        "h",
        "alpha",
        "seeds",
        "epochs",
        "clean",
        "noise/gaussian",
        "noise/speckle",
        "noise/poisson",
        "metric",
        "robustness",
        "pareto",
        "best",
    ]
    # PB has one (h, alpha): no search; the plain A is no point
    assert set(zip(points["recipe"], points["dataset"], points["model"])) == {("r1", "mnist", "PA")}
    assert list(zip(points["h"], points["alpha"])) == [(2.5, 1.5), (1.5, 1.0), (2.0, 1.0), (1.0, 0.5)]
    assert list(points["seeds"]) == [2, 2, 2, 2] and set(points["metric"]) == {"noise"}
    numbers = points[["clean", "noise/gaussian", "noise/speckle", "noise/poisson", "robustness"]].to_numpy()
    order = [(2.5, 1.5), (1.5, 1.0), (2.0, 1.0), (1.0, 0.5)]
    assert numbers == pytest.approx(np.array([EXPECTED[k] for k in order]))
    # (2, 1) is below (1.5, 1) on both axes; the others each beat the rest on one
    assert list(points["pareto"]) == [True, True, False, True]
    assert list(points["best"]) == [True, False, False, False]


def test_a_family_metric_ranks_by_that_family():
    points = search_points(hand_results(), "noise/poisson")
    assert list(zip(points["h"], points["alpha"])) == [(2.5, 1.5), (1.5, 1.0), (2.0, 1.0), (1.0, 0.5)]
    assert list(points["robustness"]) == pytest.approx([79.0, 76.0, 75.0, 71.0])
    assert set(points["metric"]) == {"noise/poisson"}


def test_the_clean_metric_makes_the_cleanest_point_best_and_alone_on_the_front():
    points = search_points(hand_results(), "clean")
    assert list(zip(points["h"], points["alpha"])) == [(1.0, 0.5), (1.5, 1.0), (2.0, 1.0), (2.5, 1.5)]
    assert list(points["robustness"]) == pytest.approx([98.5, 96.5, 96.0, 94.5])
    assert list(points["pareto"]) == [True, False, False, False]
    assert list(points["best"]) == [True, False, False, False]


def test_mode_min_turns_the_robustness_axis_round():
    points = search_points(hand_results(), "noise", mode="min")
    assert list(zip(points["h"], points["alpha"])) == [(1.0, 0.5), (2.0, 1.0), (1.5, 1.0), (2.5, 1.5)]
    # (1, 0.5) has the highest clean accuracy and the lowest robustness: it dominates every other point
    assert list(points["pareto"]) == [True, False, False, False]
    assert list(points["best"]) == [True, False, False, False]
    with pytest.raises(ValueError, match="unknown search mode 'up': expected one of max, min"):
        search_points(hand_results(), "noise", mode="up")


def test_ties_go_to_the_higher_clean_accuracy_then_the_lower_h_and_alpha():
    flat = [90, 0, 80, 80, 80, 80, 80]  # noise 80 on every point
    accuracies = {
        ("PA", 1.0, 1.0): (flat, flat),
        ("PA", 2.0, 1.0): ([91, *flat[1:]], [91, *flat[1:]]),
        ("PA", 1.5, 0.5): ([91, *flat[1:]], [91, *flat[1:]]),
        ("PA", 1.5, 0.25): ([91, *flat[1:]], [91, *flat[1:]]),
    }
    points = search_points(hand_results(accuracies))
    assert list(zip(points["h"], points["alpha"])) == [(1.5, 0.25), (1.5, 0.5), (2.0, 1.0), (1.0, 1.0)]
    assert list(points["best"]) == [True, False, False, False]
    # equal points do not dominate each other; (1, 1) is as robust as they are, and less clean
    assert list(points["pareto"]) == [True, True, True, False]


def test_a_seed_with_a_nan_accuracy_is_left_out_of_its_means():
    results = hand_results()
    lost = (results["h"] == 1.0) & (results["seed"] == 1) & (results["noise"] == "poisson") & (results["level"] == 1.0)
    results.loc[lost, "accuracy"] = math.nan
    point = search_points(results).set_index(["h", "alpha"]).loc[(1.0, 0.5)]
    # seed 1's poisson and noise means are NaN: seed 0's alone; its clean, gaussian and speckle stay means of two
    assert (point["seeds"], point["clean"], point["noise/gaussian"]) == (2, 98.5, 84.0)
    assert (point["noise/poisson"], point["robustness"]) == (pytest.approx(72.0), pytest.approx(81.2))


def test_groups_are_kept_apart_by_recipe_and_data_set():
    two = pd.concat([hand_results(), hand_results(recipe="r2"), hand_results(dataset="cifar10")], ignore_index=True)
    points = search_points(two)
    assert list(dict.fromkeys(zip(points["recipe"], points["dataset"]))) == [
        ("r1", "cifar10"),
        ("r1", "mnist"),
        ("r2", "mnist"),
    ]
    assert list(points.groupby(["recipe", "dataset"], sort=False)["best"].sum()) == [1, 1, 1]


def test_nothing_searched_is_an_empty_frame_with_the_columns():
    one = {k: v for k, v in ACCURACIES.items() if k[0] != "PA"}
    points = search_points(hand_results(one))
    assert points.empty and "robustness" in points and points["pareto"].dtype == bool
    assert twin_points(hand_results(one), points).empty


def test_the_plain_twin_is_scored_the_same_way():
    results = hand_results()
    twins = twin_points(results, search_points(results))
    assert list(twins.columns) == [
        "recipe",
        "dataset",
        "model",
        "plain",
        "seeds",
        "clean",
        "noise/gaussian",
        "noise/speckle",
        "noise/poisson",
        "metric",
        "robustness",
    ]
    assert twins[["recipe", "dataset", "model", "plain", "seeds", "metric"]].values.tolist() == [
        ["r1", "mnist", "PA", "A", 2, "noise"]
    ]
    numbers = twins[["clean", "noise/gaussian", "noise/speckle", "noise/poisson", "robustness"]].to_numpy()
    assert numbers == pytest.approx(np.array([TWIN_EXPECTED]))
    without = results[results["model"] != "A"]
    assert twin_points(without, search_points(without)).empty


def test_the_best_points_effect_is_its_rows_of_pushpull_effect():
    results = hand_results()
    effect = pushpull_effect(results, paper_cells())
    best = best_point_effect(effect, search_points(results))
    assert list(best.columns) == list(effect.columns)
    assert set(zip(best["model"], best["h"], best["alpha"])) == {("PA", 2.5, 1.5)}
    # clean, and the 5 noisy settings (the identity one is a row of its own in a hand-made frame)
    assert len(best) == 7
    clean = best[best["noise"] == "clean"].iloc[0]
    assert (clean["plain"], clean["difference"], clean["pairs"]) == ("A", -5.0, 2)  # 95 - 99.5, 94 - 99.5
    gaussian = best[(best["noise"] == "gaussian") & (best["level"] == 0.1)].iloc[0]
    assert gaussian["difference"] == 14.0  # 95 - 80, 93 - 80


def test_the_best_points_effect_matches_every_key():
    keys = ["recipe", "dataset", "plain", "model", "h", "alpha", "noise", "level"]
    rows = [
        ("r1", "mnist", "A", "PA", 2.5, 1.5, "clean", 0.0),  # the best point
        ("r2", "mnist", "A", "PA", 2.5, 1.5, "clean", 0.0),  # another recipe
        ("r1", "cifar10", "A", "PA", 2.5, 1.5, "clean", 0.0),  # another data set
        ("r1", "mnist", "A", "PA", 2.5, 1.0, "clean", 0.0),  # another alpha
        ("r1", "mnist", "A", "PA", 2.0, 1.5, "clean", 0.0),  # another h
        ("r1", "mnist", "B", "PB", 2.5, 1.5, "clean", 0.0),  # another model
        ("r1", "mnist", "A", "PA", 2.5, 1.5, "gaussian", 0.1),  # the best point
    ]
    effect = pd.DataFrame(rows, columns=keys).assign(difference=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    best = best_point_effect(effect, search_points(hand_results()))
    assert list(best["difference"]) == [1.0, 7.0]
    assert best_point_effect(effect.iloc[:0], search_points(hand_results())).empty


# --- the figure ---------------------------------------------------------------------------------------------


def line(ax, gid: str):
    (found,) = [line for line in ax.lines if line.get_gid() == gid]
    return found


def test_the_figure_draws_every_point_the_front_the_best_and_the_plain_twin(tmp_path):
    results = hand_results()
    points = search_points(results, "noise/gaussian")
    path = tmp_path / "search.png"
    figure = search_figure(points, twin_points(results, points, "noise/gaussian"), path, "noise/gaussian")
    assert path.stat().st_size > 0
    (ax,) = [ax for ax in figure.axes if ax.get_label() == "r1 mnist PA"]
    assert ax.get_xlabel() == "clean test accuracy (%)"
    assert ax.get_ylabel() == "mean accuracy under Gaussian noise (%)"
    (dots,) = ax.collections
    assert sorted(map(tuple, dots.get_offsets().tolist())) == [(94.5, 90.0), (96.0, 87.0), (96.5, 88.0), (98.5, 84.0)]
    # the front: a step line through exactly the Pareto points, by clean accuracy
    front = line(ax, FRONT)
    assert front.get_xydata().tolist() == [[94.5, 90.0], [96.5, 88.0], [98.5, 84.0]]
    assert front.get_drawstyle() == "steps-pre"
    star = line(ax, BEST)
    assert (star.get_marker(), star.get_xydata().tolist()) == ("*", [[94.5, 90.0]])
    twin = line(ax, TWIN)
    assert (twin.get_marker(), twin.get_xydata().tolist()) == ("s", [[99.5, 75.0]])
    assert [t.get_text() for t in ax.texts] == ["h=2.5, alpha=1.5", "A"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "(h, alpha) searched, colour: alpha",
        "Pareto front",
        "best: h=2.5, alpha=1.5",
        "A (plain twin)",
    ]
    assert any(ax.get_label() == "<colorbar>" and ax.get_ylabel() == "alpha" for ax in figure.axes)
    texts = [text.get_text() for text in figure.findobj(matplotlib.text.Text)]
    assert texts and not [text for text in texts if NEGATIVE_ZERO.search(text)]


def test_the_figure_has_one_panel_per_group_and_no_twin_where_none_was_measured(tmp_path):
    results = pd.concat([hand_results(), hand_results(recipe="r2")], ignore_index=True)
    results = results[~((results["recipe"] == "r2") & (results["model"] == "A"))]
    points = search_points(results)
    figure = search_figure(points, twin_points(results, points), tmp_path / "search.png")
    panels = {ax.get_label(): ax for ax in figure.axes if ax.get_label() != "<colorbar>"}
    assert list(panels) == ["r1 mnist PA", "r2 mnist PA"]
    assert [gid for gid in (line.get_gid() for line in panels["r2 mnist PA"].lines)] == [FRONT, BEST]
    with pytest.raises(ValueError, match="no searched point"):
        search_figure(points.iloc[:0], points.iloc[:0], tmp_path / "none.png")


# --- the aggregator -----------------------------------------------------------------------------------------

LENET = build_sweep("lenet", seeds=2)
PA = [s for s in LENET if s.model.name == "PA"]
A = [s for s in LENET if s.model.name == "A"]
GRID = [(2.0, 1.0), (1.5, 0.5)]


def fake_run(spec, index: int) -> SimpleNamespace:
    """A finished run of ``spec`` as MLflow gives it: push-pull scores 1 + h - alpha above 80 under noise,
    and its h below 90 when clean; the plain twin 80 and 90; seed 1 one point more."""
    pushpull = spec.model.pushpull
    clean = 90.0 - (spec.model.h if pushpull else 0.0) + spec.seed
    noisy = 80.0 + ((1 + spec.model.h - spec.model.alpha) if pushpull else 0.0) + spec.seed
    metrics = {"epoch": 3, "test_acc": clean}
    metrics |= {noise_metric(p.noise, p.level): clean if p.is_identity else noisy for p in noise_suite("mnist")}
    return SimpleNamespace(
        info=SimpleNamespace(run_id=f"run-{index}", status="FINISHED", start_time=None, end_time=None),
        data=SimpleNamespace(
            params={k: str(v) for k, v in spec.params().items()},
            tags={"trial_key": spec.key, "sweep": "lenet"},
            metrics=metrics,
        ),
    )


def fake_runs(grid: list[tuple[float, float]]) -> list:
    specs = [dataclasses.replace(s, model=dataclasses.replace(s.model, h=h, alpha=a)) for s in PA for h, a in grid]
    return [fake_run(spec, i) for i, spec in enumerate(A + specs)]


def test_the_aggregator_writes_the_search_tables_only_where_something_was_searched():
    one = aggregate(fake_runs([(2.0, 1.0)]), [])
    assert one.search_points is None and one.search_best_effect is None
    assert not {"search_points", "search_best_effect"} & set(one.files())

    searched = aggregate(fake_runs(GRID), [])
    files = list(searched.files())
    assert files[files.index("pushpull_effect") + 1 :][:2] == ["search_points", "search_best_effect"]
    points = searched.files()["search_points"]
    # noise: 80 + 1 + h - alpha + seed, so (1.5, 0.5) scores 82 + 0.5 = 82.5, (2, 1) 82.5 too: a tie, which
    # the clean accuracy breaks (90 - h + seed: 89 for h 1.5, 88.5 for h 2)
    assert points[["h", "alpha", "seeds", "clean", "robustness", "pareto", "best"]].values.tolist() == [
        [1.5, 0.5, 2, 89.0, 82.5, True, True],
        [2.0, 1.0, 2, 88.5, 82.5, False, False],
    ]
    best = searched.files()["search_best_effect"]
    assert set(zip(best["h"], best["alpha"])) == {(1.5, 0.5)} and len(best) == 1 + 22
    assert best.loc[best["noise"] == "clean", "difference"].tolist() == [-1.5]  # 88.5 - 90, 89.5 - 91
    assert set(best.loc[best["noise"] != "clean", "difference"]) == {2.0}
    # another suite has no search tables (its noises are not the metric's)
    assert aggregate(fake_runs(GRID), [], suite="shot").search_points is None
    with pytest.raises(ValueError, match="unknown search metric 'noise/shot'"):
        aggregate(fake_runs(GRID), [], search_metric="noise/shot")


def test_the_report_has_a_searched_section_and_figure(tmp_path):
    aggregation = aggregate(fake_runs(GRID), [], search_metric="noise/gaussian")
    written = report.write_report(aggregation, tmp_path)
    # No paper table (no built-in study named): the figures of a study of one's own, one per noise, with every
    # (h, alpha) measured in a second one, then the search's
    per_noise = [f"{noise}{every}.png" for noise in ("gaussian", "speckle", "poisson") for every in ("", "_h_alpha")]
    assert [p.name for p in written] == [*per_noise, "search.png", "report.md"]
    text = (tmp_path / "report.md").read_text()
    section = text[text.index("## Searched (h, alpha)") :]
    recipe = PA[0].recipe.id
    assert section.startswith("## Searched (h, alpha)\n\nEvery push-pull model trained with two or more (h, alpha)")
    assert (
        "Robustness is **noise/gaussian**, the mean accuracy (%) over the settings of the paper's Gaussian" in section
    )
    table = (
        f"### Recipe {recipe}, mnist, PA: 2 (h, alpha)\n\n"
        "| point | seeds | epochs | clean | gaussian (mean) | speckle (mean) | poisson (mean) "
        "| noise/gaussian (robustness) | Pareto | best |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        "| h=1.5, alpha=0.5 | 2 | 3 | 89.00 | 82.50 | 82.50 | 82.50 | 82.50 | yes | **best** |\n"
        "| h=2, alpha=1 | 2 | 3 | 88.50 | 82.50 | 82.50 | 82.50 | 82.50 |  |  |\n"
        "| A (plain twin) | 2 |  | 90.50 | 80.50 | 80.50 | 80.50 | 80.50 |  |  |\n"
    )
    assert table in section
    # clean and the metric's family, paired by seed: two equal differences, no spread beyond the resolution
    assert "Best h=1.5, alpha=0.5 against A, paired by seed" in section
    assert "- clean: -1.50 [" in section and "(2 pairs)" in section
    assert (
        "- gaussian (7 levels): differences from +2.00 to +2.00; of the 7 levels with an interval, 0 lie above 0, 0 below, 7 cross it"
        in (section)
    )
    assert "- speckle" not in section  # not the metric's family
    assert "![search](search.png)" in section and "-0.00" not in text
