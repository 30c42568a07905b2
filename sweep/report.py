"""``report.md`` and PNG figures named after the paper's (``figure4_gaussian.png``...), from what the
aggregator computed (:class:`sweep.tables.Aggregation`): nothing here recomputes a statistic.

Each figure has two panels over the noise levels, the least severe first. Above, accuracy (%) per model
*arm*, (model, h, alpha): our mean over seeds as a point (a plain model hollow, its push-pull twin filled,
in one colour, side by side) with our 95 % prediction interval for one new run, and the paper's values,
single runs, as hollow black diamonds (grey squares, hexagons: other readings of its cells); points, not
bars, so that the axis need not start at 0. Below, push-pull minus plain (points), paired by seed, with its
95 % interval, and the paper's difference of the same values, on a range fitted to the estimates and the
paper's differences: an interval that goes on past it ends in a triangle at the edge. A paper figure shows
the arms its table prints (Figures 6-9: the paper's default h=2, alpha=1 only), a suite's figure every
plain model and the default push-pull, and a second figure for every other (h, alpha) measured.

Where a push-pull model was trained with two or more (h, alpha) (a study's search, the sensitivity grid), the
section "Searched (h, alpha)" lists its points best first and ``search.png`` draws them, one panel per
(recipe, data set, model): clean accuracy across, the search metric up, the Pareto front and the best point
(sweep.search_report.search_figure).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: files only, no display, no global state
from matplotlib.ticker import FuncFormatter

from models import DEFAULT_ALPHA, DEFAULT_H, plain_name
from perturb import PAPER_SUITE, SUITES, Noise, suite_settings
from sweep.objectives import METRICS, metric_families
from sweep.paper import PAPER_TABLES, READINGS, PaperTable
from sweep.search_report import POINT, search_figure
from sweep.tables import (
    FIT_SPREADS,
    MODEL,
    NOISE_ORDER,
    PAPER_EFFECT_COLUMNS,
    Aggregation,
    has_measurements,
    poisson_cells_as,
    prediction_half_width,
)

__all__ = ["write_report"]

_PALETTE = [f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")]
# The paper's values per reading (sweep.paper.READINGS): a hollow marker and its ink, unlike any of ours.
_PAPER_MARKERS = {"header": ("D", "black"), "text": ("s", "dimgray"), "swapped": ("h", "dimgray")}
BEYOND = "beyond the axis"  # the gid of the triangles at an edge where an interval goes on past the axis
DPI = 150

# What the level of each noise family is, for the x axis (perturb.NOISE_FAMILIES says it in full).
_LEVEL_MEANS = {
    "gaussian": "Gaussian noise: variance",
    "speckle": "speckle noise: variance",
    "poisson": "contrast C, then Poisson noise",
    "poisson-c1clean": "contrast C, then Poisson noise (none at C = 1)",
    "contrast": "contrast C alone, no noise",
    "shot": "shot noise: photons at intensity 1 (fewer: noisier)",
    "contrast-shot": "contrast C, then shot noise of {peak:g} photons",
}

# What one point of a figure is: (model, h, alpha), h and alpha None for a plain model. A model's name alone
# does not tell its points apart: the sensitivity sweep trains WRN-16-10-PP for nine (h, alpha).
Arm = tuple[str, float | None, float | None]


def _arm(model: str, h: float, alpha: float) -> Arm:
    return model, None if pd.isna(h) else float(h), None if pd.isna(alpha) else float(alpha)


def _arms(frame: pd.DataFrame) -> list[Arm]:
    """The arm of every row of ``frame`` (columns model, h, alpha), in row order."""
    return [_arm(m, h, a) for m, h, a in zip(frame["model"], frame["h"], frame["alpha"])]


def _is_default(arm: Arm) -> bool:
    """A plain model, or a push-pull one with the paper's default (h, alpha) (all of its figures show)."""
    return arm[1] is None or (arm[1], arm[2]) == (DEFAULT_H, DEFAULT_ALPHA)


