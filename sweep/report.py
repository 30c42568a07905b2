"""``report.md`` and PNG figures named after the paper's (``figure4_gaussian.png``...), from what the
aggregator computed (:class:`sweep.tables.Aggregation`): nothing here recomputes a statistic.

Each figure has two panels: accuracy per model and noise level (light bars plain, dark bars push-pull,
error bars our 95 % prediction interval for one new run, the paper's values, single runs, as ticks), and
the push-pull effect (push-pull minus plain, paired by seed, with its 95 % interval; the paper's difference
of the same ticks) on an axis where one point shows. A bar is a model *arm*, (model, h, alpha): a paper
figure shows the arms its table prints (Figures 6-9: the paper's default h=2, alpha=1 only), a suite's
figure every plain model and the default push-pull, and a second figure for every other (h, alpha) measured.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from models import DEFAULT_ALPHA, DEFAULT_H, plain_name  # noqa: E402
from perturb import PAPER_SUITE, SUITES, Noise, suite_settings  # noqa: E402
from sweep.paper import PAPER_TABLES, READINGS, PaperTable  # noqa: E402
from sweep.tables import (  # noqa: E402
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
_PAPER_MARKERS = {"header": ("_", "black", 140), "text": ("x", "dimgray", 40), "swapped": ("+", "dimgray", 60)}
DPI = 150

# What one bar of a figure is: (model, h, alpha), h and alpha None for a plain model. A model's name alone
# does not tell its bars apart: the sensitivity sweep trains WRN-16-10-PP for nine (h, alpha).
Arm = tuple[str, float | None, float | None]


def _arm(model: str, h: float, alpha: float) -> Arm:
    return model, None if pd.isna(h) else float(h), None if pd.isna(alpha) else float(alpha)


def _arms(frame: pd.DataFrame) -> list[Arm]:
    """The arm of every row of ``frame`` (columns model, h, alpha), in row order."""
    return [_arm(m, h, a) for m, h, a in zip(frame["model"], frame["h"], frame["alpha"])]


def _is_default(arm: Arm) -> bool:
    """A plain model, or a push-pull one with the paper's default (h, alpha) (all of its figures show)."""
    return arm[1] is None or (arm[1], arm[2]) == (DEFAULT_H, DEFAULT_ALPHA)


def _arm_order(arm: Arm) -> tuple:
    """Sort arms by their plain model, the plain one first, then by (h, alpha)."""
    return plain_name(arm[0]), arm[1] is not None, arm[1] or 0.0, arm[2] or 0.0


def _arm_label(arm: Arm, arms: list[Arm]) -> str:
    """The model's name, with its (h, alpha) where that is not the paper's default or another of ``arms``
    has the same name."""
    model, h, alpha = arm
    if h is None or (_is_default(arm) and sum(a[0] == model for a in arms) == 1):
        return model
    return f"{model} h={h:g} alpha={alpha:g}"


def _colours(arms: list[Arm]) -> dict[Arm, str]:
    """A plain model and its push-pull twin share a colour (the plain bar is drawn light); where one plain
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


def _noise_key(cell: tuple[str, float]) -> tuple:
    """Sort (noise, level) as the tables do: clean, the paper's noises, then the others by name."""
    return NOISE_ORDER.get(cell[0], len(NOISE_ORDER)), cell[0], cell[1]


def _label(noise: str, level: float) -> str:
    return "clean" if noise == "clean" else f"{noise}\n{level:g}"


def _paper_ticks(rows: pd.DataFrame) -> dict[tuple, float]:
    """(reading, arm, measured noise, measured level) -> the paper's accuracy, from ``rows`` (paper cells
    of one table per plain model, so that a difference of two ticks is a difference the paper prints)."""
    ticks: dict[tuple, float] = {}
    for key in zip(rows["reading"], _arms(rows), rows["measured_noise"], rows["measured_level"], rows["accuracy"]):
        ticks.setdefault(key[:4], key[4])
    return ticks


def _paper_differences(ticks: dict[tuple, float]) -> dict[tuple, float]:
    """The paper's push-pull minus plain per (reading, push-pull arm, noise, level), from the same ticks
    the accuracy panel draws."""
    differences = {}
    for (reading, arm, noise, level), value in ticks.items():
        if arm[1] is not None:
            plain = ticks.get((reading, (plain_name(arm[0]), None, None), noise, level), math.nan)
            differences[(reading, arm, noise, level)] = value - plain
    return differences


