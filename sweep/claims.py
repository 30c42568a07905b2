"""The paper's claims, each tested as the claim it is: one verdict per claim and recipe, with the power to reach it.

The paper makes no claim about a single (model, noise, level) cell; it makes claims about groups of models
over a noise family ("the LeNet-5 models with our push-pull layer considerably outperform their
convolution-only counterparts when ... corrupted by Poisson noise"). :data:`CLAIMS` holds each in the paper's
words, with what it is about; :func:`claims_table` tests them against the tidy results (sweep.tables) as
pure functions, no I/O.

How a claim is tested, per recipe:

- A model's *robustness score* on one seed is its mean accuracy over the claim's (noise, level) cells
  (every measured level of the claim's noises, above ``above`` when set). A *pair* is a push-pull model
  and the model it is compared with (its plain twin, or a bigger plain model for a claim across models);
  its difference on a seed is the push-pull score minus the other's, on the cells both measured.
- ``scope="pooled"`` (a claim about a group): per seed, the mean difference over the claim's pairs, on the
  seeds where every pair was measured; ``scope="every"`` (a claim about each pair, or each (h, alpha) of
  Table 3): each pair is tested alone and the claim holds when it holds for every pair (an
  intersection-union test: its p-value is the largest; the interval shown is the weakest pair's).
- Over seeds: the mean difference, its 95 % Student t interval and one-sided t tests, a standard
  deviation below the accuracy's resolution (100 / test images) floored at the binomial standard error.
  ``asserts="better"``: supported (difference > 0), contradicted (< 0) or equivalent (within
  +-``margin`` points, both one-sided tests: TOST); ``"same"`` (an equivalence claim): supported when
  equivalent, contradicted when the difference lies beyond the margin; ``"not worse"`` (the same or
  higher): supported when the difference is above -``margin``, contradicted when below it. Holm's
  correction runs over every p-value of one table, so the chance of any false verdict in a report is at
  most 5 %. A claim that none of its tests decides is ``undecided``, with an estimate of the seeds that
  would decide the measured difference at the measured spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from models import DEFAULT_ALPHA, DEFAULT_H, plain_name
from sweep.datasets import DATASETS
from sweep.defaults import DEFAULT_MARGIN
from sweep.tables import scored_images

__all__ = ["CLAIMS", "CLAIM_COLUMNS", "Claim", "claims_table", "seeds_to_decide"]

ALPHA = 0.05  # the family-wise error rate of one claims table
MAX_SEEDS = 1000  # seeds_to_decide answers at most this (beyond: NaN)
LENET_PAIRS = (("mnist", "PA", "A"), ("mnist", "PB", "B"), ("mnist", "PC", "C"), ("mnist", "PD", "D"))
WIDTH_PAIRS = tuple(("cifar10", f"WRN-28-{w}-PP", f"WRN-28-{w}") for w in (1, 4, 8, 10))
DEPTH_PAIRS = tuple(("cifar10", f"WRN-{d}-10-PP", f"WRN-{d}-10") for d in (16, 22, 40))  # 28: a width pair
NOISY = ("gaussian", "speckle", "poisson")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    Attributes:
        id: a short name (``lenet-poisson``).
        section: where the paper makes it (``Sec. 4.1``).
        words: the paper's words.
        pairs: (dataset, push-pull model, the model it is compared with).
        noises: the noise families whose levels the scores average over (``clean``: the clean test set).
        asserts: ``better``, ``same`` (equivalence) or ``not worse`` (the same or higher).
        scope: ``pooled`` (a group: the mean over pairs per seed) or ``every`` (each pair must hold).
        above: only the levels above this one (None: every level).
        grid: every (h, alpha) of the push-pull model measured is a pair of its own (paper Table 3); else
            the paper's default (h, alpha) when several were measured.
    """

    id: str
    section: str
    words: str
    pairs: tuple[tuple[str, str, str], ...]
    noises: tuple[str, ...]
    asserts: str
    scope: str = "pooled"
    above: float | None = None
    grid: bool = False

    @property
    def kind(self) -> str:
        """What sort of claim it is, as the table says it."""
        if self.asserts == "same":
            return "equivalence"
        if any(plain_name(pushpull) != plain for _, pushpull, plain in self.pairs):
            return "across models"
        if self.grid:
            return "every (h, alpha)"
        return "every pair" if self.scope == "every" else "group"

    def levels_text(self) -> str:
        noises = ", ".join(self.noises)
        return noises if self.above is None else f"{noises} above {self.above:g}"


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "lenet-clean",
        "Sec. 4.1",
        "the classification accuracy on the original data is not affected by the use of the push-pull layer",
        LENET_PAIRS,
        ("clean",),
        "same",
    ),
    Claim(
        "lenet-gaussian",
        "Sec. 4.1",
        "when the variance of the noise increases above 0.1, the improvement of performance determined by the "
        "use of the push-pull layer is noticeable (only in the case of the model C, the push-pull layer does "
        "not provide a beneficial effect)",
        tuple(pair for pair in LENET_PAIRS if pair[2] != "C"),
        ("gaussian",),
        "better",
        above=0.1,
    ),
    Claim(
        "lenet-poisson",
        "Sec. 4.1",
        "the LeNet-5 models with our push-pull layer considerably outperform their convolution-only "
        "counterparts when the contrast of noisy test images decreases and the images are corrupted by "
        "Poisson noise",
        LENET_PAIRS,
        ("poisson",),
        "better",
    ),
    Claim(
        "lenet-every",
        "Sec. 4.1",
        "in all cases, the push-pull versions of LeNet-5 show higher robustness to noise perturbations of the "
        "images than their respective convolutional versions",
        LENET_PAIRS,
        NOISY,
        "better",
        scope="every",
    ),
    Claim(
        "wrn-clean",
        "Abstract",
        "while maintaining state-of-the-art performance on the original image classification task (WRN-28-10, "
        "CIFAR-10 and CIFAR-100)",
        (("cifar10", "WRN-28-10-PP", "WRN-28-10"), ("cifar100", "WRN-28-10-PP", "WRN-28-10")),
        ("clean",),
        "same",
    ),
    Claim(
        "cifar10-wrn-28-10",
        "Sec. 4.2, Table 2",
        "a substantial improvement of the robustness to noise perturbations of the input images by models "
        "that deploy the proposed push-pull layer (WRN-28-10, CIFAR-10)",
        (("cifar10", "WRN-28-10-PP", "WRN-28-10"),),
        NOISY,
        "better",
    ),
    Claim(
        "cifar100-wrn-28-10",
        "Sec. 4.2, Table 2",
        "a substantial improvement of the robustness to noise perturbations of the input images by models "
        "that deploy the proposed push-pull layer (WRN-28-10, CIFAR-100)",
        (("cifar100", "WRN-28-10-PP", "WRN-28-10"),),
        NOISY,
        "better",
    ),
    Claim(
        "wrn-every",
        "Sec. 4.2, Figs. 6-9",
        "in all cases, the push-pull layer contributes to an improvement of robustness to noise perturbations "
        "of the test images (every width and depth, Poisson and Gaussian noise)",
        WIDTH_PAIRS + DEPTH_PAIRS,
        ("gaussian", "poisson"),
        "better",
        scope="every",
    ),
    Claim(
        "wrn-28-1-pp",
        "Sec. 4.2",
        "the WRN-28-1-PP ... achieves the same or higher performance than those of bigger models with more "
        "parameters (WRN-28-10, WRN-28-8)",
        (("cifar10", "WRN-28-1-PP", "WRN-28-10"), ("cifar10", "WRN-28-1-PP", "WRN-28-8")),
        ("gaussian", "poisson"),
        "not worse",
        scope="every",
    ),
    Claim(
        "sensitivity",
        "Sec. 4.3, Table 3",
        "using the push-pull layer improves the robustness of the concerned model to noise perturbations of "
        "the input images, despite of the specific configuration of its parameters",
        (("cifar10", "WRN-16-10-PP", "WRN-16-10"),),
        ("gaussian",),
        "better",
        scope="every",
        grid=True,
    ),
)

