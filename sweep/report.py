"""``report.md`` and PNG figures named after the paper's (``figure4_gaussian.png``...), from what the
aggregator computed (:class:`sweep.tables.Aggregation`): nothing here recomputes a statistic.

Each figure has two panels: accuracy per model and noise level (light bars plain, dark bars push-pull,
error bars the standard deviation over seeds, the paper's values as ticks), and the push-pull effect
(push-pull minus plain, paired by seed, with its 95 % interval) on an axis where one point shows.
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
from sweep.tables import MODEL, NOISE_ORDER, Aggregation, has_measurements, poisson_cells_as  # noqa: E402

__all__ = ["write_report"]

_HUES = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
_PAPER_MARKERS = {"header": ("_", "black", 140), "text": ("x", "dimgray", 40)}
DPI = 150


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


def _accuracy_panel(ax, rows: pd.DataFrame, cells: pd.DataFrame, levels: list, models: list[str]) -> None:
    """Grouped bars: one group per (noise, level), one bar per model, the paper's values as ticks."""
    width, bases = 0.8 / len(models), list(dict.fromkeys(plain_name(m) for m in models))
    ours = cells.set_index(["model", "noise", "level"])
    lowest = 100.0
    for i, model in enumerate(models):
        x = [j - 0.4 + (i + 0.5) * width for j in range(len(levels))]
        mean = [ours["accuracy"].get((model, n, v), math.nan) for n, v in levels]
        std = [
            ours["std"].get((model, n, v), math.nan) if ours["seeds"].get((model, n, v), 0) >= 2 else math.nan
            for n, v in levels
        ]
        colour = _HUES[bases.index(plain_name(model)) % len(_HUES)]
        ax.bar(
            x,
            mean,
            width,
            yerr=std,
            capsize=2,
            color=colour,
            alpha=0.4 if plain_name(model) == model else 1.0,
            label=model,
            error_kw={"lw": 0.8},
        )
        for reading, (marker, ink, size) in _PAPER_MARKERS.items():
            paper = rows[(rows["model"] == model) & (rows["reading"] == reading)].set_index(
                ["measured_noise", "measured_level"]
            )["accuracy"]
            ticks = [paper.get(cell, math.nan) for cell in levels]
            several = rows["reading"].nunique() > 1
            label = (f"paper ({reading} reading)" if several else "paper") if i == 0 and paper.size else None
            ax.scatter(x, ticks, marker=marker, s=size, color=ink, zorder=3, label=label)
            lowest = min([lowest, *(t for t in ticks if not math.isnan(t))])
        lowest = min([lowest, *(m - (0 if math.isnan(s) else s) for m, s in zip(mean, std) if not math.isnan(m))])
    ax.set_ylim(max(0.0, math.floor(lowest) - 3), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(axis="y", lw=0.4, alpha=0.5)


def _effect_limits(effect: pd.DataFrame) -> tuple[float, float]:
    """A y range that holds 0 and every interval of ours, at least 1.5 points either side, so that a
    difference of one point shows; the paper's differences do not widen it (they are clipped to it)."""
    values = [0.0, *pd.concat([effect["difference"], effect["ci_low"], effect["ci_high"]]).dropna()]
    low, high = min(values), max(values)
    pad = max(1.5, 0.15 * (high - low))
    return low - pad, high + pad


def _effect_panel(ax, effect: pd.DataFrame, levels: list, models: list[str], labels: list[str]) -> None:
    """Push-pull minus plain per twin pair and level: the mean over seeds with its 95 % interval, the
    paper's difference as ticks (a triangle at the edge where it lies beyond the axis)."""
    pushpull = [m for m in models if plain_name(m) != m]
    bases = list(dict.fromkeys(plain_name(m) for m in models))
    width = 0.8 / max(1, len(pushpull))
    bottom, top = _effect_limits(effect)
    for i, model in enumerate(pushpull):
        x = [j - 0.4 + (i + 0.5) * width for j in range(len(levels))]
        mine = effect[effect["model"] == model].set_index(["noise", "level"])
        mean = [mine["difference"].get(cell, math.nan) for cell in levels]
        low = [m - mine["ci_low"].get(cell, math.nan) for m, cell in zip(mean, levels)]
        high = [mine["ci_high"].get(cell, math.nan) - m for m, cell in zip(mean, levels)]
        errors = [[0 if math.isnan(v) else v for v in low], [0 if math.isnan(v) else v for v in high]]
        colour = _HUES[bases.index(plain_name(model)) % len(_HUES)]
        ax.errorbar(
            x, mean, yerr=errors, fmt="o", ms=4, color=colour, capsize=2, lw=0.9, label=f"{model} - {plain_name(model)}"
        )
        for reading, (marker, ink, size) in _PAPER_MARKERS.items():
            column = "paper_difference" if reading == "header" else f"paper_difference_{reading}"
            paper = [mine[column].get(cell, math.nan) for cell in levels]
            inside = [v if bottom <= v <= top else math.nan for v in paper]
            ax.scatter(x, inside, marker=marker, s=size, color=ink, zorder=3)
            for edge, arrow, beyond in (
                (top, "^", [v > top for v in paper]),
                (bottom, "v", [v < bottom for v in paper]),
            ):
                xs = [xi for xi, b in zip(x, beyond) if b]
                ax.scatter(
                    xs, [edge] * len(xs), marker=arrow, s=25, facecolors="none", edgecolors=ink, zorder=3, clip_on=False
                )
    ax.set_ylim(bottom, top)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("push-pull - plain\n(points, 95 % CI)")
    ax.grid(axis="y", lw=0.4, alpha=0.5)
    ax.set_xticks(range(len(levels)), labels)


def _figure(table: PaperTable, recipe: str, aggregation: Aggregation, path: Path) -> None:
    rows = aggregation.paper[aggregation.paper["source"] == table.source]
    models = list(dict.fromkeys(rows["model"]))
    cells = aggregation.cells[(aggregation.cells["recipe"] == recipe)].merge(rows[MODEL].drop_duplicates(), on=MODEL)
    levels = _levels(rows)
    effect = aggregation.effect[aggregation.effect["recipe"] == recipe]
    labels = [_label(n, v) for n, v in levels]
    _draw(path, f"{table.figure}: {table.title}", recipe, rows, cells, effect, levels, models, labels)


def _suite_figure(noise: str, recipe: str, dataset: str, aggregation: Aggregation, path: Path) -> None:
    """One noise of a suite on one data set: clean and every level, the paper's Poisson cells as ticks at
    the contrast each reading means where the noise's level is a contrast."""
    mine = (aggregation.cells["recipe"] == recipe) & (aggregation.cells["dataset"] == dataset)
    cells = aggregation.cells[mine & aggregation.cells["noise"].isin(["clean", noise])]
    models = sorted(set(cells["model"]), key=lambda m: (plain_name(m), m != plain_name(m)))
    paper = aggregation.paper
    rows = paper.iloc[:0]
    if Noise.parse(noise).level_is_contrast:
        rows = poisson_cells_as(noise, paper[(paper["dataset"] == dataset) & paper["model"].isin(models)])
    levels = sorted(set(zip(cells["noise"], cells["level"])), key=_noise_key)
    effect = aggregation.effect[(aggregation.effect["recipe"] == recipe) & (aggregation.effect["dataset"] == dataset)]
    labels = ["clean" if n == "clean" else f"{v:g}" for n, v in levels]  # one noise: its name is in the title
    title = f"Suite {aggregation.suite}: {noise} on {dataset}, by level"
    _draw(path, title, recipe, rows, cells, effect, levels, models, labels)


def _draw(
    path: Path,
    title: str,
    recipe: str,
    rows: pd.DataFrame,
    cells: pd.DataFrame,
    effect: pd.DataFrame,
    levels: list,
    models: list[str],
    labels: list[str],
) -> None:
    """The two panels over ``levels`` (x tick ``labels``) for ``models``; rows: paper cells drawn as ticks (may be empty)."""
    shown = set(levels)
    effect = effect[
        effect["model"].isin(models)
        & pd.Series([c in shown for c in zip(effect["noise"], effect["level"])], index=effect.index, dtype=bool)
    ]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(9, 1.15 * len(levels)), 8), sharex=True, height_ratios=[3, 2])
    _accuracy_panel(top, rows, cells, levels, models)
    _effect_panel(bottom, effect, levels, models, labels)
    seeds = sorted(set(cells["seeds"]))
    top.set_title(
        f"{title}\nrecipe {recipe}, seeds per cell: {', '.join(map(str, seeds))}; "
        "bars: ours (error bars: std over seeds); ticks: paper (triangles: beyond the axis)"
    )
    top.legend(ncol=min(len(models) + 2, 6), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.02), frameon=False)
    bottom.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _suite_figures(aggregation: Aggregation, out: Path) -> list[Path]:
    """One PNG per (noise, data set, recipe) of a suite: ``<suite>_<noise>[_<dataset>][_<recipe>].png``, the
    data set and recipe named only when the suite's results hold several."""
    cells = aggregation.cells[aggregation.cells["noise"] != "clean"]
    several_datasets, several_recipes = cells["dataset"].nunique() > 1, cells["recipe"].nunique() > 1
    written = []
    for (noise, dataset, recipe), _ in sorted(
        cells.groupby(["noise", "dataset", "recipe"]), key=lambda item: (_noise_key((item[0][0], 0)), item[0][1:])
    ):
        name = "_".join([aggregation.suite, noise] + [dataset] * several_datasets + [recipe] * several_recipes)
        path = out / f"{name}.png"
        _suite_figure(noise, recipe, dataset, aggregation, path)
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


