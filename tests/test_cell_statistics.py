"""The push-pull effect's and the cells' statistics at their edges: NaN accuracies, a zero spread, one seed,
seeds missing or diverged in one twin, duplicate rows, runs without a recipe, and the q-values of a family.

Every expected number is computed here by hand (numpy, scipy's t distribution) from the designed accuracies.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models import plain_name
from sweep.catalog import build_sweep
from sweep.paper import paper_cells
from sweep.report import _trials_lines
from sweep.runs import read_runs, select_runs
from sweep.specs import TrialSpec
from sweep.tables import _benjamini_hochberg, aggregate, pushpull_effect, tidy_results
from sweep.tracking import Tracker
from tests.test_aggregate import log_trial

T_975 = {1: 12.706204736174707, 2: 4.302652729749462}  # Student t 97.5 % quantiles by degrees of freedom
PAPER = build_sweep("lenet", seeds=3)  # scored on MNIST's 10000 test images: resolution 0.01 points
SMOKE = build_sweep("lenet", seeds=3, profile="smoke")  # max_test_images 500: resolution 0.2 points

# Push-pull minus plain per seed 0, 1, 2 in the smoke recipe's clean family (4 cells, one per twin pair).
CLEAN_SMOKE = {"A": (1.0, 2.0, 4.0), "B": (2.0, 2.5, 3.0), "C": (-3.0, -2.5, -2.0), "D": (0.5, -0.5, 1.5)}
NEAR_EQUAL = (1.0, 1.1, 1.0)  # speckle 0.1: an SD of 0.058, below 0.2 (smoke) and above 0.01 (paper)
WITH_NAN = (1.0, 1.2, math.nan)  # gaussian 0.1, paper recipe, PA: seed 2 has no accuracy


def plain_accuracy(spec: TrialSpec, noise: str, level: float) -> float:
    return 80.0 - 10 * level + 2 * spec.seed


def designed_accuracy(spec: TrialSpec, noise: str, level: float) -> float:
    """Plain models score 80 - 10 level + 2 seed; push-pull adds the effect designed for the cell."""
    smoke = spec.recipe.max_test_images is not None
    twin, seed = plain_name(spec.model.name), spec.seed
    if smoke and twin == "D" and (noise, level) == ("poisson", 2.5):
        return 100.0  # both twins perfect on every seed: no spread, and a binomial standard error of 0
    accuracy = plain_accuracy(spec, noise, level)
    if not spec.model.pushpull:
        return accuracy
    if noise == "clean":
        effect = CLEAN_SMOKE[twin][seed] if smoke else 2.0  # paper recipe: the same 2 points on every seed
    elif (noise, level) == ("speckle", 0.1):
        effect = NEAR_EQUAL[seed]
    elif (noise, level) == ("gaussian", 0.1) and not smoke:
        effect = WITH_NAN[seed]
    else:
        effect = (1.0, 2.0, 4.0)[seed]
    return accuracy + effect


def named(specs: list[TrialSpec], model: str, seed: int) -> TrialSpec:
    return next(s for s in specs if s.model.name == model and s.seed == seed)


DIVERGED = [named(PAPER, "PB", 2), named(PAPER, "C", 1)]
NEVER_RUN = [named(PAPER, "PC", 2), *(named(PAPER, m, s) for m in ("D", "PD") for s in (1, 2))]
LEGACY = [("legacy-A-0", "A", 0, 50.0), ("legacy-A-0-again", "A", 0, 52.0), ("legacy-PA-0", "PA", 0, 60.0)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """One lenet experiment: the paper recipe (PB seed 2 and C seed 1 diverged; PC seed 2, D and PD seeds 1
    and 2 never ran; A seed 0 ran twice, in two launches), the smoke recipe complete, and three runs of an
    older engine whose params make no recipe (two of them of A seed 0)."""
    root = tmp_path_factory.mktemp("edges")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri, "lenet", (root / "artifacts").as_uri())
    for spec in PAPER:
        if spec not in NEVER_RUN:
            log_trial(tracker, spec, "DIVERGED" if spec in DIVERGED else "FINISHED", accuracy=designed_accuracy)
    for spec in SMOKE:
        log_trial(tracker, spec, accuracy=designed_accuracy)
    log_trial(Tracker(uri, "lenet", launch="again"), named(PAPER, "A", 0), accuracy=designed_accuracy)
    legacy = {}
    for key, model, seed, accuracy in LEGACY:
        params = {"dataset": "mnist", "model": model, "seed": str(seed), "pushpull": str(model.startswith("P"))}
        params.update({"h": "2.0", "alpha": "1.0"} if model.startswith("P") else {})
        run = tracker.client.create_run(tracker.experiment_id, tags={"trial_key": key, "sweep": "lenet"})
        for name, value in params.items():
            tracker.client.log_param(run.info.run_id, name, value)
        tracker.client.log_metric(run.info.run_id, "test_acc", accuracy, step=3)
        tracker.client.set_terminated(run.info.run_id, "FINISHED")
        legacy[key] = run.info.run_id
    runs, _ = read_runs(uri, ["lenet"])
    chosen, _ = select_runs(runs)
    return {"runs": runs, "aggregation": aggregate(chosen, ["lenet"]), "legacy": legacy}


def cell(effect: pd.DataFrame, recipe: str, model: str, noise: str, level: float) -> pd.Series:
    rows = effect[
        (effect["recipe"] == recipe)
        & (effect["model"] == model)
        & (effect["noise"] == noise)
        & (effect["level"] == level)
    ]
    assert len(rows) == 1
    return rows.iloc[0]


def paired_t(differences: np.ndarray, sd: float) -> tuple[float, float, float]:
    """(ci_low, ci_high, p) of the paired t test of ``differences`` with standard deviation ``sd``."""
    n = len(differences)
    se = sd / np.sqrt(n)
    mean = differences.mean()
    half = T_975[n - 1] * se
    return mean - half, mean + half, 2 * stats.t.sf(abs(mean) / se, n - 1)


def test_the_effect_has_estimates_and_counts_and_no_verdict(store):
    effect = store["aggregation"].effect
    assert list(effect.columns) == [
        "recipe",
        "dataset",
        "plain",
        "model",
        "h",
        "alpha",
        "noise",
        "level",
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
        "paper_difference",
        "paper_source",
        "paper_difference_text",
        "paper_source_text",
        "paper_difference_swapped",
        "paper_source_swapped",
    ]
    assert effect["sd_floored"].dtype == bool
    for column in ("pairs", "seeds_pushpull", "seeds_plain", "diverged_pushpull", "diverged_plain"):
        assert effect[column].dtype == "int64", column


def test_a_nan_accuracy_is_dropped_before_counting(store):
    effect = store["aggregation"].effect
    row = cell(effect, PAPER[0].recipe.id, "PA", "gaussian", 0.1)
    # n = 2, mean 1.1, SD sqrt(0.02): interval 1.1 -+ t(0.975, 1) * sqrt(0.02) / sqrt(2) = 1.1 -+ 1.27
    half = T_975[1] * np.sqrt(0.02) / np.sqrt(2)
    p = 2 * stats.t.sf(1.1 / (np.sqrt(0.02) / np.sqrt(2)), 1)
    assert (row["pairs"], row["seeds_pushpull"], row["seeds_plain"]) == (2, 2, 3)
    assert (row["difference"], row["ci_low"], row["ci_high"], row["p_value"], row["sd"]) == (
        pytest.approx(1.1, abs=1e-9),
        pytest.approx(1.1 - half, abs=1e-9),
        pytest.approx(1.1 + half, abs=1e-9),
        pytest.approx(p, rel=1e-6),
        pytest.approx(np.sqrt(0.02), abs=1e-9),
    )
    assert not row["sd_floored"]

    cells = store["aggregation"].cells
    pa = cells[
        (cells["recipe"] == PAPER[0].recipe.id)
        & (cells["model"] == "PA")
        & (cells["noise"] == "gaussian")
        & (cells["level"] == 0.1)
    ].iloc[0]
    finite = np.array([79.0 + 0 + 1.0, 79.0 + 2 + 1.2])  # 80 - 10 * 0.1 + 2 seed + effect, seeds 0 and 1
    assert (pa["seeds"], pa["accuracy"], pa["std"]) == (
        2,
        pytest.approx(finite.mean(), abs=1e-9),
        pytest.approx(finite.std(ddof=1), abs=1e-9),
    )


def test_a_zero_sd_is_floored_at_the_binomial_standard_error(store):
    effect = store["aggregation"].effect
    # Paper recipe, clean: push-pull 2 points above on every seed; arms 84 % and 82 % over 10000 images.
    row = cell(effect, PAPER[0].recipe.id, "PA", "clean", 0.0)
    se = 100 * np.sqrt(0.84 * 0.16 / 10000 + 0.82 * 0.18 / 10000)
    low, high, p = paired_t(np.array([2.0, 2.0, 2.0]), se)
    assert bool(row["sd_floored"]) and row["sd"] == pytest.approx(se, rel=1e-9)
    assert (row["difference"], row["ci_low"], row["ci_high"], row["p_value"]) == (
        pytest.approx(2.0, abs=1e-9),
        pytest.approx(2.0 - T_975[2] * se / np.sqrt(3), rel=1e-9),
        pytest.approx(high, rel=1e-9),
        pytest.approx(p, rel=1e-6),
    )
    assert low == pytest.approx(row["ci_low"], rel=1e-9)


def test_an_sd_below_the_resolution_of_the_recipes_test_images_is_floored(store):
    effect = store["aggregation"].effect
    differences = np.array(NEAR_EQUAL)
    # 10000 images (paper recipe): 0.058 is above the resolution of 0.01 points, kept as it is.
    paper = cell(effect, PAPER[0].recipe.id, "PA", "speckle", 0.1)
    assert not paper["sd_floored"] and paper["sd"] == pytest.approx(differences.std(ddof=1), rel=1e-6)
    # 500 images (smoke recipe's max_test_images): below 0.2, floored. Plain 79, 81, 83: mean 81 %.
    smoke = cell(effect, SMOKE[0].recipe.id, "PA", "speckle", 0.1)
    p1, p2 = (81 + differences.mean()) / 100, 0.81
    se = 100 * np.sqrt(p1 * (1 - p1) / 500 + p2 * (1 - p2) / 500)
    low, high, p = paired_t(differences, se)
    assert bool(smoke["sd_floored"]) and smoke["sd"] == pytest.approx(se, rel=1e-6)
    assert (smoke["ci_low"], smoke["ci_high"], smoke["p_value"]) == (
        pytest.approx(low, rel=1e-6),
        pytest.approx(high, rel=1e-6),
        pytest.approx(p, rel=1e-6),
    )
    # Both twins at 100 % on every seed: a binomial standard error of 0, so the resolution itself.
    perfect = cell(effect, SMOKE[0].recipe.id, "PD", "poisson", 2.5)
    half = T_975[2] * 0.2 / np.sqrt(3)
    assert bool(perfect["sd_floored"]) and perfect["sd"] == pytest.approx(0.2, rel=1e-9)
    assert (perfect["difference"], perfect["ci_low"], perfect["ci_high"], perfect["p_value"]) == (
        0.0,
        pytest.approx(-half, rel=1e-9),
        pytest.approx(half, rel=1e-9),
        1.0,
    )


def test_one_seed_has_no_interval_and_no_p_value(store):
    effect = store["aggregation"].effect
    rows = effect[(effect["recipe"] == PAPER[0].recipe.id) & (effect["model"] == "PD")]
    assert len(rows) == 23 and set(rows["pairs"]) == set(rows["seeds_pushpull"]) == set(rows["seeds_plain"]) == {1}
    assert rows[["ci_low", "ci_high", "p_value", "q_value", "sd"]].isna().all().all()
    assert not rows["sd_floored"].any()
    clean = cell(effect, PAPER[0].recipe.id, "PD", "clean", 0.0)
    assert clean["difference"] == 2.0  # seed 0's difference is the estimate


def test_seeds_are_counted_per_twin_with_the_diverged_ones(store):
    effect = store["aggregation"].effect
    paper = effect[effect["recipe"] == PAPER[0].recipe.id]
    counts = ["pairs", "seeds_pushpull", "seeds_plain", "diverged_pushpull", "diverged_plain"]
    # PB seed 2 diverged: two pairs.
    pb = paper[paper["model"] == "PB"]
    assert len(pb) == 23 and pb[counts].drop_duplicates().values.tolist() == [[2, 2, 3, 1, 0]]
    # PC seed 2 never ran, C seed 1 diverged: only seed 0 has both twins.
    pc = paper[paper["model"] == "PC"]
    assert len(pc) == 23 and pc[counts].drop_duplicates().values.tolist() == [[1, 2, 2, 0, 1]]
    assert pc["ci_low"].isna().all() and pc["p_value"].isna().all()
    # Smoke recipe: nothing diverged there (a diverged seed counts in its own recipe only).
    smoke = effect[effect["recipe"] == SMOKE[0].recipe.id]
    assert smoke[counts].drop_duplicates().values.tolist() == [[3, 3, 3, 0, 0]]


def test_q_values_are_benjamini_hochberg_within_a_noise_family(store):
    effect = store["aggregation"].effect
    family = effect[(effect["recipe"] == SMOKE[0].recipe.id) & (effect["noise"] == "clean")].set_index("plain")
    assert sorted(family.index) == ["A", "B", "C", "D"]
    p = {}
    for twin, differences in CLEAN_SMOKE.items():
        differences = np.array(differences)
        t = abs(differences.mean()) / (differences.std(ddof=1) / np.sqrt(3))
        p[twin] = 2 * stats.t.sf(t, 2)
    # Benjamini-Hochberg by hand: sort, p_(i) * m / i, running minimum from the largest down, at most 1.
    order = sorted(p, key=p.get)
    q, running = {}, 1.0
    for rank in range(len(order), 0, -1):
        running = min(running, p[order[rank - 1]] * len(order) / rank)
        q[order[rank - 1]] = running
    assert len(set(q.values())) > 1  # the adjustment does more than repeat one number
    for twin in CLEAN_SMOKE:
        assert family.loc[twin, "p_value"] == pytest.approx(p[twin], rel=1e-6)
        assert family.loc[twin, "q_value"] == pytest.approx(q[twin], rel=1e-6)
    assert (family["q_value"] >= family["p_value"]).all()


def test_the_benjamini_hochberg_fallback_matches_scipy_and_the_hand_computation(monkeypatch):
    p = np.array([0.01, 0.04, 0.03, 0.20])
    hand = np.array([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20])  # p_(i) * 4 / i: .04, .06, .0533, .2; min from above
    assert _benjamini_hochberg(p) == pytest.approx(hand, rel=1e-12)
    monkeypatch.delattr(stats, "false_discovery_control", raising=False)
    assert _benjamini_hochberg(p) == pytest.approx(hand, rel=1e-12)


def test_two_rows_of_one_seed_are_a_one_line_error_naming_the_key(store):
    results = tidy_results([r for r in store["runs"] if r.data.tags.get("trial_key") not in store["legacy"]])
    twice = results[(results["model"] == "A") & (results["seed"] == 0) & (results["recipe"] == PAPER[0].recipe.id)]
    run_ids = sorted(set(twice["run_id"]))
    assert len(run_ids) == 2
    with pytest.raises(ValueError) as raised:
        pushpull_effect(results, paper_cells())
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        f"2 result rows for (recipe={PAPER[0].recipe.id}, dataset=mnist, model=A, h=nan, alpha=nan, seed=0, "
        f"noise=clean, level=0.0), from runs {', '.join(run_ids)}: expected one run per trial "
        "(sweep.runs.select_runs)"
    )


def test_runs_without_a_recipe_stay_out_of_the_effect_and_are_listed(store):
    aggregation = store["aggregation"]
    # Two of them are A seed 0: twice the same seed, which would pair twice, but they are left out.
    assert "unknown" not in set(aggregation.effect["recipe"])
    assert set(aggregation.results.loc[aggregation.results["recipe"] == "unknown", "run_id"]) == set(
        store["legacy"].values()
    )
    excluded = aggregation.excluded.set_index("trial_key")
    for key, model, seed, _ in LEGACY:
        row = excluded.loc[key]
        assert (row["recipe"], row["model"], row["seed"], row["status"], row["reason"]) == (
            "unknown",
            model,
            seed,
            "FINISHED",
            "its params make no recipe",
        )
    diverged = excluded[excluded["health"] == "diverged"]
    assert sorted(diverged.index) == sorted(s.key for s in DIVERGED)
    assert set(diverged["reason"]) == {"loss is nan at epoch 3 step 7"}
    # The report counts as left out only the trials that are in no table.
    line = _trials_lines(aggregation)[0]
    # 17 finished paper-recipe trials (19 ran, 2 diverged), 24 smoke ones, 3 of no recipe
    assert line.startswith("44 trials aggregated. 2 left out (2 diverged: they did not train; 0 failed or unfinished)")
    assert line.endswith("3 more are in the tables, not in the push-pull effect: their params make no recipe.")