CLAIM_COLUMNS = [
    "claim",
    "section",
    "kind",
    "asserts",
    "margin",
    "recipe",
    "pairs",
    "levels",
    "seeds",
    "seeds_pushpull",
    "seeds_plain",
    "diverged_pushpull",
    "diverged_plain",
    "difference",
    "ci_low",
    "ci_high",
    "sd",
    "sd_floored",
    "weakest",
    "p_value",
    "p_holm",
    "verdict",
    "seeds_to_decide",
    "words",
]


@dataclass(frozen=True)
class _Estimate:
    """Per-seed differences of one pair (or of a pooled group) summarised: n seeds, mean, SD (floored)."""

    n: int
    mean: float
    sd: float
    floored: bool

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n >= 2 else math.nan

    def interval(self) -> tuple[float, float]:
        if self.n < 2:
            return math.nan, math.nan
        half = stats.t.ppf(0.975, self.n - 1) * self.se
        return self.mean - half, self.mean + half

    def above(self, bound: float) -> float:
        """One-sided p-value of "the difference is above ``bound``" (H0: at most ``bound``)."""
        return float(stats.t.sf((self.mean - bound) / self.se, self.n - 1)) if self.n >= 2 else math.nan

    def below(self, bound: float) -> float:
        """One-sided p-value of "the difference is below ``bound``" (H0: at least ``bound``)."""
        return float(stats.t.cdf((self.mean - bound) / self.se, self.n - 1)) if self.n >= 2 else math.nan