def _natural(name: str) -> tuple:
    """A sort key that reads the numbers in a name as numbers: WRN-28-4 before WRN-28-10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _arm_order(arm: Arm) -> tuple:
    """Sort arms by their plain model, the plain one first (beside its push-pull twins), then by (h, alpha)."""
    return _natural(plain_name(arm[0])), arm[1] is not None, arm[1] or 0.0, arm[2] or 0.0


def _arm_label(arm: Arm, arms: list[Arm]) -> str:
    """The model's name, with its (h, alpha) where that is not the paper's default or another of ``arms``
    has the same name."""
    model, h, alpha = arm
    if h is None or (_is_default(arm) and sum(a[0] == model for a in arms) == 1):
        return model
    return f"{model} h={h:g} alpha={alpha:g}"


def _colours(arms: list[Arm]) -> dict[Arm, str]:
    """A plain model and its push-pull twin share a colour (the plain point is hollow); where one plain
    model has several push-pull arms, each after the first has a colour of its own."""
    bases = list(dict.fromkeys(plain_name(a[0]) for a in arms))
    colours, twinned, extra = {}, set(), len(bases)
    for arm in sorted(arms, key=lambda a: not _is_default(a)):  # the default (h, alpha) has its twin's colour
        base = plain_name(arm[0])
        if arm[1] is None or base not in twinned:
            colours[arm] = _PALETTE[bases.index(base) % len(_PALETTE)]
            twinned.update([base] if arm[1] is not None else [])
        else:
            colours[arm], extra = _PALETTE[extra % len(_PALETTE)], extra + 1
    return colours


def _levels(rows: pd.DataFrame) -> list[tuple[str, float]]:
    """The x positions of a figure: every (noise, level) the paper prints or means, clean first."""
    printed = set(zip(rows["noise"], rows["level"]))
    measured = set(zip(rows["measured_noise"], rows["measured_level"]))
    return sorted(printed | measured, key=_noise_key)


def _severity(noise: str, level: float) -> float:
    """A sort key that puts the least severe level of a noise first (:meth:`perturb.Noise.severity`)."""
    return level if noise == "clean" else Noise.parse(noise).severity(level)


def _noise_key(cell: tuple[str, float]) -> tuple:
    """Sort (noise, level) as the tables do: clean, the paper's noises, then the others by name; the levels
    of each noise from the least severe to the most."""
    return NOISE_ORDER.get(cell[0], len(NOISE_ORDER)), cell[0], _severity(*cell)


def _axis(levels: list[tuple[str, float]]) -> tuple[list[str], str]:
    """The x tick labels of ``levels`` and the x axis label: what the level of the noise is, where the
    figure has one noise beside clean; else the noise on every tick."""
    noises = list(dict.fromkeys(n for n, _ in levels if n != "clean"))
    if len(noises) != 1:
        return ["clean" if n == "clean" else f"{n}\n{v:g}" for n, v in levels], "noise and level"
    noise = Noise.parse(noises[0])
    means = _LEVEL_MEANS[noise.family].format(peak=noise.peak or 0) + (", clipped to [0, 1]" if noise.clip else "")
    return ["clean" if n == "clean" else f"{v:g}" for n, v in levels], means


def _paper_ticks(rows: pd.DataFrame) -> dict[tuple, float]:
    """(reading, arm, measured noise, measured level) -> the paper's accuracy, from ``rows`` (paper cells
    of one table per plain model, so that a difference of two of them is a difference the paper prints)."""
    ticks: dict[tuple, float] = {}
    for key in zip(rows["reading"], _arms(rows), rows["measured_noise"], rows["measured_level"], rows["accuracy"]):
        ticks.setdefault(key[:4], key[4])
    return ticks


def _paper_differences(ticks: dict[tuple, float]) -> dict[tuple, float]:
    """The paper's push-pull minus plain per (reading, push-pull arm, noise, level), from the same values
    the accuracy panel draws."""
    differences = {}
    for (reading, arm, noise, level), value in ticks.items():
        if arm[1] is not None:
            plain = ticks.get((reading, (plain_name(arm[0]), None, None), noise, level), math.nan)
            differences[(reading, arm, noise, level)] = value - plain
    return differences


def _finite(values) -> list[float]:
    """``values`` without their NaNs."""
    return [v for v in values if not math.isnan(v)]


def _limits(points: list[float], ends: list[float], span: float, pad: float) -> tuple[float, float]:
    """A y range that holds every one of ``points`` (what must show: estimates, the paper's values) and
    the interval ``ends`` as far as half the points' span (at least ``span``) beyond them, with a margin of
    5 % (at least ``pad``); in the unit of the values. Two seeds make an interval of t(1) = 12.7 SDs:
    reaching for its ends would flatten every difference, so an interval that goes on past the range is
    drawn to the edge, with a triangle there (:func:`_beyond`)."""
    shown = _finite(points) or [0.0]
    low, high = min(shown), max(shown)
    reach = max(high - low, span) / 2
    low = max(min([low, *_finite(ends)]), low - reach)
    high = min(max([high, *_finite(ends)]), high + reach)
    margin = max(pad, 0.05 * (high - low))
    return low - margin, high + margin


def _offsets(count: int) -> list[float]:
    """The x offsets of ``count`` points side by side at one level (levels are 1 apart)."""
    step = 0.8 / max(1, count)
    return [(i - (count - 1) / 2) * step for i in range(count)]


def _series(values: dict, arm: Arm, levels: list) -> tuple[list[float], list[float], list[float]]:
    """(estimates, interval lows, interval highs) of ``arm`` over ``levels``, from ``values`` (arm, noise,
    level) -> (estimate, low, high); NaN where there is none."""
    rows = [values.get((arm, *cell), (math.nan,) * 3) for cell in levels]
    means, lows, highs = ([row[k] for row in rows] for k in range(3))
    return means, lows, highs


def _points(ax, x: list[float], series: tuple, colour: str, plain: bool, label: str) -> None:
    """Points with their intervals as error bars: a plain model hollow, a push-pull one filled (twins share
    a colour). No line joins the levels: the points of one level stand side by side, and lines from each
    to the next level's would cross."""
    means, lows, highs = series
    below = [0.0 if math.isnan(m - low) else m - low for m, low in zip(means, lows)]
    above = [0.0 if math.isnan(high - m) else high - m for m, high in zip(means, highs)]
    ax.errorbar(
        x,
        means,
        yerr=[below, above],
        marker="o",
        ms=5,
        linestyle="none",
        color=colour,
        mfc="white" if plain else colour,
        capsize=2,
        elinewidth=0.8,
        label=label,
    )


def _beyond(ax, x: list[float], lows: list[float], highs: list[float], bottom: float, top: float, ink: str) -> None:
    """A triangle at the edge of the axis where an interval goes on past it (the axis clips the error bar
    there), so that the reader sees it does not end at the edge."""
    for edge, marker, past in (("top", "^", [h > top for h in highs]), ("bottom", "v", [low < bottom for low in lows])):
        xs = [xi for xi, beyond in zip(x, past) if beyond]
        if xs:
            y = top if edge == "top" else bottom
            ax.plot(xs, [y] * len(xs), linestyle="none", marker=marker, ms=5, color=ink, clip_on=False, gid=BEYOND)


def _paper_points(ax, values: dict[str, list[tuple[float, float]]]) -> None:
    """The paper's values, (x, y) per reading, as hollow markers on top of ours, one legend entry per
    reading: ``paper``, or ``paper (<reading> reading)`` where another reading is drawn or it is not the
    header's."""
    drawn = {reading: points for reading, points in values.items() if _finite(y for _, y in points)}
    for reading, points in drawn.items():
        marker, ink = _PAPER_MARKERS[reading]
        label = "paper" if list(drawn) == ["header"] else f"paper ({reading} reading)"
        xs, ys = zip(*points)
        ax.plot(xs, ys, linestyle="none", marker=marker, ms=6, mfc="none", mec=ink, mew=1.2, zorder=4, label=label)


def _paper_at(values: dict[tuple, float], arms: list[Arm], levels: list) -> dict[str, list[tuple[float, float]]]:
    """(x, the paper's value) per reading for each of ``arms`` (at its offset) and level, from ``values``
    keyed (reading, arm, noise, level)."""
    offsets = _offsets(len(arms))
    return {
        reading: [
            (j + offsets[i], values.get((reading, arm, *cell), math.nan))
            for i, arm in enumerate(arms)
            for j, cell in enumerate(levels)
        ]
        for reading in _PAPER_MARKERS
    }


def _accuracy_panel(ax, ticks: dict, cells: pd.DataFrame, levels: list, arms: list[Arm]) -> None:
    """Accuracy (%) per arm and level: ours as points, the mean over seeds with its 95 % prediction interval
    for one run, the paper's values (single runs) as hollow markers at the same x. Points, not bars: a bar's
    length says its value only on an axis from 0, where differences of a point would not show."""
    colours, offsets = _colours(arms), _offsets(len(arms))
    half = prediction_half_width(cells["std"], cells["seeds"])
    ours = {  # an accuracy lies in [0, 100]: so does the part of its interval drawn
        (arm, noise, level): (mean, float(np.clip(mean - h, 0, 100)), float(np.clip(mean + h, 0, 100)))
        for arm, noise, level, mean, h in zip(_arms(cells), cells["noise"], cells["level"], cells["accuracy"], half)
    }
    series = {arm: _series(ours, arm, levels) for arm in arms}
    paper = _paper_at(ticks, arms, levels)
    points = [v for means, _, _ in series.values() for v in means] + [y for p in paper.values() for _, y in p]
    ends = [v for _, lows, highs in series.values() for v in lows + highs]
    bottom, top = _limits(points, ends, span=5.0, pad=1.0)
    _paper_points(ax, paper)
    for i, arm in enumerate(arms):
        x = [j + offsets[i] for j in range(len(levels))]
        label = _arm_label(arm, arms) + ("" if _finite(series[arm][0]) else " (no result)")
        _points(ax, x, series[arm], colours[arm], arm[1] is None, label)
        _beyond(ax, x, series[arm][1], series[arm][2], bottom, top, colours[arm])
    ax.set_ylim(bottom, top)
    ax.set_ylabel("test accuracy (%)")


def _effect_panel(ax, effect: pd.DataFrame, ticks: dict, levels: list, arms: list[Arm]) -> None:
    """Push-pull minus plain (points) per push-pull arm and level: the mean over seeds with its 95 %
    interval, the paper's difference of the values above as hollow markers, a line at 0."""
    pushpull = [a for a in arms if a[1] is not None]
    colours, offsets = _colours(arms), _offsets(len(pushpull))
    ours = {
        (arm, noise, level): (d, low, high)
        for arm, noise, level, d, low, high in zip(
            _arms(effect), effect["noise"], effect["level"], effect["difference"], effect["ci_low"], effect["ci_high"]
        )
    }
    series = {arm: _series(ours, arm, levels) for arm in pushpull}
    paper = _paper_at(_paper_differences(ticks), pushpull, levels)
    points = [0.0, *(v for means, _, _ in series.values() for v in means), *(y for p in paper.values() for _, y in p)]
    ends = [v for _, lows, highs in series.values() for v in lows + highs]
    bottom, top = _limits(points, ends, span=3.0, pad=0.5)
    _paper_points(ax, paper)
    for i, arm in enumerate(pushpull):
        if _finite(series[arm][0]):
            x = [j + offsets[i] for j in range(len(levels))]
            _points(ax, x, series[arm], colours[arm], False, f"{_arm_label(arm, arms)} - {plain_name(arm[0])}")
            _beyond(ax, x, series[arm][1], series[arm][2], bottom, top, colours[arm])
    if not ours:
        ax.text(
            0.5,
            0.95,
            "no push-pull model of this figure was measured beside its plain twin: the paper's differences only",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=9,
            color="dimgray",
        )
    ax.axhline(0, color="black", lw=0.8, zorder=1)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("push-pull - plain\n(points, 95 % CI)")


def _figure(table: PaperTable, recipe: str, aggregation: Aggregation, path: Path) -> None:
    """One paper figure: the arms (model, h, alpha) its table prints, nothing else (Figures 6-9 print the
    paper's default push-pull only, whatever else the recipe trained), on its data set only (WRN-28-10
    is trained on CIFAR-100 too)."""
    rows = aggregation.paper[aggregation.paper["source"] == table.source]
    arms = list(dict.fromkeys(_arms(rows)))
    cells = aggregation.cells[(aggregation.cells["recipe"] == recipe)].merge(rows[MODEL].drop_duplicates(), on=MODEL)
    effect = aggregation.effect
    effect = effect[(effect["recipe"] == recipe) & effect["dataset"].isin(set(rows["dataset"]))]
    title = f"{table.figure}: {table.title}"
    _draw(path, title, recipe, _paper_ticks(rows), cells, effect, _levels(rows), arms, table.source)


def _one_table_per_model(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (paper cells) from one table per plain model: the first in PAPER_TABLES order that prints it."""
    order = {table.source: i for i, table in enumerate(PAPER_TABLES)}
    rows = rows.assign(order=rows["source"].map(order)).sort_values("order", kind="stable")
    first: dict[tuple[str, str], str] = {}
    for dataset, model, source in zip(rows["dataset"], rows["model"], rows["source"]):
        first.setdefault((dataset, plain_name(model)), source)
    keep = [first[(d, plain_name(m))] == s for d, m, s in zip(rows["dataset"], rows["model"], rows["source"])]
    return rows[np.array(keep, dtype=bool)].drop(columns="order")  # an array: [] would select no column


def _suite_figure(
    noise: str, recipe: str, dataset: str, arms: list[Arm], aggregation: Aggregation, path: Path, title: str
) -> None:
    """One noise of a suite on one data set for ``arms``: clean and every level, the paper's Poisson cells
    at the contrast each reading means where the noise's level is a contrast."""
    mine = (aggregation.cells["recipe"] == recipe) & (aggregation.cells["dataset"] == dataset)
    cells = aggregation.cells[mine & aggregation.cells["noise"].isin(["clean", noise])]
    cells = cells[[arm in arms for arm in _arms(cells)]]
    paper = aggregation.paper
    rows = paper.iloc[:0]
    if Noise.parse(noise).level_is_contrast:
        printed = paper[(paper["dataset"] == dataset) & (paper["noise"] == "poisson")]
        rows = _one_table_per_model(poisson_cells_as(noise, printed[[arm in arms for arm in _arms(printed)]]))
    levels = sorted(set(zip(cells["noise"], cells["level"])), key=_noise_key)
    effect = aggregation.effect[(aggregation.effect["recipe"] == recipe) & (aggregation.effect["dataset"] == dataset)]
    source = ", ".join(dict.fromkeys(rows["source"]))
    _draw(path, title, recipe, _paper_ticks(rows), cells, effect, levels, arms, source)


def _tick(value: float, _position: int | None = None) -> str:
    """A y tick label: a value that rounds to 0 reads 0, never -0."""
    return f"{round(value, 6) + 0.0:g}"


def _subtitle(title: str, recipe: str, cells: pd.DataFrame, ticks: dict, levels: list, source: str) -> str:
    """The figure's title, what its points are, and where the paper's values come from (where one shows)."""
    seeds = ", ".join(map(str, sorted(set(cells["seeds"])))) or "none"
    lines = [
        title,
        f"recipe {recipe}, seeds per cell: {seeds}; points: ours, the mean over seeds; error bars: 95 % prediction "
        "interval for one run (2+ seeds), below: 95 % CI",
    ]
    shown = set(levels)
    paper = any((noise, level) in shown for _, _, noise, level in ticks)
    lines.append(
        (f"hollow markers: the paper's values, {source} (single runs); " if paper else "")
        + "a triangle at an edge: the interval goes on past the axis"
    )
    return "\n".join(lines)


def _draw(
    path: Path,
    title: str,
    recipe: str,
    ticks: dict,
    cells: pd.DataFrame,
    effect: pd.DataFrame,
    levels: list,
    arms: list[Arm],
    source: str,
) -> Figure:
    """The two panels over ``levels`` for ``arms``, saved to ``path``; ticks: :func:`_paper_ticks` (may be
    empty), ``source`` the paper table(s) they come from. Returns the figure, so that a test can read it."""
    shown, chosen = set(levels), set(arms)
    keep = [arm in chosen and cell in shown for arm, cell in zip(_arms(effect), zip(effect["noise"], effect["level"]))]
    effect = effect[pd.Series(keep, index=effect.index, dtype=bool)]
    labels, xlabel = _axis(levels)
    figure = Figure(figsize=(max(9, 1.15 * len(levels)) + 3, 9), layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 2])
    _accuracy_panel(top, ticks, cells, levels, arms)
    _effect_panel(bottom, effect, ticks, levels, arms)
    for ax, name in ((top, "accuracy"), (bottom, "difference")):
        ax.set_label(name)
        ax.set_xticks(range(len(levels)), labels)
        ax.set_xticks([j + 0.5 for j in range(len(levels) - 1)], minor=True)  # a line between two levels' points
        ax.tick_params(axis="x", which="minor", length=0)
        ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_xlabel(xlabel)
        ax.yaxis.set_major_formatter(FuncFormatter(_tick))
        ax.grid(axis="y", lw=0.4, alpha=0.5)
        ax.grid(axis="x", which="minor", lw=0.6, color="0.8")
        if ax.get_legend_handles_labels()[1]:  # one column beside the panel: the entries read in their order
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    top.set_title(_subtitle(title, recipe, cells, ticks, levels, source), fontsize=10)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return figure


def _suite_figures(aggregation: Aggregation, out: Path) -> list[Path]:
    """One PNG per (noise, data set, recipe) of a suite: ``<suite>_<noise>[_<dataset>][_<recipe>].png`` (no
    ``<suite>_`` for the paper's suite: a study of one's own), the data set and recipe named only when the
    suite's results hold several, with every plain model and the
    push-pull ones at the paper's default (h, alpha); where other (h, alpha) were measured, a second PNG,
    ``<same name>_h_alpha.png``, with every (h, alpha) of those models beside their plain twins."""
    cells = aggregation.cells[aggregation.cells["noise"] != "clean"]
    several_datasets, several_recipes = cells["dataset"].nunique() > 1, cells["recipe"].nunique() > 1
    written = []
    for (noise, dataset, recipe), group in sorted(
        cells.groupby(["noise", "dataset", "recipe"]), key=lambda item: (_noise_key((item[0][0], 0)), item[0][1:])
    ):
        # The paper's suite here is a study of one's own: its figures are named and titled by noise alone.
        suite = [] if aggregation.suite == PAPER_SUITE else [aggregation.suite]
        name = "_".join([*suite, noise] + [dataset] * several_datasets + [recipe] * several_recipes)
        arms = sorted(set(_arms(group)), key=_arm_order)
        title = "".join(f"Suite {s}: " for s in suite) + f"{noise} on {dataset}, by level"
        grid = {plain_name(a[0]) for a in arms if not _is_default(a)}
        figures = [(out / f"{name}.png", [a for a in arms if _is_default(a)], title)]
        if grid:
            every = [a for a in arms if plain_name(a[0]) in grid]
            figures.append((out / f"{name}_h_alpha.png", every, f"{title}, every (h, alpha) measured"))
        for path, shown, heading in figures:
            if shown:
                _suite_figure(noise, recipe, dataset, shown, aggregation, path, heading)
                written.append(path)
    return written


def _figures(aggregation: Aggregation, out: Path) -> list[Path]:
    """One PNG per (paper figure, recipe) with measured cells: ``<figure_stem>.png`` when the table holds
    one recipe, ``<figure_stem>_<recipe>.png`` when it holds several; a study of one's own (no paper table)
    and another suite have the figures of a suite, one per noise (:func:`_suite_figures`)."""
    if aggregation.suite != PAPER_SUITE or not aggregation.paper_tables:
        return _suite_figures(aggregation, out)
    written, layouts = [], {t.stem: t for t in PAPER_TABLES}
    for stem, table in aggregation.paper_tables.items():
        paper_table = layouts[stem]
        if paper_table.figure is None or not has_measurements(table):
            continue
        recipes = [r for r in dict.fromkeys(table["recipe"]) if has_measurements(table[table["recipe"] == r])]
        for recipe in recipes:
            name = paper_table.figure_stem if len(recipes) == 1 else f"{paper_table.figure_stem}_{recipe}"
            path = out / f"{name}.png"
            _figure(paper_table, recipe, aggregation, path)
            written.append(path)
    return written


def _number(value: float, signed: bool = True) -> str:
    """A number with two decimals (signed: with its sign), "" for none; one that rounds to 0 reads 0.00 or
    +0.00, never -0.00 (no point of difference is negative zero)."""
    if value is None or pd.isna(value):
        return ""
    value = round(float(value), 2) + 0.0  # adding 0.0 turns -0.0 into 0.0
    return f"{value:+.2f}" if signed else f"{value:.2f}"


# This project's LeNet learning rate, and why it is not the paper's (sweep.specs, the README).
_LENET_LR = 0.01
_LENET_LR_REASON = (
    "the LeNets train at lr 0.01 here, not at the paper's 0.1: at 0.1 the push-pull LeNets do not train (they "
    "collapse to one class, or turn NaN), at 0.01 all eight do, plain and push-pull alike (see the README)"
)


_TITLE = "# Reproduction report"


def _opening_lines(aggregation: Aggregation) -> list[str]:
    """What recipe the numbers come from: the line under the report's title."""
    recipes = aggregation.recipes
    if recipes.empty:
        return ["No trial finished: nothing below is a measurement.", ""]
    smoke = recipes[recipes["profile"] == "smoke"]
    lenet = bool(((recipes["arch"] == "lenet") & (recipes["lr"] == _LENET_LR)).any())
    if len(smoke):
        first = "**Smoke profile: these numbers are not the paper's recipe** (the smoke profile trains on a sliver of the data: its numbers prove the pipeline, not the models)."
    elif (recipes["changes"] != "").any():
        first = "These numbers come from the paper's recipe with changes (see Recipes): not the paper's exact recipe."
        first += f" Also, {_LENET_LR_REASON}." if lenet else ""
    else:
        first = "These numbers come from the paper's recipe" + (f", except that {_LENET_LR_REASON}." if lenet else ".")
    return [first, ""]


def _recipe_lines(aggregation: Aggregation) -> list[str]:
    """The recipes section: every recipe of the runs, by its id."""
    recipes = aggregation.recipes
    if recipes.empty:
        return []
    lines = [
        "## Recipes",
        "",
        "| recipe | arch | profile | changes | epochs | lr | trials |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in recipes.itertuples(index=False):
        lines.append(
            f"| {row.recipe} | {row.arch} | {row.profile} | {row.changes or '-'} | {row.epochs} | {row.lr:g} | {row.trials} |"
        )
    if recipes["arch"].duplicated().any():
        lines += [
            "",
            "Several recipes of one architecture: each has its own cells, never a shared mean (`--recipe ID` shows one).",
        ]
    return lines + [""]


def _trials_lines(aggregation: Aggregation) -> list[str]:
    """How many trials the tables hold, and how many were left out and why (where any was)."""
    listed = aggregation.excluded
    excluded = listed[~listed["run_id"].isin(aggregation.results["run_id"])]  # not those in the tables
    unknown = len(listed) - len(excluded)
    diverged = int((excluded["health"] == "diverged").sum())
    missing = sum(
        1 + len([s for s in suite_settings(aggregation.suite, d) if not s.is_identity])
        for d in excluded["dataset"].dropna()
    )
    measured = aggregation.results["trial_key"].nunique()
    text = (
        f"{measured} trials aggregated. {len(excluded)} left out ({diverged} diverged: they did not train; "
        f"{len(excluded) - diverged} failed or unfinished), so {missing} (model, noise, level) cells are missing "
        "from every table: see excluded.parquet for the reasons."
        if len(excluded)
        else f"{measured} trials aggregated, none left out."
    )
    if unknown:
        text += f" {unknown} more are in the tables, not in the push-pull effect: their params make no recipe."
    return [text, ""]


def _family_summary(noise: str, family: pd.DataFrame) -> str:
    """One noise family's estimates (their range, and the discoveries at a 5 % false discovery rate), and
    the paper's signs beside them."""
    estimated = family["difference"].dropna()
    text = f"**{noise}** ({len(family)} cells): "
    text += (
        f"estimated differences from {_number(estimated.min())} to {_number(estimated.max())} points; "
        if len(estimated)
        else "no paired estimate; "
    )
    tested = int(family["q_value"].notna().sum())
    text += (
        f"{int((family['q_value'] < 0.05).sum())} of the {tested} cells with a p-value are discoveries at a 5 % "
        "false discovery rate (q < 0.05)."
        if tested
        else "no cell has a p-value (fewer than two paired seeds)."
    )
    for reading, (column, _) in PAPER_EFFECT_COLUMNS.items():
        paper = family[column].dropna()
        if paper.empty:
            continue
        text += (
            f" The paper ({reading} reading) has push-pull higher in {int((paper > 0).sum())}, lower in "
            f"{int((paper < 0).sum())} and equal in {int((paper == 0).sum())} of the {len(paper)} cells it prints."
        )
    return text


def _paper_columns(effect: pd.DataFrame) -> dict[str, str]:
    """The paper's difference columns of ``effect`` (a slice of pushpull_effect) that hold a value, by reading:
    a column the paper prints nothing in (a suite's own noise, another data set's reading) is left out."""
    return {reading: column for reading, (column, _) in PAPER_EFFECT_COLUMNS.items() if effect[column].notna().any()}


def _effect_intro(effect: pd.DataFrame) -> str:
    """What the effect tables hold; the readings of the paper's cells named only where one has a value."""
    readings = _paper_columns(effect)
    paper = (
        f"The paper's difference stands beside each cell it prints ({'; '.join(f'{r}: {READINGS[r]}' for r in readings)}). "
        if readings
        else ""
    )
    return (
        "Difference = push-pull accuracy - plain accuracy on the same seed, in points; mean over seeds with its "
        "paired 95 % Student t interval (none with one seed), and q, the paired t test's p-value adjusted "
        "(Benjamini-Hochberg) within the noise family. These are estimates, not verdicts: an SD of the "
        "differences below an accuracy's resolution is floored at the binomial standard error (`sd_floored`). "
        f"{paper}All of it is in pushpull_effect.parquet."
    )


def _effect_table(family: pd.DataFrame) -> list[str]:
    """Every cell of one noise family, levels from the least severe to the most, with the paper's columns
    that hold a value in it."""
    readings = _paper_columns(family)
    headers = ["pair", "level", "difference", "95 % CI", "pairs", "seeds PP / plain (diverged)", "q"]
    headers += ["paper" if r == "header" else f"paper, {r} reading" for r in readings]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    severity = [_severity(n, v) for n, v in zip(family["noise"], family["level"])]
    family = family.assign(severity=severity).sort_values(["plain", "model", "h", "alpha", "severity"], kind="stable")
    for row in family.itertuples(index=False):
        pair = f"{row.model} - {row.plain}" + (
            f" (h={row.h:g}, alpha={row.alpha:g})" if (row.h, row.alpha) != (DEFAULT_H, DEFAULT_ALPHA) else ""
        )
        interval = "" if math.isnan(row.ci_low) else f"[{_number(row.ci_low)}, {_number(row.ci_high)}]"
        q = "" if math.isnan(row.q_value) else f"{row.q_value:.2g}"
        arms = f"{row.seeds_pushpull} / {row.seeds_plain} ({row.diverged_pushpull} / {row.diverged_plain})"
        cells = [pair, f"{row.level:g}", _number(row.difference), interval, str(row.pairs), arms, q]
        cells += [_number(getattr(row, column)) for column in readings.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _effect_lines(aggregation: Aggregation) -> list[str]:
    """The push-pull effect per recipe and noise family: a summary of the estimates, then every cell."""
    effect = aggregation.effect
    lines = ["## Push-pull effect, paired by seed", ""]
    if effect.empty:
        return lines + ["No push-pull model was measured beside its plain twin on the same seed.", ""]
    lines += [_effect_intro(effect), ""]
    for (recipe, dataset), group in effect.groupby(["recipe", "dataset"], sort=True):
        seeds = sorted(set(group["pairs"]))
        lines += [f"### Recipe {recipe}, {dataset} (paired seeds per cell: {', '.join(map(str, seeds))})", ""]
        for noise, family in sorted(group.groupby("noise"), key=lambda item: _noise_key((item[0], 0))):
            lines += [_family_summary(noise, family), "", *_effect_table(family), ""]
    return lines


def _value(value: float, spec: str = ".2f") -> str:
    """A number of a table cell, ``-`` where there is none."""
    return "-" if value is None or pd.isna(value) else format(value, spec)


def _fit_sentence(fit: pd.DataFrame, kind: str) -> str:
    """Whether the candidates of ``fit`` (one row per ``kind``, a reading or a noise, as its index; columns
    rmse, seed_spread, fits of :func:`sweep.tables.reading_fit`) fit our cells: one fits only when its RMSE
    is within FIT_SPREADS times the seed spread of the cells it was computed on."""
    fit = fit.sort_values("rmse", kind="stable")
    best, nearest = fit.index[0], fit.iloc[0]
    if pd.isna(nearest["seed_spread"]):
        return (
            f"The nearest {kind} is **{best}** (RMSE {nearest['rmse']:.2f} points); whether it fits cannot be told: "
            "one seed per cell gives no seed spread."
        )

    def measured(name: str) -> str:
        row = fit.loc[name]
        return (
            f"RMSE {row['rmse']:.2f} points, {row['rmse'] / row['seed_spread']:.1f} x the seed spread of "
            f"{row['seed_spread']:.2f}"
        )

    fitting = list(fit.index[fit["fits"].astype("boolean").fillna(False).to_numpy(dtype=bool)])
    rule = f"(a {kind} fits within {FIT_SPREADS} x the seed spread)"
    if not fitting:
        subject = f"the {kind}" if len(fit) == 1 else f"the nearest, {best},"
        opener = f"{'Neither' if len(fit) == 2 else 'No'} {kind} fits" if len(fit) > 1 else f"**{best}** does not fit"
        return (
            f"{opener}: {subject} is off by {nearest['rmse']:.1f} points RMS, "
            f"{nearest['rmse'] / nearest['seed_spread']:.1f} x the seed spread of {nearest['seed_spread']:.1f} {rule}."
        )
    if len(fitting) > 1:
        listed = "; ".join(f"**{name}**: {measured(name)}" for name in fitting)
        return f"{len(fitting)} {kind}s fit, so the measurements cannot tell them apart {rule}: {listed}."
    others = [name for name in fit.index if name not in fitting]
    text = f"The measurements fit the **{fitting[0]}** {kind}: {measured(fitting[0])} {rule}"
    return text + "".join(f"; {name} does not: {measured(name)}" for name in others) + "."


def _model_label(model: str, h: float, alpha: float) -> str:
    """A model's name, with its (h, alpha) where that is not the paper's default."""
    arm = _arm(model, h, alpha)
    return model if _is_default(arm) else f"{model} (h={arm[1]:g}, alpha={arm[2]:g})"


def _comparison_lines(aggregation: Aggregation) -> list[str]:
    """Where the paper's cells mean something else than their header, how well each reading fits, where
    the paper's numbers lie against our prediction interval, and the largest differences."""
    compared, fit = aggregation.comparison, aggregation.reading_fit
    lines = ["## Comparison with the paper", ""]
    if compared.empty:
        return lines + ["No measured cell is printed in the paper.", ""]
    noted = compared[compared["protocol_note"] != ""]
    noted = noted.assign(kind=noted["protocol_note"].str.split(":").str[0])  # a note's kind: before its first colon
    if len(noted):
        lines.append("Cells whose meaning differs from their header (the `protocol_note` of comparison.parquet):")
        lines.append("")
        for (source, reading, _), group in noted.groupby(["paper_source", "reading", "kind"], sort=False):
            lines.append(
                f"- {source}, {reading} reading, {len(group)} compared cells, for example: {group['protocol_note'].iloc[0]}"
            )
        lines.append("")
    for (recipe, source), group in fit.groupby(["recipe", "source"], sort=True):
        rmse = group.pivot(index="reading", columns="models", values="rmse").reindex(
            columns=["plain", "push-pull", "all"]
        )
        every = group[group["models"] == "all"].set_index("reading")
        lines += [
            f"Root mean square of (ours - paper), in points, over {source}'s cells that have two readings, recipe {recipe}:",
            "",
            "| reading | plain | push-pull | all | cells | seed spread | fits |",
            "|---|---|---|---|---|---|---|",
        ]
        for reading, row in rmse.iterrows():
            fits = every.loc[reading, "fits"]
            lines.append(
                f"| {reading} | {_value(row['plain'])} | {_value(row['push-pull'])} | {_value(row['all'])} | "
                f"{int(every.loc[reading, 'cells'])} | {_value(every.loc[reading, 'seed_spread'])} | "
                f"{'-' if pd.isna(fits) else 'yes' if fits else 'no'} |"
            )
        lines += ["", _fit_sentence(every, "reading"), ""]
    lines += _prediction_lines(compared)
    header = compared[compared["reading"] == "header"]
    worst = header.reindex(header["difference"].abs().sort_values(ascending=False, kind="stable").index).head(10)
    lines += [
        "Largest differences from the paper (header reading):",
        "",
        "| recipe | table | model | noise | level | ours | 95 % PI, one run | paper | outside PI | difference | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in worst.itertuples(index=False):
        interval = "" if pd.isna(row.prediction_low) else f"[{row.prediction_low:.2f}, {row.prediction_high:.2f}]"
        outside = "" if pd.isna(row.outside_prediction) else "yes" if row.outside_prediction else "no"
        lines.append(
            f"| {row.recipe} | {row.paper_source} | {_model_label(row.model, row.h, row.alpha)} | {row.noise} | "
            f"{row.level:g} | {row.accuracy:.2f} | {interval} | {row.paper_accuracy:.2f} | {outside} | "
            f"{_number(row.difference)} | {row.protocol_note} |"
        )
    return lines + [""]


def _prediction_lines(compared: pd.DataFrame) -> list[str]:
    """How many of the paper's numbers lie outside our prediction interval for one run, per reading."""
    lines = [
        "Each of the paper's numbers is a single run, so it is set against our 95 % prediction interval for one "
        "new run of the cell, mean +- t(n-1, 0.975) x SD x sqrt(1 + 1/n) over our n seeds (`prediction_low`, "
        "`prediction_high` and `outside_prediction` in comparison.parquet), not against mean +- SD.",
        "",
    ]
    for reading, group in compared.groupby("reading", sort=False):
        judged = group.dropna(subset=["prediction_low"])
        if judged.empty:
            lines.append(f"- {reading} reading: none of its {len(group)} cells has 2+ seeds, so none is judged.")
            continue
        outside, fewer = int(judged["outside_prediction"].sum()), len(group) - len(judged)
        lines.append(
            f"- {reading} reading: {outside} of the {len(judged)} cells measured on 2+ seeds lie outside it"
            + (f" ({fewer} more have fewer seeds)." if fewer else ".")
        )
    return lines + [""]


def _variant_lines(aggregation: Aggregation) -> list[str]:
    """Which noise of the suite comes nearest to the paper's contrast + Poisson cells, under each reading,
    and whether it fits; nothing where no noise of the suite has a contrast as its level (the section is
    about the paper's Poisson cells, which such a suite does not measure)."""
    fit = aggregation.variant_fit
    noises = set(aggregation.results["noise"]) - {"clean"}
    if not any(Noise.parse(noise).level_is_contrast for noise in noises):
        return []
    lines = ["## Nearest to the paper's contrast + Poisson cells", ""]
    if fit.empty:
        return lines + ["The paper prints no contrast + Poisson cell of these models.", ""]
    readings = "; ".join(f"{r}: {READINGS[r]}" for r in dict.fromkeys(fit["reading"]))
    lines += [
        "Root mean square of (ours - paper), in points, over the paper's Poisson cells, each compared with our cell of "
        f"the noise at the contrast its reading means ({readings}). "
        f"A noise fits when its RMSE is within {FIT_SPREADS} x the seed spread (the root mean square of our "
        "cells' SD over seeds). All of it is in variant_fit.parquet.",
        "",
    ]
    for (recipe, source, reading), group in fit.groupby(["recipe", "source", "reading"], sort=True):
        table = group.pivot(index="noise", columns="models", values="rmse").reindex(
            columns=["plain", "push-pull", "all"]
        )
        every = group[group["models"] == "all"].set_index("noise")
        table = table.loc[every.sort_values("rmse", kind="stable").index]
        lines += [
            f"### Recipe {recipe}, {source}, {reading} reading",
            "",
            "| noise | plain | push-pull | all | cells | seed spread | fits |",
            "|---|---|---|---|---|---|---|",
        ]
        for noise, row in table.iterrows():
            fits = every.loc[noise, "fits"]
            lines.append(
                f"| {noise} | {_value(row['plain'])} | {_value(row['push-pull'])} | {_value(row['all'])} | "
                f"{int(every.loc[noise, 'cells'])} | {_value(every.loc[noise, 'seed_spread'])} | "
                f"{'-' if pd.isna(fits) else 'yes' if fits else 'no'} |"
            )
        best = table.index[0]
        lines += [
            "",
            f"Nearest under the {reading} reading: **{best}** (RMSE {every.loc[best, 'rmse']:.2f} points over "
            f"{int(every.loc[best, 'cells'])} cells). {_fit_sentence(every, 'noise')}",
            "",
        ]
    return lines


def _claims_lines(aggregation: Aggregation) -> list[str]:
    """The paper's claims, our verdict on each with its interval: one line per claim and recipe."""
    claims = aggregation.claims
    lines = ["## The paper's claims", ""]
    if claims is None:  # a study of one's own: the aggregator tests the paper's claims on the paper's studies only
        return lines + ["Not tested: this is a study of its own; its push-pull effects, paired by seed, are below.", ""]
    if claims.empty:
        return lines + ["No claim of the paper could be tested: no push-pull model was measured with its twin.", ""]
    margin = claims["margin"].iloc[0]
    lines += [
        "One verdict per claim of the paper and recipe: the difference is push-pull minus the model the claim "
        "compares it with, of each seed's mean accuracy over the claim's noise levels, in points, with its 95 % "
        f"interval. Verdicts: supported, contradicted, equivalent (within +-{margin:g} points, `--margin`) or "
        "undecided, with Holm's correction over every test of this table (at most a 5 % chance of any false "
        "verdict). A claim about every pair holds when it holds for each: its difference is the weakest pair's. "
        "Seeds: paired seeds; trials: measured per arm, (diverged) per arm. For an undecided claim, an estimate "
        "of the seeds that would decide the measured difference at the measured spread.",
        "",
        "| claim | section | kind | asserts | recipe | difference [95 % CI] | seeds | trials PP / other (diverged) "
        "| verdict | p (Holm) | seeds to decide |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in claims.itertuples(index=False):
        interval = f" [{_number(row.ci_low)}, {_number(row.ci_high)}]" if not math.isnan(row.ci_low) else ""
        trials = f"{row.seeds_pushpull} / {row.seeds_plain} ({row.diverged_pushpull} / {row.diverged_plain})"
        p_holm = "" if math.isnan(row.p_holm) else f"{row.p_holm:.2g}"
        needed = "" if math.isnan(row.seeds_to_decide) else f"~{row.seeds_to_decide:.0f}"
        weakest = f" (weakest: {row.weakest})" if row.weakest else ""
        lines.append(
            f"| {row.claim} | {row.section} | {row.kind} | {row.asserts} | {row.recipe} | "
            f"{_number(row.difference)}{interval}{weakest} | {row.seeds} | {trials} | **{row.verdict}** | {p_holm} | "
            f"{needed} |"
        )
    lines += ["", "In the paper's words:", ""]
    for claim, words in dict(zip(claims["claim"], claims["words"])).items():
        lines.append(f'- **{claim}**: "{words}"')
    return lines + [""]


SEARCH_FIGURE = "search.png"  # every group of the searched (h, alpha), one panel each


def _effect_of_family(noise: str, cells: pd.DataFrame) -> str:
    """One line of the best point's paired effect: the clean cell's difference and interval, or a noise
    family's range of differences and how many of its intervals lie above 0, below it, or cross it."""
    if noise == "clean":
        row = cells.iloc[0]
        interval = (
            "no interval" if math.isnan(row["ci_low"]) else f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
        )
        return f"- clean: {_number(row['difference'])} {interval} ({row['pairs']} pairs)"
    estimated = cells["difference"].dropna()
    if estimated.empty:
        return f"- {noise} ({len(cells)} levels): no paired estimate"
    text = f"- {noise} ({len(cells)} levels): differences from {_number(estimated.min())} to {_number(estimated.max())}"
    judged = cells.dropna(subset=["ci_low"])
    if judged.empty:
        return text + "; no interval (fewer than two paired seeds)"
    above, below = int((judged["ci_low"] > 0).sum()), int((judged["ci_high"] < 0).sum())
    return (
        text + f"; of the {len(judged)} levels with an interval, {above} lie above 0, {below} below, "
        f"{len(judged) - above - below} cross it"
    )


def _search_lines(aggregation: Aggregation, figure: Path | None) -> list[str]:
    """The searched (h, alpha) of every push-pull model trained with two or more: its points best first
    with the plain twin for reference, the best point's paired effect, and the figure; nothing where none
    was searched."""
    points, twins, effect = aggregation.search_points, aggregation.search_twins, aggregation.search_best_effect
    if points is None or points.empty or figure is None:
        return []
    metric, mode = aggregation.search_metric, aggregation.search_mode
    families = [c for c in points.columns if c.startswith("noise/")]
    lines = [
        "## Searched (h, alpha)",
        "",
        "Every push-pull model trained with two or more (h, alpha) (a study's search, or the sensitivity grid), per "
        f"recipe and data set. Robustness is **{metric}**, {METRICS[metric]} ({'higher' if mode == 'max' else 'lower'} "
        "is better); each number is the mean over seeds of one value per seed, in %. Pareto: no other (h, alpha) of "
        "the model is at least as good on clean accuracy and on robustness and better on one; best: the best "
        "robustness (ties: the higher clean accuracy, then the lower h, then the lower alpha). A point trained fewer "
        "epochs than the others was stopped early by the search's scheduler: it is listed last, neither on the "
        "front nor the best. Points best first, the plain twin under them. All of it is in search_points.parquet; the best point against its plain twin, paired "
        "by seed, in search_best_effect.parquet.",
        "",
    ]
    headers = ["point", "seeds", "epochs", "clean", *(f"{c.removeprefix('noise/')} (mean)" for c in families)]
    headers += [f"{metric} (robustness)", "Pareto", "best"]
    for (recipe, dataset, model), group in points.groupby(["recipe", "dataset", "model"], sort=False):
        lines += [f"### Recipe {recipe}, {dataset}, {model}: {len(group)} (h, alpha)", ""]
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        numbers = ["clean", *families, "robustness"]
        for row in group.to_dict("records"):
            cells = [f"h={row['h']:g}, alpha={row['alpha']:g}", str(row["seeds"]), str(row["epochs"])]
            cells += [_number(row[c], signed=False) for c in numbers]
            cells += ["yes" if row["pareto"] else "", "**best**" if row["best"] else ""]
            lines.append("| " + " | ".join(cells) + " |")
        mine = twins[(twins["recipe"] == recipe) & (twins["dataset"] == dataset) & (twins["model"] == model)]
        for row in mine.to_dict("records"):
            cells = [f"{row['plain']} (plain twin)", str(row["seeds"]), ""]
            cells += [_number(row[c], signed=False) for c in numbers] + ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        best = group[group["best"]]
        if best.empty:
            lines += ["No (h, alpha) of this model has a robustness: no best point.", ""]
            continue
        h, alpha = best["h"].iloc[0], best["alpha"].iloc[0]
        point = (recipe, dataset, model, h, alpha)
        paired = effect[
            np.array([key == point for key in effect[POINT].itertuples(index=False, name=None)], dtype=bool)
        ]
        twin = plain_name(model)
        if paired.empty:
            lines += [
                f"Best h={h:g}, alpha={alpha:g}: not measured beside {twin} on a same seed, so no paired effect.",
                "",
            ]
            continue
        lines += [
            f"Best h={h:g}, alpha={alpha:g} against {twin}, paired by seed (push-pull - plain, points, with the 95 % CI):",
            "",
        ]
        for noise in ["clean", *metric_families(metric)]:
            family = paired[paired["noise"] == noise]
            family = family.iloc[np.argsort([_severity(noise, x) for x in family["level"]], kind="stable")]
            if len(family):
                lines.append(_effect_of_family(noise, family))
        lines.append("")
    return lines + [f"![{figure.stem}]({figure.name})", ""]


def write_report(aggregation: Aggregation, out: Path) -> list[Path]:
    """Figures for every paper figure (or, for another suite, every noise) with a measured cell, the
    searched (h, alpha)'s figure where a model was trained with two or more, and report.md. Returns the
    paths written."""
    figures = _figures(aggregation, out)
    searched = aggregation.search_points is not None and not aggregation.search_points.empty
    search = out / SEARCH_FIGURE if searched else None
    if search is not None:
        search_figure(
            aggregation.search_points,
            aggregation.search_twins,
            search,
            aggregation.search_metric,
            aggregation.search_mode,
            dpi=DPI,
        )
    paper = aggregation.suite == PAPER_SUITE
    lines = [_TITLE, "", *_opening_lines(aggregation)]
    # the paper's report opens with its claims; another suite's with what the suite is
    lines += (
        _claims_lines(aggregation)
        if paper
        else [f"Suite **{aggregation.suite}**: {SUITES[aggregation.suite].description}.", ""]
    )
    lines += _recipe_lines(aggregation) + _trials_lines(aggregation) + _effect_lines(aggregation)
    lines += _search_lines(aggregation, search)
    lines += _comparison_lines(aggregation) if paper else _variant_lines(aggregation)
    lines += ["## Figures", ""]
    nothing = "No figure: no measured cell of Figures 4-9." if paper else "No figure: no noisy cell was measured."
    lines += [f"![{p.stem}]({p.name})" for p in figures] or [nothing]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return figures + ([] if search is None else [search]) + [report]