def _accuracy_panel(ax, ticks: dict, cells: pd.DataFrame, levels: list, arms: list[Arm]) -> None:
    """Grouped bars: one group per (noise, level), one bar per arm with our 95 % prediction interval for
    one run, the paper's values (single runs) as ticks."""
    width, colours = 0.8 / len(arms), _colours(arms)
    half = prediction_half_width(cells["std"], cells["seeds"])
    ours = {
        (arm, noise, level): (mean, h)
        for arm, noise, level, mean, h in zip(_arms(cells), cells["noise"], cells["level"], cells["accuracy"], half)
    }
    readings = [r for r in _PAPER_MARKERS if any(key[0] == r for key in ticks)]
    lowest = 100.0
    for i, arm in enumerate(arms):
        x = [j - 0.4 + (i + 0.5) * width for j in range(len(levels))]
        mean = [ours.get((arm, *cell), (math.nan, math.nan))[0] for cell in levels]
        error = [ours.get((arm, *cell), (math.nan, math.nan))[1] for cell in levels]
        ax.bar(
            x,
            mean,
            width,
            yerr=error,
            capsize=2,
            color=colours[arm],
            alpha=0.4 if arm[1] is None else 1.0,
            label=_arm_label(arm, arms),
            error_kw={"lw": 0.8},
        )
        for reading in readings:
            marker, ink, size = _PAPER_MARKERS[reading]
            paper = [ticks.get((reading, arm, *cell), math.nan) for cell in levels]
            ax.scatter(x, paper, marker=marker, s=size, color=ink, zorder=3)
            lowest = min([lowest, *(t for t in paper if not math.isnan(t))])
        lowest = min([lowest, *(m - (0 if math.isnan(e) else e) for m, e in zip(mean, error) if not math.isnan(m))])
    for reading in readings:  # one legend entry per reading
        marker, ink, size = _PAPER_MARKERS[reading]
        label = f"paper ({reading} reading)" if len(readings) > 1 else "paper"
        ax.scatter([], [], marker=marker, s=size, color=ink, label=label)
    ax.set_ylim(max(0.0, math.floor(lowest) - 3), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(axis="y", lw=0.4, alpha=0.5)


def _effect_limits(ours: list[float], paper: list[float]) -> tuple[float, float]:
    """A y range that holds 0 and every interval of ours, at least 1.5 points either side, so that a
    difference of one point shows; the paper's differences do not widen it (they are clipped to it) unless
    nothing of ours is drawn."""
    values = [0.0, *(v for v in ours if not math.isnan(v))]
    if len(values) == 1:
        values += [v for v in paper if not math.isnan(v)]
    low, high = min(values), max(values)
    pad = max(1.5, 0.15 * (high - low))
    return low - pad, high + pad


def _effect_panel(ax, effect: pd.DataFrame, ticks: dict, levels: list, arms: list[Arm], labels: list[str]) -> None:
    """Push-pull minus plain per push-pull arm and level: the mean over seeds with its 95 % interval, the
    paper's difference (of the ticks above) as ticks, a triangle at the edge where it lies beyond the axis."""
    pushpull = [a for a in arms if a[1] is not None]
    colours = _colours(arms)
    width = 0.8 / max(1, len(pushpull))
    ours = {
        (arm, noise, level): (d, low, high)
        for arm, noise, level, d, low, high in zip(
            _arms(effect), effect["noise"], effect["level"], effect["difference"], effect["ci_low"], effect["ci_high"]
        )
    }
    paper = _paper_differences(ticks)
    bottom, top = _effect_limits([v for value in ours.values() for v in value], list(paper.values()))
    for i, arm in enumerate(pushpull):
        x = [j - 0.4 + (i + 0.5) * width for j in range(len(levels))]
        mine = [ours.get((arm, *cell), (math.nan,) * 3) for cell in levels]
        mean = [m for m, _, _ in mine]
        if not all(math.isnan(m) for m in mean):
            errors = [
                [0 if math.isnan(m - low) else m - low for m, low, _ in mine],
                [0 if math.isnan(high - m) else high - m for m, _, high in mine],
            ]
            label = f"{_arm_label(arm, arms)} - {plain_name(arm[0])}"
            ax.errorbar(x, mean, yerr=errors, fmt="o", ms=4, color=colours[arm], capsize=2, lw=0.9, label=label)
        for reading, (marker, ink, size) in _PAPER_MARKERS.items():
            values = [paper.get((reading, arm, *cell), math.nan) for cell in levels]
            inside = [v if bottom <= v <= top else math.nan for v in values]
            ax.scatter(x, inside, marker=marker, s=size, color=ink, zorder=3)
            for edge, arrow, beyond in (
                (top, "^", [v > top for v in values]),
                (bottom, "v", [v < bottom for v in values]),
            ):
                xs = [xi for xi, b in zip(x, beyond) if b]
                ax.scatter(
                    xs, [edge] * len(xs), marker=arrow, s=25, facecolors="none", edgecolors=ink, zorder=3, clip_on=False
                )
    if not ours:  # below the tick labels, where the legend of ours would be
        ax.text(
            0.5,
            -0.24,
            "no push-pull model of this figure was measured beside its plain twin: the paper's differences only",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=9,
            color="dimgray",
        )
    ax.set_ylim(bottom, top)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("push-pull - plain\n(points, 95 % CI)")
    ax.grid(axis="y", lw=0.4, alpha=0.5)
    ax.set_xticks(range(len(levels)), labels)


def _figure(table: PaperTable, recipe: str, aggregation: Aggregation, path: Path) -> None:
    """One paper figure: the arms (model, h, alpha) its table prints, nothing else (Figures 6-9 print the
    paper's default push-pull only, whatever else the recipe trained)."""
    rows = aggregation.paper[aggregation.paper["source"] == table.source]
    arms = list(dict.fromkeys(_arms(rows)))
    cells = aggregation.cells[(aggregation.cells["recipe"] == recipe)].merge(rows[MODEL].drop_duplicates(), on=MODEL)
    levels = _levels(rows)
    effect = aggregation.effect[aggregation.effect["recipe"] == recipe]
    labels = [_label(n, v) for n, v in levels]
    title = f"{table.figure}: {table.title}"
    _draw(path, title, recipe, _paper_ticks(rows), cells, effect, levels, arms, labels, f"ticks: paper, {table.source}")


def _one_table_per_model(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (paper cells) from one table per plain model: the first in PAPER_TABLES order that prints it."""
    order = {table.source: i for i, table in enumerate(PAPER_TABLES)}
    rows = rows.assign(order=rows["source"].map(order)).sort_values("order", kind="stable")
    first: dict[tuple[str, str], str] = {}
    for dataset, model, source in zip(rows["dataset"], rows["model"], rows["source"]):
        first.setdefault((dataset, plain_name(model)), source)
    keep = [first[(d, plain_name(m))] == s for d, m, s in zip(rows["dataset"], rows["model"], rows["source"])]
    return rows[keep].drop(columns="order")


def _suite_figure(
    noise: str, recipe: str, dataset: str, arms: list[Arm], aggregation: Aggregation, path: Path, title: str
) -> None:
    """One noise of a suite on one data set for ``arms``: clean and every level, the paper's Poisson cells
    as ticks at the contrast each reading means where the noise's level is a contrast."""
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
    labels = ["clean" if n == "clean" else f"{v:g}" for n, v in levels]  # one noise: its name is in the title
    source = f"ticks: paper, {', '.join(dict.fromkeys(rows['source']))}" if len(rows) else "no paper cell"
    _draw(path, title, recipe, _paper_ticks(rows), cells, effect, levels, arms, labels, source)


def _draw(
    path: Path,
    title: str,
    recipe: str,
    ticks: dict,
    cells: pd.DataFrame,
    effect: pd.DataFrame,
    levels: list,
    arms: list[Arm],
    labels: list[str],
    source: str,
) -> None:
    """The two panels over ``levels`` (x tick ``labels``) for ``arms``; ticks: :func:`_paper_ticks` (may be
    empty), ``source`` says where they come from."""
    shown, chosen = set(levels), set(arms)
    keep = [arm in chosen and cell in shown for arm, cell in zip(_arms(effect), zip(effect["noise"], effect["level"]))]
    effect = effect[pd.Series(keep, index=effect.index, dtype=bool)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(9, 1.15 * len(levels)), 8), sharex=True, height_ratios=[3, 2])
    _accuracy_panel(top, ticks, cells, levels, arms)
    _effect_panel(bottom, effect, ticks, levels, arms, labels)
    seeds = sorted(set(cells["seeds"]))
    top.set_title(
        f"{title}\nrecipe {recipe}, seeds per cell: {', '.join(map(str, seeds)) or 'none'}; bars: ours, error bars: "
        f"95 % prediction interval for one run (2+ seeds)\n{source} (single runs; triangles: beyond the axis)",
        fontsize=10,
    )
    width = fig.get_figwidth()
    for ax, below in ((top, -0.02), (bottom, -0.22)):
        labels = ax.get_legend_handles_labels()[1]
        if labels:  # as many columns as fit the figure's width, for 8 pt labels
            ncol = max(1, min(len(labels), int(width * 11 // (max(map(len, labels)) + 5))))
            ax.legend(ncol=ncol, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, below), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _suite_figures(aggregation: Aggregation, out: Path) -> list[Path]:
    """One PNG per (noise, data set, recipe) of a suite: ``<suite>_<noise>[_<dataset>][_<recipe>].png``, the
    data set and recipe named only when the suite's results hold several, with every plain model and the
    push-pull ones at the paper's default (h, alpha); where other (h, alpha) were measured, a second PNG,
    ``<same name>_h_alpha.png``, with every (h, alpha) of those models beside their plain twins."""
    cells = aggregation.cells[aggregation.cells["noise"] != "clean"]
    several_datasets, several_recipes = cells["dataset"].nunique() > 1, cells["recipe"].nunique() > 1
    written = []
    for (noise, dataset, recipe), group in sorted(
        cells.groupby(["noise", "dataset", "recipe"]), key=lambda item: (_noise_key((item[0][0], 0)), item[0][1:])
    ):
        name = "_".join([aggregation.suite, noise] + [dataset] * several_datasets + [recipe] * several_recipes)
        arms = sorted(set(_arms(group)), key=_arm_order)
        title = f"Suite {aggregation.suite}: {noise} on {dataset}, by level"
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
    one recipe, ``<figure_stem>_<recipe>.png`` when it holds several."""
    if aggregation.suite != PAPER_SUITE:
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
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:+.2f}" if signed else f"{value:.2f}")
    )


# This project's LeNet learning rate, and why it is not the paper's (sweep.specs, the README).
_LENET_LR = 0.01
_LENET_LR_REASON = (
    "the LeNets train at lr 0.01 here, not at the paper's 0.1: at 0.1 the push-pull LeNets do not train (they "
    "collapse to one class, or turn NaN), at 0.01 all eight do, plain and push-pull alike (see the README)"
)


_TITLE = "# Reproduction report"


def _recipe_lines(aggregation: Aggregation) -> list[str]:
    """The first line (what recipe the numbers come from) and the recipes section."""
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
    lines = [
        first,
        "",
        _TITLE,
        "",
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
    listed = aggregation.excluded
    excluded = listed[~listed["run_id"].isin(aggregation.results["run_id"])]  # not those in the tables
    unknown = len(listed) - len(excluded)
    diverged = int((excluded["health"] == "diverged").sum())
    missing = sum(
        1 + len([s for s in suite_settings(aggregation.suite, d) if not s.is_identity])
        for d in excluded["dataset"].dropna()
    )
    measured = aggregation.results["trial_key"].nunique()
    return [
        f"{measured} trials aggregated. {len(excluded)} left out ({diverged} diverged: they did not train; "
        f"{len(excluded) - diverged} failed or unfinished), so {missing} (model, noise, level) cells are missing "
        "from every table: see excluded.parquet for the reasons."
        + (
            f" {unknown} more are in the tables, not in the push-pull effect: their params make no recipe."
            if unknown
            else ""
        ),
        "",
    ]


def _family_summary(noise: str, family: pd.DataFrame) -> str:
    """One noise family's estimates (their range, and the discoveries at a 5 % false discovery rate), and
    the paper's signs beside them."""
    estimated = family["difference"].dropna()
    text = f"**{noise}** ({len(family)} cells): "
    text += (
        f"estimated differences from {estimated.min():+.2f} to {estimated.max():+.2f} points; "
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


def _effect_lines(aggregation: Aggregation) -> list[str]:
    """The push-pull effect per recipe and noise family: a summary of the estimates, then every cell."""
    effect = aggregation.effect
    lines = ["## Push-pull effect, paired by seed", ""]
    if effect.empty:
        return lines + ["No push-pull model was measured beside its plain twin on the same seed.", ""]
    lines += [
        "Difference = push-pull accuracy - plain accuracy on the same seed, in points; mean over seeds with its "
        "paired 95 % Student t interval (none with one seed), and q, the paired t test's p-value adjusted "
        "(Benjamini-Hochberg) within the noise family. These are estimates, not verdicts: an SD of the "
        "differences below an accuracy's resolution is floored at the binomial standard error (`sd_floored`). "
        "The paper's difference stands beside each cell "
        f"({'; '.join(f'{k}: {v}' for k, v in READINGS.items())}). All of it is in pushpull_effect.parquet.",
        "",
    ]
    for (recipe, dataset), group in effect.groupby(["recipe", "dataset"], sort=True):
        seeds = sorted(set(group["pairs"]))
        lines += [f"### Recipe {recipe}, {dataset} (paired seeds per cell: {', '.join(map(str, seeds))})", ""]
        for noise, family in sorted(group.groupby("noise"), key=lambda item: _noise_key((item[0], 0))):
            lines.append(_family_summary(noise, family))
            lines += [
                "",
                "| pair | level | difference | 95 % CI | pairs | seeds PP / plain (diverged) | q | paper | "
                "paper, text reading | paper, swapped reading |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for row in family.itertuples(index=False):
                pair = f"{row.model} - {row.plain}" + (
                    f" (h={row.h:g}, alpha={row.alpha:g})" if (row.h, row.alpha) != (DEFAULT_H, DEFAULT_ALPHA) else ""
                )
                interval = "" if math.isnan(row.ci_low) else f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
                q = "" if math.isnan(row.q_value) else f"{row.q_value:.2g}"
                arms = f"{row.seeds_pushpull} / {row.seeds_plain} ({row.diverged_pushpull} / {row.diverged_plain})"
                lines.append(
                    f"| {pair} | {row.level:g} | {_number(row.difference)} | {interval} | {row.pairs} | {arms} | {q} | "
                    f"{_number(row.paper_difference)} | {_number(row.paper_difference_text)} | "
                    f"{_number(row.paper_difference_swapped)} |"
                )
            lines.append("")
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
            f"{row.difference:+.2f} | {row.protocol_note} |"
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
    and whether it fits."""
    fit = aggregation.variant_fit
    lines = ["## Nearest to the paper's contrast + Poisson cells", ""]
    if fit.empty:
        return lines + [
            "No noise of this suite has a contrast as its level, or no such cell is printed in the paper.",
            "",
        ]
    lines += [
        "Root mean square of (ours - paper), in points, over the paper's Poisson cells, each compared with our cell of "
        f"the noise at the contrast its reading means ({'; '.join(f'{k}: {v}' for k, v in READINGS.items())}). "
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
    if claims is None or claims.empty:
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


def write_report(aggregation: Aggregation, out: Path) -> list[Path]:
    """Figures for every paper figure (or, for another suite, every noise) with a measured cell, and
    report.md. Returns the paths written."""
    figures = _figures(aggregation, out)
    lines = _recipe_lines(aggregation) + _trials_lines(aggregation) + _effect_lines(aggregation)
    if aggregation.suite == PAPER_SUITE and _TITLE in lines:  # the report opens with the claims, under its title
        title = lines.index(_TITLE)
        lines[title + 2 : title + 2] = _claims_lines(aggregation)
        lines += _comparison_lines(aggregation)
    else:
        lines[1:1] = ["", f"Suite **{aggregation.suite}**: {SUITES[aggregation.suite].description}."]
        lines += _variant_lines(aggregation)
    lines += ["## Figures", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures] or ["No figure: no measured cell of Figures 4-9."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return figures + [report]