def _estimate(differences: np.ndarray, level: np.ndarray, test_images: int) -> _Estimate:
    """The estimate of per-seed ``differences`` (points) between arms whose scores average ``level`` (points):
    an SD below the resolution 100 / ``test_images`` is floored at the binomial SE of a difference."""
    n = len(differences)
    sd = float(np.std(differences, ddof=1)) if n >= 2 else math.nan
    floored = n >= 2 and sd < 100 / test_images
    if floored:
        p = min(max(float(np.mean(level)) / 100, 0.0), 1.0)
        sd = max(100 * math.sqrt(2 * p * (1 - p) / test_images), 100 / test_images)
    return _Estimate(n, float(np.mean(differences)) if n else math.nan, sd, floored)


def seeds_to_decide(mean: float, sd: float, bound: float = 0.0, alpha: float = ALPHA) -> float:
    """An estimate of the seeds a one-sided t test at level ``alpha`` would need to tell a difference of
    ``mean`` from ``bound`` at spread ``sd`` (the smallest n with t_{n-1,1-alpha} sd / sqrt(n) < |mean - bound|);
    NaN beyond MAX_SEEDS or for no spread."""
    gap = abs(mean - bound)
    if not (gap > 0 and sd > 0):
        return math.nan
    for n in range(2, MAX_SEEDS + 1):
        if stats.t.ppf(1 - alpha, n - 1) * sd / math.sqrt(n) < gap:
            return float(n)
    return math.nan


NO_CONFIG = -1.0  # h and alpha of a plain model, in place of NaN (which no index matches)


