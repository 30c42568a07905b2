"""``report.md`` and PNG figures in the style of the paper's Figures 4-9: accuracy against noise level,
light bars for plain models, dark bars for their push-pull twins, the paper's values drawn beside ours."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from perturb import NOISES, Perturbation, noise_suite  # noqa: E402
from sweep.aggregate import cell_statistics, has_measurements  # noqa: E402
from sweep.paper import PAPER_TABLES, PaperTable, paper_results  # noqa: E402

__all__ = ["twin_wins", "write_report"]

_HUES = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]


def _base_name(model: str) -> str:
    """The plain twin's name: ``PA`` -> ``A``, ``WRN-28-10-PP`` -> ``WRN-28-10``."""
    if model.endswith("-PP"):
        return model.removesuffix("-PP")
    return model[1:] if len(model) == 2 and model.startswith("P") else model


def _twins(cells: pd.DataFrame) -> pd.DataFrame:
    """Plain and push-pull (h=2, alpha=1) accuracy side by side per (dataset, model, noise, level).

    cells: columns dataset, model, pushpull, h, alpha, noise, level, accuracy. Cells of a perturbation that
    leaves the images unchanged (zero variance) are the clean cell again and are dropped.
    """
    kept = [not (noise in NOISES and Perturbation(noise, level).is_identity) for noise, level in zip(cells["noise"], cells["level"])]
    cells = cells[kept]
    key = ["dataset", "base", "noise", "level"]
    cells = cells.assign(base=cells["model"].map(_base_name))
    plain = cells[~cells["pushpull"]][key + ["accuracy"]]
    pushpull = cells[cells["pushpull"] & (cells["h"] == 2) & (cells["alpha"] == 1)][key + ["accuracy"]]
    return plain.merge(pushpull, on=key, suffixes=("_plain", "_pp"))


def twin_wins(ours: pd.DataFrame, paper: pd.DataFrame) -> dict[str, int]:
    """How often push-pull beats its plain twin: over our cells, and over the cells both sides have.

    ours: cell statistics (sweep.aggregate.cell_statistics); paper: paper_results(), where a cell printed
    in several tables counts once, from the first table in PAPER_TABLES order (main text first).
    """
    order = {table.source: i for i, table in enumerate(PAPER_TABLES)}
    paper = paper.assign(order=paper["source"].map(order)).sort_values("order", kind="stable")
    paper = paper.drop_duplicates(["dataset", "model", "h", "alpha", "noise", "level"])
    ours_twins, paper_twins = _twins(ours.dropna(subset=["accuracy"])), _twins(paper)
    common = ours_twins.merge(paper_twins, on=["dataset", "base", "noise", "level"], suffixes=("", "_paper"))
    return {
        "ours_cells": len(ours_twins),
        "ours_wins": int((ours_twins["accuracy_pp"] > ours_twins["accuracy_plain"]).sum()),
        "common_cells": len(common),
        "common_ours_wins": int((common["accuracy_pp"] > common["accuracy_plain"]).sum()),
        "common_paper_wins": int((common["accuracy_pp_paper"] > common["accuracy_plain_paper"]).sum()),
        "paper_cells": len(paper_twins),
    }


def _figure(table: PaperTable, ours: pd.DataFrame, paper: pd.DataFrame, path: Path) -> None:
    """Grouped bars: one group per noise level, one bar per model (ours), the paper's value as a tick."""
    rows = paper[paper["source"] == table.source]
    levels = list(dict.fromkeys(zip(rows["noise"], rows["level"])))
    models = list(dict.fromkeys(rows["model"]))
    merged = rows.merge(ours, on=["dataset", "model", "pushpull", "h", "alpha", "noise", "level"], how="left", suffixes=("_paper", ""))
    width = 0.8 / len(models)
    bases = list(dict.fromkeys(_base_name(m) for m in models))
    fig, ax = plt.subplots(figsize=(max(9, 1.2 * len(levels)), 4.5))
    for i, model in enumerate(models):
        cells = merged[merged["model"] == model].set_index(["noise", "level"]).reindex(levels)
        pushpull = model != _base_name(model)
        colour = _HUES[bases.index(_base_name(model)) % len(_HUES)]
        x = [j - 0.4 + (i + 0.5) * width for j in range(len(levels))]
        ax.bar(x, cells["accuracy"].fillna(0), width, color=colour, alpha=1.0 if pushpull else 0.4, label=model)
        ax.scatter(x, cells["accuracy_paper"], marker="_", s=120, color="black", zorder=3, label="paper" if i == 0 else None)
    ax.set_xticks(range(len(levels)), [f"{noise}\n{level:g}" for noise, level in levels])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{table.figure}: {table.title} (bars: ours; ticks: paper)")
    ax.legend(ncol=min(len(models) + 1, 5), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def write_report(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """Figures for every paper figure with at least one measured cell, and report.md. Returns the paths."""
    cells = cell_statistics(tables["results"])
    paper = paper_results()
    written = []
    for table in PAPER_TABLES:
        if table.figure is None or not has_measurements(tables[table.stem]):
            continue
        path = out / f"{table.stem}.png"
        _figure(table, cells, paper, path)
        written.append(path)

    wins = twin_wins(cells, paper)
    comparison = tables["comparison"]
    measured = tables["results"]["trial_key"].nunique()
    excluded = tables["excluded"]
    diverged = int((excluded["health"] == "diverged").sum())
    missing = sum(1 + len(noise_suite(dataset)) for dataset in excluded["dataset"].dropna())
    lines = [
        "# Reproduction report",
        "",
        f"{measured} trials aggregated. {len(excluded)} left out ({diverged} diverged: they did not train; "
        f"{len(excluded) - diverged} failed or unfinished), so {missing} (model, noise, level) cells are missing "
        "from every table: see excluded.parquet for the reasons.",
        "",
        "## Headline",
        "",
        f"Push-pull (h=2, alpha=1) beats its plain twin in {wins['ours_wins']} of {wins['ours_cells']} measured "
        f"(model, noise, level) cells. On the {wins['common_cells']} cells the paper also prints, it wins in "
        f"{wins['common_ours_wins']} here and in {wins['common_paper_wins']} in the paper "
        f"({wins['paper_cells'] - wins['common_cells']} of the paper's {wins['paper_cells']} twin cells are not measured).",
        "",
        "Where a cell is printed in several tables of the paper, the headline takes it from the first of: "
        + ", ".join(t.source for t in PAPER_TABLES)
        + " (Table 2 and supplementary Table 4 disagree on CIFAR-10 Poisson C=1.5 and 2.5).",
        "",
        "## Largest differences from the paper",
        "",
    ]
    if len(comparison):
        worst = comparison.reindex(comparison["difference"].abs().sort_values(ascending=False, kind="stable").index).head(10)
        lines.append("| table | dataset | model | noise | level | ours | paper | difference |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for row in worst.itertuples(index=False):
            lines.append(f"| {row.source} | {row.dataset} | {row.model} | {row.noise} | {row.level:g} | {row.accuracy:.2f} | {row.paper_accuracy:.2f} | {row.difference:+.2f} |")
    else:
        lines.append("No measured cell is printed in the paper.")
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}]({p.name})" for p in written] or ["No figure: no measured cell of Figures 4-9."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return written + [report]
