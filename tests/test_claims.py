"""The claims table: one verdict per claim of the paper, checked against an independent computation (numpy
and scipy here, not the product's functions), at its edges, and for its false-verdict rate under no effect."""

import math
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from perturb import noise_suite
from sweep.aggregate import main as aggregate_main
from sweep.catalog import build_sweep
from sweep.claims import CLAIM_COLUMNS, CLAIMS, claims_table, seeds_to_decide
from sweep.tracking import Tracker
from tests.test_aggregate import log_trial

# What a verdict may not be when the true difference is 0 (margin 1): the claims' false verdicts.
FALSE_UNDER_NO_EFFECT = {
    "better": {"supported", "contradicted"},
    "same": {"contradicted"},
    "not worse": {"contradicted"},
}


def synthetic_results(
    effects: dict, seeds: int = 3, sd: float = 0.2, seed: int = 0, sweep="paper_full"
) -> pd.DataFrame:
    """Tidy results (sweep.tables.tidy_results' columns that the claims read) of every trial of ``sweep``:
    accuracy 80 - 5 x level, plus ``effects[(dataset, noise)]`` for push-pull models, plus normal noise of
    SD ``sd`` per cell."""
    rng = np.random.default_rng(seed)
    rows = []
    for spec in build_sweep(sweep, seeds=seeds):
        model = spec.model
        cells = [("clean", 0.0)] + [(p.noise, p.level) for p in noise_suite(spec.dataset) if not p.is_identity]
        for noise, level in cells:
            accuracy = 80.0 - 5 * level + rng.normal(0, sd)
            accuracy += effects.get((spec.dataset, noise), 0.0) if model.pushpull else 0.0
            rows.append(
                {
                    "recipe": f"{model.arch}-recipe",
                    "dataset": spec.dataset,
                    "model": model.name,
                    "pushpull": model.pushpull,
                    "h": model.h if model.pushpull else math.nan,
                    "alpha": model.alpha if model.pushpull else math.nan,
                    "seed": spec.seed,
                    "noise": noise,
                    "level": level,
                    "accuracy": accuracy,
                }
            )
    return pd.DataFrame(rows)


def per_seed_difference(results: pd.DataFrame, dataset: str, pushpull: str, plain: str, noises) -> np.ndarray:
    """Push-pull minus plain of each seed's mean accuracy over the noises' cells, computed here by hand."""
    chosen = results[(results["dataset"] == dataset) & results["noise"].isin(noises)]
    means = chosen.groupby(["model", "seed"])["accuracy"].mean()
    return (means[pushpull] - means[plain]).sort_index().to_numpy()


def row(table: pd.DataFrame, claim: str) -> pd.Series:
    rows = table[table["claim"] == claim]
    assert len(rows) == 1, rows
    return rows.iloc[0]


NOISY = ("gaussian", "speckle", "poisson")
KNOWN = {("cifar10", n): 3.0 for n in NOISY} | {("mnist", "poisson"): -3.0}  # cifar100: none