def _arms(results: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """The accuracy of the claim's cells (its noises and levels), one column per (dataset, model, h, alpha)
    and one row per (recipe, seed, noise, level)."""
    cells = results[results["noise"].isin(claim.noises) & results["accuracy"].notna()]
    if claim.above is not None:
        cells = cells[cells["level"] > claim.above]
    cells = cells.fillna({"h": NO_CONFIG, "alpha": NO_CONFIG})
    key = ["recipe", "seed", "noise", "level", "dataset", "model", "h", "alpha"]
    cells = cells.drop_duplicates(key)  # sweep.tables asserts one row per key; nothing to average here
    return cells.set_index(key)["accuracy"].unstack(["dataset", "model", "h", "alpha"]).astype("float64")


def _pair_differences(arms: pd.DataFrame, pushpull: tuple, other: tuple) -> pd.DataFrame:
    """Per (recipe, seed): the difference of the two arms' scores (columns ``pushpull`` and ``other`` of
    :func:`_arms`) on the cells both measured, and their mean level (the mean of both scores)."""
    columns = ["recipe", "seed", "difference", "level"]
    if pushpull not in arms.columns or other not in arms.columns:
        return pd.DataFrame(columns=columns)
    mine, theirs = arms[pushpull].to_numpy(), arms[other].to_numpy()
    both = ~(np.isnan(mine) | np.isnan(theirs))
    groups = arms.index.droplevel(["noise", "level"])[both]
    codes, keys = pd.factorize(groups, sort=True)
    count = np.bincount(codes, minlength=len(keys))
    score_pp = np.bincount(codes, weights=mine[both], minlength=len(keys)) / count
    score_other = np.bincount(codes, weights=theirs[both], minlength=len(keys)) / count
    return pd.DataFrame(
        {
            "recipe": [key[0] for key in keys],
            "seed": [key[1] for key in keys],
            "difference": score_pp - score_other,
            "level": (score_pp + score_other) / 2,
        },
        columns=columns,
    )


def _configs(arms: pd.DataFrame, claim: Claim, dataset: str, pushpull: str) -> list[tuple[float, float]]:
    """The (h, alpha) of ``pushpull`` the claim is about, among those :func:`_arms` holds: every one for a
    grid claim, else the paper's default when several were measured (else the one there is)."""
    configs = sorted({(h, a) for d, m, h, a in arms.columns if (d, m) == (dataset, pushpull)})
    if claim.grid or len(configs) <= 1:
        return configs
    default = (float(DEFAULT_H), float(DEFAULT_ALPHA))
    return [default] if default in configs else configs[:1]


def _pairs(arms: pd.DataFrame, claim: Claim) -> list[tuple[str, str, str, tuple[float, float]]]:
    """(dataset, push-pull model, other model, (h, alpha)) of every pair of the claim that was measured."""
    return [
        (dataset, pushpull, other, config)
        for dataset, pushpull, other in claim.pairs
        for config in _configs(arms, claim, dataset, pushpull)
    ]


def _pair_name(pair: tuple[str, str, str, tuple[float, float]], claim: Claim) -> str:
    dataset, pushpull, other, (h, alpha) = pair
    config = f" (h={h:g}, alpha={alpha:g})" if claim.grid else ""
    return f"{pushpull}{config} vs {other} ({dataset})"


def _one_sided(estimate: _Estimate, margin: float) -> dict[str, float]:
    """The one-sided p-values a verdict is made of, each doubled (capped at 1) where it is one of the two
    sides of a two-sided test: the difference is above 0 / below 0, above -margin / below -margin, within
    +-margin (TOST: both one-sided tests) or beyond it (either side)."""
    twice = lambda p: p if math.isnan(p) else min(1.0, 2 * p)  # noqa: E731
    return {
        "above 0": twice(estimate.above(0.0)),
        "below 0": twice(estimate.below(0.0)),
        "above -margin": twice(estimate.above(-margin)),
        "below -margin": twice(estimate.below(-margin)),
        "within": max(estimate.above(-margin), estimate.below(margin)),
        "beyond": twice(min(estimate.above(margin), estimate.below(-margin))),
    }


# For a claim about every pair: what must hold for every pair takes the largest p-value (an
# intersection-union test), what holds for any pair the smallest, Bonferroni over the pairs.
_FOR_EVERY_PAIR = {"above 0", "above -margin", "within"}


def _combine(per_pair: list[dict[str, float]]) -> dict[str, float]:
    """The p-values of a claim about every pair, from each pair's (see _FOR_EVERY_PAIR); NaN when a pair
    has none (under two seeds)."""
    combined = {}
    for name in per_pair[0]:
        values = [p[name] for p in per_pair]
        if any(math.isnan(v) for v in values):
            combined[name] = math.nan
        else:
            combined[name] = max(values) if name in _FOR_EVERY_PAIR else min(1.0, len(values) * min(values))
    return combined


def _tests(p: dict[str, float], asserts: str) -> list[tuple[float, str]]:
    """The tests of a claim that asserts ``asserts``: (p-value, the verdict it gives when it rejects). The
    two sides of a direction are one two-sided test, whose side gives the verdict."""
    if asserts == "better":
        side = "supported" if p["above 0"] <= p["below 0"] else "contradicted"
        return [(min(p["above 0"], p["below 0"]), side), (p["within"], "equivalent")]
    if asserts == "same":
        return [(p["within"], "supported"), (p["beyond"], "contradicted")]
    side = "supported" if p["above -margin"] <= p["below -margin"] else "contradicted"  # not worse
    return [(min(p["above -margin"], p["below -margin"]), side)]


def _chance(results: pd.DataFrame, diverged: pd.DataFrame) -> pd.DataFrame:
    """``results`` with every diverged trial of ``diverged`` (rows of sweep.tables.excluded_trials) scored
    at chance (100 / classes) on every (noise, level) its model's twin cells hold."""
    cells = results[["recipe", "dataset", "noise", "level"]].drop_duplicates()
    rows = []
    for trial in diverged.itertuples(index=False):
        h, alpha = (
            _config(trial.model, trial.h, trial.alpha) if plain_name(trial.model) != trial.model else (math.nan,) * 2
        )
        own = cells[(cells["recipe"] == trial.recipe) & (cells["dataset"] == trial.dataset)]
        chance = 100.0 / DATASETS[trial.dataset].num_classes
        rows.append(own.assign(model=trial.model, h=h, alpha=alpha, seed=trial.seed, accuracy=chance))
    return pd.concat([results, *rows], ignore_index=True) if rows else results


def claims_table(
    results: pd.DataFrame,
    excluded: pd.DataFrame | None = None,
    recipes: pd.DataFrame | None = None,
    margin: float = DEFAULT_MARGIN,
    diverged_as_chance: bool = False,
) -> pd.DataFrame:
    """One row per (claim, recipe) measured, columns :data:`CLAIM_COLUMNS`, Holm's correction over the table.

    results: sweep.tables.tidy_results (accuracy in percent). excluded: sweep.tables.excluded_trials (its
    diverged trials are counted per arm, and scored at chance with ``diverged_as_chance``). recipes:
    sweep.tables.recipes_table (how many test images an accuracy was scored on: its resolution; None: the
    data sets' whole test sets). margin: points.
    """
    excluded = excluded if excluded is not None else pd.DataFrame(columns=["recipe", "dataset", "model", "seed"])
    diverged = excluded[excluded["health"] == "diverged"] if "health" in excluded else excluded.iloc[:0]
    diverged = diverged.reindex(columns=["recipe", "dataset", "model", "h", "alpha", "seed"])
    if diverged_as_chance and len(diverged):
        results = _chance(results, diverged)
    rows = [row for claim in CLAIMS for row in _claim_rows(results, claim, diverged, recipes, margin)]
    table = pd.DataFrame(rows, columns=[*CLAIM_COLUMNS, "_p", "_support", "_need"])
    return _holm(table)[CLAIM_COLUMNS]


def _claim_rows(
    results: pd.DataFrame, claim: Claim, diverged: pd.DataFrame, recipes: pd.DataFrame | None, margin: float
) -> list[dict]:
    arms = _arms(results, claim)
    differences = {
        pair: _pair_differences(arms, (pair[0], pair[1], *pair[3]), (pair[0], pair[2], NO_CONFIG, NO_CONFIG))
        for pair in _pairs(arms, claim)
    }
    measured = sorted({r for frame in differences.values() for r in frame["recipe"]})
    return [
        _claim_row(claim, recipe, differences, diverged, _fewest_images(recipes, recipe, claim), margin)
        for recipe in measured
    ]


def _fewest_images(recipes: pd.DataFrame | None, recipe: str, claim: Claim) -> int:
    """The fewest test images an accuracy of the claim's data sets was scored on under ``recipe``."""
    return int(min(scored_images(recipes, recipe, dataset) for dataset in {d for d, _, _ in claim.pairs}))


def _claim_row(
    claim: Claim, recipe: str, differences: dict, diverged: pd.DataFrame, test_images: int, margin: float
) -> dict:
    """The row of ``claim`` for ``recipe``: the estimate, p-values (``_p``: by verdict, before Holm)."""
    measured = {pair: frame[frame["recipe"] == recipe] for pair, frame in differences.items()}
    measured = {pair: frame for pair, frame in measured.items() if len(frame)}
    if claim.scope == "pooled":
        seeds = sorted(set.intersection(*(set(f["seed"]) for f in measured.values())))
        pooled = [frame.set_index("seed").loc[seeds] for frame in measured.values()]
        estimate = _estimate(
            np.mean([f["difference"].to_numpy() for f in pooled], axis=0) if seeds else np.array([]),
            np.mean([f["level"].to_numpy() for f in pooled], axis=0) if seeds else np.array([]),
            test_images,
        )
        p, weakest = _one_sided(estimate, margin), ""
    else:
        estimates = {
            pair: _estimate(f["difference"].to_numpy(), f["level"].to_numpy(), test_images)
            for pair, f in measured.items()
        }
        per_pair = {pair: _one_sided(e, margin) for pair, e in estimates.items()}
        worst = max(per_pair, key=lambda pair: _nan_last(per_pair[pair][_SUPPORT[claim.asserts]]))
        estimate, p, weakest = estimates[worst], _combine(list(per_pair.values())), _pair_name(worst, claim)
    low, high = estimate.interval()
    return {
        "claim": claim.id,
        "section": claim.section,
        "kind": claim.kind,
        "asserts": claim.asserts,
        "margin": margin,
        "recipe": recipe,
        "pairs": len(measured),
        "levels": claim.levels_text(),
        "seeds": estimate.n,
        **_arm_counts(claim, recipe, measured, diverged),
        "difference": estimate.mean,
        "ci_low": low,
        "ci_high": high,
        "sd": estimate.sd,
        "sd_floored": estimate.floored,
        "weakest": weakest,
        "seeds_to_decide": math.nan,  # for the undecided ones, once the table's tests are counted (_holm)
        "_need": (estimate.mean, estimate.sd, _deciding_bound(estimate, claim.asserts, margin)),
        "words": claim.words,
        "_p": _tests(p, claim.asserts),
        "_support": p[_SUPPORT[claim.asserts]],
    }


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _arm_counts(claim: Claim, recipe: str, measured: dict, diverged: pd.DataFrame) -> dict[str, int]:
    """Distinct trials (model, (h, alpha), seed) measured and diverged per arm, over the claim's measured pairs."""
    pushpull = {(pair[1], pair[3], s) for pair, frame in measured.items() for s in frame["seed"]}
    other = {(pair[2], s) for pair, frame in measured.items() for s in frame["seed"]}
    pushpull_arms, other_arms = {(p[1], p[3]) for p in measured}, {p[2] for p in measured}
    lost = diverged[diverged["recipe"] == recipe]
    lost_pushpull = {
        (m, _config(m, h, a), s) for m, h, a, s in zip(lost["model"], lost["h"], lost["alpha"], lost["seed"])
    }
    return {
        "seeds_pushpull": len(pushpull),
        "seeds_plain": len(other),
        "diverged_pushpull": len({t for t in lost_pushpull if (t[0], t[1]) in pushpull_arms}),
        "diverged_plain": len({(m, s) for m, s in zip(lost["model"], lost["seed"]) if m in other_arms}),
    }


def _config(model: str, h: float, alpha: float) -> tuple[float, float]:
    """(h, alpha) of a push-pull trial as :func:`_arms` keys it; the paper's default for a row that lacks them."""
    if pd.isna(h) or pd.isna(alpha):
        return float(DEFAULT_H), float(DEFAULT_ALPHA)
    return float(h), float(alpha)


def _deciding_bound(estimate: _Estimate, asserts: str, margin: float) -> float:
    """The bound a test would have to tell the measured difference from, for the verdict the data lean to:
    equivalence within the margin (the nearer margin binds), else a direction."""
    if asserts == "not worse":
        return -margin
    if abs(estimate.mean) < margin:
        return math.copysign(margin, estimate.mean)
    return 0.0 if asserts == "better" else math.copysign(margin, estimate.mean)


# The p-value a row shows while no test decides it: that of the support of what the claim asserts.
_SUPPORT = {"better": "above 0", "same": "within", "not worse": "above -margin"}


def _holm(table: pd.DataFrame) -> pd.DataFrame:
    """Verdicts after Holm's step-down correction over every test of the table (:func:`_tests` of each
    row): a row gets the verdict of its first test whose adjusted p-value is below ALPHA, else
    ``undecided``; ``p_value`` and ``p_holm`` are that test's (the support's p-value when undecided)."""
    table = table.copy()
    tests = [(i, k, p) for i, row in zip(table.index, table["_p"]) for k, (p, _) in enumerate(row)]
    finite = [(i, k, p) for i, k, p in tests if not math.isnan(p)]
    adjusted = dict(zip([(i, k) for i, k, _ in finite], _holm_adjust([p for _, _, p in finite])))
    verdicts, shown, shown_adjusted = [], [], []
    for i, row, support in zip(table.index, table["_p"], table["_support"]):
        decided = [(k, p, verdict) for k, (p, verdict) in enumerate(row) if adjusted.get((i, k), 1.0) < ALPHA]
        if decided:
            k, p, verdict = decided[0]
            verdicts.append(verdict)
            shown.append(p)
            shown_adjusted.append(adjusted[(i, k)])
        else:
            verdicts.append("undecided")
            shown.append(support)
            shown_adjusted.append(math.nan)
    table["verdict"], table["p_value"], table["p_holm"] = verdicts, shown, shown_adjusted
    # At the level Holm's first step asks of one side of a test among all of the table's (an estimate).
    level = ALPHA / (2 * max(1, len(finite)))
    table["seeds_to_decide"] = [
        seeds_to_decide(*need, alpha=level) if verdict == "undecided" else math.nan
        for need, verdict in zip(table["_need"], verdicts)
    ]
    return table


def _holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
