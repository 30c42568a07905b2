"""The searched (h, alpha) of push-pull models: one point per (h, alpha), its Pareto front and its best, from
the tidy results (sweep.tables.tidy_results) and the push-pull effect (sweep.tables.pushpull_effect).

A *group* is (recipe, dataset, push-pull model) with at least two distinct (h, alpha) among its results: a
study's Optuna search, or the built-in sensitivity grid (WRN-16-10-PP over 3 x 3). Each point is scored as
the search scored its trials: :func:`sweep.objectives.metric_value` per seed, then the mean over seeds.

Pure pandas except :func:`search_figure` (matplotlib, loaded when a figure is drawn).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from models import plain_name
from perturb import NOISES
from sweep.objectives import check_metric, metric_label, metric_value

__all__ = ["BEST", "FRONT", "GROUP", "POINT", "best_point_effect", "search_figure", "search_points", "twin_points"]

GROUP = ["recipe", "dataset", "model"]  # one search: a push-pull model of one recipe on one data set
POINT = [*GROUP, "h", "alpha"]  # one point of it (every key is a column of pushpull_effect's EFFECT_KEY)
MODES = ("max", "min")
DECIMALS = 9  # robustness and clean compare rounded to this many decimals: a mean's last bits are no difference
FRONT = "pareto front"  # the gid of the line through a panel's Pareto points
BEST = "best"  # the gid of a panel's star
TWIN = "plain twin"  # the gid of a panel's plain twin
DPI = 150  # the report's (sweep.report.DPI, which passes it)


def _families(results: pd.DataFrame) -> list[str]:
    """The paper's noise families that ``results`` holds, in the paper's order."""
    present = set(results["noise"])
    return [family for family in NOISES if family in present]


def _seed_scores(rows: pd.DataFrame, families: list[str], metric: str) -> pd.DataFrame:
    """One row per seed of ``rows`` (one model's results): its clean accuracy, each family's mean and the
    metric (:func:`metric_value`); NaN where the seed has nothing to average."""
    scores = []
    for seed, runs in rows.groupby("seed", sort=True):
        clean = runs.loc[runs["noise"] == "clean", "accuracy"]
        clean_value = float(clean.iloc[0]) if len(clean) else None
        noisy = runs[runs["noise"] != "clean"]
        accuracies = {
            (noise, float(level)): float(a)
            for noise, level, a in zip(noisy["noise"], noisy["level"], noisy["accuracy"])
        }
        scores.append(
            {
                "seed": seed,
                "clean": math.nan if clean_value is None else clean_value,
                **{f"noise/{f}": metric_value(clean_value, accuracies, f"noise/{f}") for f in families},
                "robustness": metric_value(clean_value, accuracies, metric),
            }
        )
    return pd.DataFrame(scores, columns=["seed", "clean", *(f"noise/{f}" for f in families), "robustness"])


def _means(rows: pd.DataFrame, families: list[str], metric: str) -> dict[str, object]:
    """seeds, and the mean over seeds of each score of :func:`_seed_scores` (a NaN seed left out of that mean)."""
    scores = _seed_scores(rows, families, metric)
    columns = ["clean", *(f"noise/{f}" for f in families), "robustness"]
    return {"seeds": int(rows["seed"].nunique()), **{c: float(scores[c].mean()) for c in columns}, "metric": metric}


def _rounded(values: pd.Series) -> np.ndarray:
    return np.round(values.to_numpy(dtype="float64"), DECIMALS)


def _pareto(clean: np.ndarray, robustness: np.ndarray) -> np.ndarray:
    """Whether each point is on the Pareto front: both finite, and no other point is >= on both and > on one
    (``robustness`` already signed so that more is better)."""
    finite = np.isfinite(clean) & np.isfinite(robustness)
    front = finite.copy()
    for i in np.flatnonzero(finite):
        others = finite & (clean >= clean[i]) & (robustness >= robustness[i])
        others &= (clean > clean[i]) | (robustness > robustness[i])
        front[i] = not others.any()
    return front


def _ranked(points: pd.DataFrame, mode: str) -> pd.DataFrame:
    """One group's points best first, with ``pareto`` and ``best``: the best robustness in ``mode``'s
    direction, ties broken by the higher clean accuracy, then the lower h, then the lower alpha."""
    sign = 1.0 if mode == "max" else -1.0
    # A point a scheduler stopped early (fewer epochs than the group's most) is listed, after the points
    # that trained through, and is neither on the front nor the best: its numbers are of a shorter training.
    stopped = points["epochs"] < points["epochs"].max()
    clean, robustness = _rounded(points["clean"]), sign * _rounded(points["robustness"])
    order = points.assign(_r=np.nan_to_num(-robustness, nan=np.inf), _c=np.nan_to_num(-clean, nan=np.inf))
    full = (~stopped).to_numpy()
    pareto = _pareto(np.where(full, clean, np.nan), np.where(full, robustness, np.nan))
    order = order.assign(pareto=pareto, _finite=np.isfinite(robustness) & ~stopped, _stopped=stopped)
    order = order.sort_values(["_stopped", "_r", "_c", "h", "alpha"], kind="stable")
    order["best"] = False
    if order["_finite"].iloc[0]:
        order.iloc[0, order.columns.get_loc("best")] = True
    return order.drop(columns=["_r", "_c", "_finite", "_stopped"])


def search_points(results: pd.DataFrame, metric: str = "noise", mode: str = "max") -> pd.DataFrame:
    """Every searched (h, alpha) of every group (a push-pull model of one recipe on one data set with at
    least two distinct (h, alpha) in ``results``, :func:`sweep.tables.tidy_results`' rows).

    One row per point, groups by (recipe, dataset, model), each group's points best first. Columns:

    - recipe, dataset, model, h, alpha;
    - ``seeds``: distinct seeds among the point's rows;
    - ``epochs``: the epochs it trained (the fewest of its seeds'); a point with fewer than the group's most
      was stopped early (by ASHA) and is listed after the others, never on the front nor the best;
    - ``clean``: mean over seeds of the clean accuracy (%);
    - ``noise/<family>`` for each of the paper's noise families in ``results``: mean over seeds of each
      seed's mean over that family's settings that change the images;
    - ``metric``: ``metric``'s name; ``robustness``: mean over seeds of each seed's :func:`metric_value`;
    - ``pareto``: no other point of the group is >= on both clean (more is better) and robustness (in
      ``mode``'s direction) and better on one; a point without both numbers is not on it;
    - ``best``: the best robustness of the group (in ``mode``'s direction), ties broken by the higher clean
      accuracy, then the lower h, then the lower alpha; none in a group without a robustness.

    A NaN accuracy makes its seed's family mean and metric NaN (:func:`metric_value`); a seed with a NaN (or
    no) number is left out of that number's mean over seeds. Means compare rounded to :data:`DECIMALS`
    decimals.
    """
    check_metric(metric)
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}: expected one of {', '.join(MODES)}")
    families = _families(results)
    pushpull = results[results["pushpull"].eq(True)]
    groups = []
    for key, rows in pushpull.groupby(GROUP, sort=True):
        if len(rows[["h", "alpha"]].drop_duplicates()) < 2:
            continue
        points = pd.DataFrame(
            [
                {**dict(zip(POINT, (*key, h, alpha))), "epochs": _epochs(point), **_means(point, families, metric)}
                for (h, alpha), point in rows.groupby(["h", "alpha"], sort=True)
            ]
        )
        groups.append(_ranked(points, mode))
    columns = [
        *POINT,
        "seeds",
        "epochs",
        "clean",
        *(f"noise/{f}" for f in families),
        "metric",
        "robustness",
        "pareto",
        "best",
    ]
    frame = pd.concat(groups, ignore_index=True)[columns] if groups else pd.DataFrame(columns=columns)
    numbers = dict.fromkeys(["h", "alpha", "clean", *(f"noise/{f}" for f in families), "robustness"], "float64")
    return frame.astype({**numbers, "seeds": "int64", "epochs": "int64", "pareto": bool, "best": bool})


def _epoch_words(epochs: pd.Series) -> str:
    """``1 epoch``, ``2 epochs``, ``1-2 epochs``."""
    low, high = int(epochs.min()), int(epochs.max())
    return f"{low} epoch" if low == high == 1 else f"{low} epochs" if low == high else f"{low}-{high} epochs"


def _epochs(point: pd.DataFrame) -> int:
    """The epochs a point trained: the fewest of its seeds' (0 when its rows do not say)."""
    epochs = point["epochs_trained"].dropna() if "epochs_trained" in point else pd.Series(dtype="float64")
    return int(epochs.min()) if len(epochs) else 0


def twin_points(results: pd.DataFrame, points: pd.DataFrame, metric: str = "noise") -> pd.DataFrame:
    """The plain twin of each group of ``points`` (:func:`search_points`) as the same numbers: one row per
    group whose twin (:func:`models.plain_name`, same recipe and data set) has results. Columns recipe,
    dataset, model (the group's push-pull model), plain (the twin's name), seeds, clean, ``noise/<family>``,
    metric, robustness, as in :func:`search_points`."""
    check_metric(metric)
    families = _families(results)
    plain = results[results["pushpull"].eq(False)]
    rows = []
    for recipe, dataset, model in points[GROUP].drop_duplicates().itertuples(index=False):
        twin = plain_name(model)
        mine = plain[(plain["recipe"] == recipe) & (plain["dataset"] == dataset) & (plain["model"] == twin)]
        if len(mine):
            rows.append(
                {"recipe": recipe, "dataset": dataset, "model": model, "plain": twin, **_means(mine, families, metric)}
            )
    columns = [*GROUP, "plain", "seeds", "clean", *(f"noise/{f}" for f in families), "metric", "robustness"]
    numbers = dict.fromkeys(["clean", *(f"noise/{f}" for f in families), "robustness"], "float64")
    return pd.DataFrame(rows, columns=columns).astype({**numbers, "seeds": "int64"})


def best_point_effect(effect: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``effect`` (:func:`sweep.tables.pushpull_effect`) of each group's best point of
    ``points`` (:func:`search_points`): the best (h, alpha) against its plain twin, paired by seed, in
    ``effect``'s order and columns."""
    best = points.loc[points["best"].astype(bool), POINT]
    if effect.empty or best.empty:
        return effect.iloc[:0]
    chosen = set(best.itertuples(index=False, name=None))
    keep = [key in chosen for key in effect[POINT].itertuples(index=False, name=None)]
    return effect[np.asarray(keep, dtype=bool)].reset_index(drop=True)


def _point_label(h: float, alpha: float) -> str:
    return f"h={h:g}, alpha={alpha:g}"


def search_figure(
    points: pd.DataFrame, twins: pd.DataFrame, path: Path, metric: str = "noise", mode: str = "max", dpi: int = DPI
):
    """One PNG, one panel per group of ``points`` (:func:`search_points`): clean accuracy (%) across,
    ``metric`` (%) up. Every (h, alpha) is a dot coloured by its alpha (one colour bar for the figure), the
    Pareto front a step line through exactly its Pareto points (the edge of what they dominate), the best
    point a star labelled with its (h, alpha), the plain twin (``twins``, :func:`twin_points`) a hollow black
    square labelled with its name. Saved to ``path`` as the report saves its figures; returns the figure."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure  # no pyplot: files only, no display, no global state
    from matplotlib.lines import Line2D

    groups = list(points.groupby(GROUP, sort=False))
    if not groups:
        raise ValueError("no searched point to draw: search_points found no group with two (h, alpha)")
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    figure = Figure(figsize=(5.2 * columns + 1.2, 4.6 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    alphas = points["alpha"].astype("float64")
    low, high = float(alphas.min()), float(alphas.max())
    norm = Normalize(low - 0.5, high + 0.5) if low == high else Normalize(low, high)
    colours = ScalarMappable(norm=norm, cmap="viridis")
    ylabel = metric_label(metric)
    for ax, ((recipe, dataset, model), group) in zip(axes, groups):
        ax.set_label(f"{recipe} {dataset} {model}")
        stopped = group["epochs"] < group["epochs"].max()
        full, early = group[~stopped], group[stopped]
        ax.scatter(
            full["clean"],
            full["robustness"],
            c=colours.to_rgba(full["alpha"].astype("float64")),
            s=30,
            edgecolors="none",
            zorder=3,
        )
        if len(early):  # hollow: stopped by the scheduler, so trained fewer epochs than the others
            ax.scatter(
                early["clean"],
                early["robustness"],
                facecolors="none",
                edgecolors=colours.to_rgba(early["alpha"].astype("float64")),
                s=30,
                zorder=3,
                label=f"stopped early (after {_epoch_words(early['epochs'])})",
            )
        front = group[group["pareto"]].sort_values(["clean", "robustness"], kind="stable")
        ax.plot(
            front["clean"],
            front["robustness"],
            drawstyle="steps-pre",
            color="black",
            lw=1.0,
            zorder=2,
            gid=FRONT,
            label="Pareto front",
        )
        best = group[group["best"]]
        for row in best.itertuples(index=False):
            label = _point_label(row.h, row.alpha)
            ax.plot(
                [row.clean],
                [row.robustness],
                linestyle="none",
                marker="*",
                ms=16,
                mfc="gold",
                mec="black",
                mew=0.8,
                zorder=5,
                gid=BEST,
                label=f"best: {label}",
            )
            if math.isfinite(row.clean):
                ax.annotate(label, (row.clean, row.robustness), xytext=(8, 8), textcoords="offset points", fontsize=8)
        twin = twins[(twins["recipe"] == recipe) & (twins["dataset"] == dataset) & (twins["model"] == model)]
        for row in twin.itertuples(index=False):
            ax.plot(
                [row.clean],
                [row.robustness],
                linestyle="none",
                marker="s",
                ms=8,
                mfc="white",
                mec="black",
                mew=1.2,
                zorder=4,
                gid=TWIN,
                label=f"{row.plain} (plain twin)",
            )
            if math.isfinite(row.clean) and math.isfinite(row.robustness):
                ax.annotate(
                    row.plain, (row.clean, row.robustness), xytext=(8, -12), textcoords="offset points", fontsize=8
                )
        seeds = ", ".join(map(str, sorted(set(group["seeds"]))))
        ax.set_title(
            f"{model} on {dataset}, recipe {recipe}\n{len(group)} (h, alpha), seeds per point: {seeds}", fontsize=9
        )
        ax.set_xlabel("clean test accuracy (%)")
        ax.set_ylabel(ylabel)
        ax.margins(0.12)
        ax.grid(lw=0.4, alpha=0.5)
        # the dots' entry in grey: their colours are the colour bar's
        dots = Line2D(
            [], [], linestyle="none", marker="o", ms=5, color="0.5", label="(h, alpha) searched, colour: alpha"
        )
        ax.legend(handles=[dots, *ax.get_legend_handles_labels()[0]], loc="best", fontsize=7, frameon=False)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    figure.colorbar(colours, ax=list(axes[: len(groups)]), label="alpha", shrink=0.8)
    direction = "higher" if mode == "max" else "lower"
    figure.suptitle(
        f"Searched (h, alpha): clean accuracy against robustness, {metric} ({direction} is better); points: means "
        "over seeds\n"
        "line: Pareto front (no other point is at least as good on both and better on one); star: best",
        fontsize=10,
    )
    figure.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return figure