def _recipe_lines(aggregation: Aggregation) -> list[str]:
    """The first line (what recipe the numbers come from) and the recipes section."""
    recipes = aggregation.recipes
    if recipes.empty:
        return ["No trial finished: nothing below is a measurement.", ""]
    smoke = recipes[recipes["profile"] == "smoke"]
    if len(smoke):
        first = "**Smoke profile: these numbers are not the paper's recipe** (the smoke profile trains on a sliver of the data: its numbers prove the pipeline, not the models)."
    elif (recipes["changes"] != "").any():
        first = "These numbers come from the paper's recipe with changes (see Recipes): not the paper's exact recipe."
    else:
        first = "These numbers come from the paper's recipe (this project's LeNet lr 0.01 included, see the README)."
    lines = [
        first,
        "",
        "# Reproduction report",
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
    excluded = aggregation.excluded
    diverged = int((excluded["health"] == "diverged").sum())
    missing = sum(
        1 + len([s for s in suite_settings(aggregation.suite, d) if not s.is_identity])
        for d in excluded["dataset"].dropna()
    )
    measured = aggregation.results["trial_key"].nunique()
    return [
        f"{measured} trials aggregated. {len(excluded)} left out ({diverged} diverged: they did not train; "
        f"{len(excluded) - diverged} failed or unfinished), so {missing} (model, noise, level) cells are missing "
        "from every table: see excluded.parquet for the reasons.",
        "",
    ]


def _family_summary(noise: str, family: pd.DataFrame) -> str:
    """One noise family's verdict counts, and how the paper's signs stand beside them."""
    counts = family["verdict"].value_counts()
    text = (
        f"**{noise}** ({len(family)} cells): push-pull better in {counts.get('better', 0)}, worse in "
        f"{counts.get('worse', 0)}, inconclusive in {counts.get('inconclusive', 0)}."
    )
    for reading, column in (("header", "paper_difference"), ("text", "paper_difference_text")):
        paper = family.dropna(subset=[column])
        if paper.empty:
            continue
        decided = paper[paper["verdict"] != "inconclusive"]
        agree = int(((decided[column] > 0) == (decided["verdict"] == "better")).sum())
        text += f" The paper ({reading} reading) has push-pull higher in {int((paper[column] > 0).sum())} of the {len(paper)} cells it prints"
        text += (
            f"; its sign agrees with {agree} of our {len(decided)} decided ones."
            if len(decided)
            else "; none of ours is decided there."
        )
    return text


def _effect_lines(aggregation: Aggregation) -> list[str]:
    """The push-pull effect per recipe and noise family: verdict counts, then every cell."""
    effect = aggregation.effect
    lines = ["## Push-pull effect, paired by seed", ""]
    if effect.empty:
        return lines + ["No push-pull model was measured beside its plain twin on the same seed.", ""]
    lines += [
        "Difference = push-pull accuracy - plain accuracy on the same seed, in points; mean over seeds with its "
        "paired 95 % Student t interval. *better* / *worse*: the interval lies above / below 0; *inconclusive*: "
        "it contains 0 (always so with one seed). The paper's difference stands beside each cell "
        f"({'; '.join(f'{k}: {v}' for k, v in READINGS.items())}). All of it is in pushpull_effect.parquet.",
        "",
    ]
    for (recipe, dataset), group in effect.groupby(["recipe", "dataset"], sort=True):
        seeds = sorted(set(group["seeds"]))
        lines += [f"### Recipe {recipe}, {dataset} (seeds per cell: {', '.join(map(str, seeds))})", ""]
        for noise, family in sorted(group.groupby("noise"), key=lambda item: _noise_key((item[0], 0))):
            lines.append(_family_summary(noise, family))
            lines += [
                "",
                "| pair | level | difference | 95 % CI | seeds | verdict | paper | paper, text reading |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for row in family.itertuples(index=False):
                pair = f"{row.model} - {row.plain}" + (
                    f" (h={row.h:g}, alpha={row.alpha:g})" if (row.h, row.alpha) != (DEFAULT_H, DEFAULT_ALPHA) else ""
                )
                interval = "" if math.isnan(row.ci_low) else f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
                lines.append(
                    f"| {pair} | {row.level:g} | {row.difference:+.2f} | {interval} | {row.seeds} | {row.verdict} | "
                    f"{_number(row.paper_difference)} | {_number(row.paper_difference_text)} |"
                )
            lines.append("")
    return lines


def _comparison_lines(aggregation: Aggregation) -> list[str]:
    """Where the paper's cells mean something else than their header, how well each reading fits, and
    the largest differences."""
    compared, fit = aggregation.comparison, aggregation.reading_fit
    lines = ["## Comparison with the paper", ""]
    if compared.empty:
        return lines + ["No measured cell is printed in the paper.", ""]
    notes = compared[compared["protocol_note"] != ""].drop_duplicates(["source", "reading", "protocol_note"])
    if len(notes):
        lines.append("Cells whose meaning differs from their header (the `protocol_note` of comparison.parquet):")
        lines.append("")
        for (source, reading), group in notes.groupby(["source", "reading"], sort=False):
            counted = compared[
                (compared["source"] == source) & (compared["reading"] == reading) & (compared["protocol_note"] != "")
            ]
            lines.append(
                f"- {source}, {reading} reading, {len(counted)} compared cells, for example: {group['protocol_note'].iloc[0]}"
            )
        lines.append("")
    for (recipe, source), group in fit.groupby(["recipe", "source"], sort=True):
        rmse = group.pivot(index="reading", columns="models", values="rmse")
        cells = group.pivot(index="reading", columns="models", values="cells")
        lines += [
            f"Root mean square of (ours - paper), in points, over {source}'s cells that have two readings, recipe {recipe}:",
            "",
        ]
        lines += ["| reading | plain | push-pull | all | cells |", "|---|---|---|---|---|"]
        for reading, row in rmse.iterrows():
            lines.append(
                f"| {reading} | {row['plain']:.2f} | {row['push-pull']:.2f} | {row['all']:.2f} | {int(cells.loc[reading, 'all'])} |"
            )
        best = rmse["all"].idxmin()
        others = ", ".join(f"{r} {v:.2f}" for r, v in rmse["all"].items() if r != best)
        lines += [
            "",
            f"The measurements fit the **{best}** reading better (RMSE {rmse.loc[best, 'all']:.2f} points against {others}).",
            "",
        ]
    header = compared[compared["reading"] == "header"]
    worst = header.reindex(header["difference"].abs().sort_values(ascending=False, kind="stable").index).head(10)
    lines += [
        "Largest differences from the paper (header reading):",
        "",
        "| recipe | table | model | noise | level | ours | paper | difference | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in worst.itertuples(index=False):
        lines.append(
            f"| {row.recipe} | {row.source} | {row.model} | {row.noise} | {row.level:g} | {row.accuracy:.2f} | "
            f"{row.paper_accuracy:.2f} | {row.difference:+.2f} | {row.protocol_note} |"
        )
    return lines + [""]


def _variant_lines(aggregation: Aggregation) -> list[str]:
    """Which noise of the suite comes nearest to the paper's contrast + Poisson cells, under each reading."""
    fit = aggregation.variant_fit
    lines = ["## Nearest to the paper's contrast + Poisson cells", ""]
    if fit.empty:
        return lines + [
            "No noise of this suite has a contrast as its level, or no such cell is printed in the paper.",
            "",
        ]
    lines += [
        "Root mean square of (ours - paper), in points, over the paper's Poisson cells, each compared with our cell of "
        f"the noise at the contrast its reading means ({'; '.join(f'{k}: {v}' for k, v in READINGS.items())}). All of it is in variant_fit.parquet.",
        "",
    ]
    for (recipe, source, reading), group in fit.groupby(["recipe", "source", "reading"], sort=True):
        table = group.pivot(index="noise", columns="models", values="rmse").sort_values("all")
        cells = group[group["models"] == "all"].set_index("noise")["cells"]
        lines += [
            f"### Recipe {recipe}, {source}, {reading} reading",
            "",
            "| noise | plain | push-pull | all | cells |",
            "|---|---|---|---|---|",
        ]
        for noise, row in table.iterrows():
            lines.append(
                f"| {noise} | {row['plain']:.2f} | {row['push-pull']:.2f} | {row['all']:.2f} | {int(cells[noise])} |"
            )
        best = table.index[0]
        lines += [
            "",
            f"Nearest under the {reading} reading: **{best}** (RMSE {table.loc[best, 'all']:.2f} points over {int(cells[best])} cells).",
            "",
        ]
    return lines


def write_report(aggregation: Aggregation, out: Path) -> list[Path]:
    """Figures for every paper figure (or, for another suite, every noise) with a measured cell, and
    report.md. Returns the paths written."""
    figures = _figures(aggregation, out)
    lines = _recipe_lines(aggregation) + _trials_lines(aggregation) + _effect_lines(aggregation)
    if aggregation.suite == PAPER_SUITE:
        lines += _comparison_lines(aggregation)
    else:
        lines[1:1] = ["", f"Suite **{aggregation.suite}**: {SUITES[aggregation.suite].description}."]
        lines += _variant_lines(aggregation)
    lines += ["## Figures", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures] or ["No figure: no measured cell of Figures 4-9."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return figures + [report]