def test_three_claims_with_known_effects_get_supported_equivalent_and_contradicted():
    results = synthetic_results(KNOWN)
    table = claims_table(results)
    assert list(table.columns) == CLAIM_COLUMNS
    assert sorted(table["claim"]) == sorted(c.id for c in CLAIMS)  # every claim measured once (one recipe each)

    for claim, dataset, pushpull, plain, noises, verdict in [
        ("cifar10-wrn-28-10", "cifar10", "WRN-28-10-PP", "WRN-28-10", NOISY, "supported"),
        ("cifar100-wrn-28-10", "cifar100", "WRN-28-10-PP", "WRN-28-10", NOISY, "equivalent"),
    ]:
        d = per_seed_difference(results, dataset, pushpull, plain, noises)
        got = row(table, claim)
        low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(len(d)))
        assert (got["seeds"], got["verdict"]) == (3, verdict)
        assert got["difference"] == pytest.approx(d.mean(), abs=1e-9)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), abs=1e-9)
        if verdict == "supported":  # the two-sided paired t test's p-value
            assert got["p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
        else:  # TOST at 1 point: the larger of the two one-sided p-values
            tost = max(
                stats.ttest_1samp(d, -1.0, alternative="greater").pvalue,
                stats.ttest_1samp(d, 1.0, alternative="less").pvalue,
            )
            assert got["p_value"] == pytest.approx(tost, rel=1e-9)

    # A group: the mean over the four LeNet pairs of each seed's difference.
    pooled = np.mean([per_seed_difference(results, "mnist", f"P{m}", m, ("poisson",)) for m in "ABCD"], axis=0)
    lenet = row(table, "lenet-poisson")
    assert (lenet["verdict"], lenet["pairs"], lenet["seeds"]) == ("contradicted", 4, 3)
    assert lenet["difference"] == pytest.approx(pooled.mean(), abs=1e-9)
    assert lenet["p_value"] == pytest.approx(stats.ttest_1samp(pooled, 0.0).pvalue, rel=1e-9)
    # Holm over the table: no decided p-value may exceed 0.05 divided by the tests left at its rank.
    decided = table[table["verdict"] != "undecided"]
    assert (decided["p_holm"] < 0.05).all() and (decided["p_holm"] >= decided["p_value"]).all()


@pytest.mark.slow  # 200 claims tables
def test_under_no_effect_the_claims_table_gives_a_false_verdict_in_at_most_5_percent_of_stores():
    stores, false = 200, 0
    for replicate in range(stores):
        table = claims_table(synthetic_results({}, sd=1.0, seed=replicate))
        false += any(v in FALSE_UNDER_NO_EFFECT[a] for a, v in zip(table["asserts"], table["verdict"]))
    assert false / stores <= 0.05, false


def test_an_undecided_claim_says_how_many_seeds_would_decide_it():
    results = synthetic_results({("cifar10", n): 0.5 for n in NOISY}, sd=2.0, seed=3)
    got = row(claims_table(results), "cifar10-wrn-28-10")
    assert got["verdict"] == "undecided" and math.isnan(got["p_holm"])
    d = per_seed_difference(results, "cifar10", "WRN-28-10-PP", "WRN-28-10", NOISY)
    # Leaning to equivalence (|mean| < 1): the nearer margin binds; at the level of Holm's first step.
    tests = sum({"better": 2, "same": 2, "not worse": 1}[c.asserts] for c in CLAIMS)  # direction + equivalence...
    level = 0.05 / (2 * tests)
    gap, sd = 1.0 - abs(d.mean()), d.std(ddof=1)
    expected = next(n for n in range(2, 1001) if stats.t.ppf(1 - level, n - 1) * sd / math.sqrt(n) < gap)
    assert got["seeds_to_decide"] == expected
    assert seeds_to_decide(3.0, 1.0, 0.0, alpha=0.05) == 3  # t_{1,.95} / sqrt(2) = 4.46 > 3; t_{2,.95} / sqrt(3) = 1.69


def test_one_seed_is_undecided_without_an_interval():
    table = claims_table(synthetic_results(KNOWN, seeds=1))
    assert set(table["verdict"]) == {"undecided"} and table["seeds"].eq(1).all()
    assert table[["ci_low", "ci_high", "p_value", "seeds_to_decide"]].isna().all().all()


def test_a_nan_accuracy_is_dropped_and_an_sd_below_the_resolution_is_floored():
    results = synthetic_results(KNOWN, sd=0.0)  # every seed the same: no spread at all
    results.loc[(results["model"] == "WRN-28-10") & (results["seed"] == 2), "accuracy"] = math.nan
    got = row(claims_table(results), "cifar10-wrn-28-10")
    assert got["seeds"] == 2 and got["seeds_plain"] == 2 and got["seeds_pushpull"] == 2
    # Floored at the binomial standard error of a difference of two accuracies near their mean level.
    level = (80 - 5 * np.mean([p.level for p in noise_suite("cifar10") if not p.is_identity]) + 1.5) / 100
    assert got["sd_floored"] and got["sd"] == pytest.approx(100 * math.sqrt(2 * level * (1 - level) / 10_000), rel=1e-6)


def test_a_diverged_push_pull_arm_is_counted_and_can_be_scored_at_chance():
    results = synthetic_results(KNOWN, sd=0.2)
    gone = (results["model"] == "WRN-28-10-PP") & (results["dataset"] == "cifar10") & (results["seed"] == 0)
    results = results[~gone]
    excluded = pd.DataFrame(
        [{"recipe": "wrn-recipe", "dataset": "cifar10", "model": "WRN-28-10-PP", "seed": 0, "health": "diverged"}]
    )
    survivors = row(claims_table(results, excluded), "cifar10-wrn-28-10")
    assert (survivors["seeds"], survivors["seeds_pushpull"], survivors["diverged_pushpull"]) == (2, 2, 1)
    assert survivors["difference"] > 2.5  # measured on the survivors
    chance = row(claims_table(results, excluded, diverged_as_chance=True), "cifar10-wrn-28-10")
    plain = results[(results["model"] == "WRN-28-10") & (results["dataset"] == "cifar10") & (results["seed"] == 0)]
    plain0 = plain[plain["noise"].isin(NOISY)]["accuracy"].mean()
    d = per_seed_difference(results, "cifar10", "WRN-28-10-PP", "WRN-28-10", NOISY)[1:]  # seeds 1 and 2
    assert chance["seeds"] == 3
    assert chance["difference"] == pytest.approx(np.mean([10.0 - plain0, *d]), abs=1e-9)
    assert chance["verdict"] != "supported"


def test_a_plain_only_recipe_makes_no_claim_row():
    results = synthetic_results({}, sweep="lenet")
    table = claims_table(results[~results["pushpull"]])
    assert table.empty and list(table.columns) == CLAIM_COLUMNS


# --- the whole paper, through MLflow and the command line -------------------------------------------


def designed_accuracy(spec, noise: str, level: float) -> float:
    """80 - 5 x level, the KNOWN effect for push-pull models, and a small spread per (model, seed, cell)
    drawn from a generator seeded by the cell, so that a test can draw it again."""
    key = f"{spec.dataset}/{spec.model.name}/{spec.model.h}/{spec.model.alpha}/{spec.seed}/{noise}/{level}"
    spread = np.random.default_rng(zlib.crc32(key.encode())).normal(0, 0.2)
    return 80.0 - 5 * level + spread + (KNOWN.get((spec.dataset, noise), 0.0) if spec.model.pushpull else 0.0)


@pytest.mark.slow  # 108 runs into MLflow, then every figure
def test_the_whole_paper_through_mlflow_gets_the_three_known_verdicts_and_a_report(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "paper_full", (tmp_path / "artifacts").as_uri())
    specs = build_sweep("paper_full", seeds=3)
    for spec in specs:
        log_trial(tracker, spec, accuracy=designed_accuracy)
    out = tmp_path / "results"
    assert aggregate_main(["--tracking-uri", uri, "--out", str(out), "--report"]) == 0
    claims = pd.read_parquet(out / "claims.parquet")
    assert "## The paper's claims" in (out / "report.md").read_text()

    def differences(dataset: str, pushpull: str, plain: str, noises) -> np.ndarray:
        """Per seed, by hand from designed_accuracy: the mean over the noises' identity-free levels."""
        settings = [p for p in noise_suite(dataset) if p.noise in noises and not p.is_identity]
        by_name = {(s.model.name, s.seed): s for s in specs if s.dataset == dataset}

        def score(name: str, seed: int) -> float:
            return np.mean([designed_accuracy(by_name[(name, seed)], p.noise, p.level) for p in settings])

        return np.array([score(pushpull, seed) - score(plain, seed) for seed in range(3)])

    for claim, dataset, noises, verdict in [
        ("cifar10-wrn-28-10", "cifar10", NOISY, "supported"),
        ("cifar100-wrn-28-10", "cifar100", NOISY, "equivalent"),
    ]:
        d = differences(dataset, "WRN-28-10-PP", "WRN-28-10", noises)
        got = row(claims, claim)
        assert got["verdict"] == verdict
        assert got["difference"] == pytest.approx(d.mean(), abs=1e-9)
        assert got["ci_high"] - got["ci_low"] == pytest.approx(
            2 * stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3), rel=1e-6
        )
    pooled = np.mean([differences("mnist", f"P{m}", m, ("poisson",)) for m in "ABCD"], axis=0)
    lenet = row(claims, "lenet-poisson")
    assert lenet["verdict"] == "contradicted"
    assert lenet["p_value"] == pytest.approx(stats.ttest_1samp(pooled, 0.0).pvalue, rel=1e-6)


@pytest.mark.parametrize("margin", ["0", "-1", "nan", "inf"])
def test_a_margin_that_is_no_positive_number_is_one_line_and_exit_2(tmp_path, capsys, margin):
    assert aggregate_main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--margin", margin]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"sweep.aggregate: error: --margin must be a number of points > 0, got {float(margin):g}"
    ]
    assert not list(tmp_path.iterdir())
