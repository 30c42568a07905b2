"""``python -m sweep.aggregate``: MLflow runs to tidy Parquet tables, the paper's tables, the push-pull
effect with its confidence, and an honest comparison with the paper.

Reads runs through MLflow's client (the default store of ``sweep.run`` or ``--tracking-uri``), keeps one
run per trial (the latest finished one), and writes to ``--out`` the tables of :mod:`sweep.tables`:

- ``results.parquet``: one row per (run, noise, level), schema :data:`~sweep.tables.RESULT_SCHEMA`;
- ``recipes.parquet``: every recipe of the runs, by the id that every other table carries;
- ``claims.parquet``: one verdict per claim of the paper and recipe (sweep.claims), with its interval and the
  seeds it rests on (``--margin``, ``--diverged-as-chance``);
- one file per results table of the paper that the sweeps asked for cover (``table2``, ``table3``,
  ``supp_table1`` .. ``supp_table9``), in the paper's layout, one block per recipe;
- ``pushpull_effect.parquet``: push-pull minus plain, paired by seed, with a 95 % interval, p- and q-values
  and seed counts per twin (estimates, no verdicts);
- ``comparison.parquet`` and ``reading_fit.parquet``: every measured cell beside the paper's number, under
  each reading of the paper's cells, and how well each reading fits;
- ``search_points.parquet`` and ``search_best_effect.parquet`` (where a push-pull model was trained with two
  or more (h, alpha): a study's search, or the paper's sensitivity grid): each (h, alpha)'s clean accuracy
  and search metric (the study's first, else the mean over every noise), the Pareto front and the best, and
  the best point's paired effect; ``--report`` adds ``search.png``;
- ``excluded.parquet``: the trials left out (diverged, failed, unfinished) with the reason, and those whose
  params make no recipe (in the tables, not in the push-pull effect);
- with ``--report``: ``report.md`` and PNG figures (see sweep.report).

With ``--suite NAME`` (a suite scored by ``python -m sweep.evaluate``) the tables are those of that
suite's scores, written to ``results/<suite>/`` by default: ``results``, ``recipes``, ``pushpull_effect``,
``variant_fit`` (which noise of the suite comes nearest to the paper's contrast + Poisson cells, under each
reading) and ``excluded``; ``--report`` draws one figure per noise of the suite.

Output is deterministic: the same runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.cli import CommandParser, UsageError, run_command
from sweep.defaults import DEFAULT_MARGIN
from sweep.storage import DEFAULT_STORAGE, StorageError, resolve_storage

if TYPE_CHECKING:
    import pandas as pd

    from sweep.tables import Aggregation

__all__ = ["main", "write_tables"]

FORMATS = ("parquet", "csv", "markdown")

_DESCRIPTION = """\
Turn the MLflow runs of sweeps into tidy Parquet tables, the paper's tables,
the push-pull effect with its 95 % interval and q-value, and each measured
cell beside the paper's number. One run per trial is read (the latest
finished one); the same runs give byte-identical files."""

_EPILOG = """\
examples:
  python -m sweep.aggregate --report
      every sweep in ./sweeps: tables in results/, report.md and figures beside them
  python -m sweep.aggregate --storage /data/sweeps --sweep lenet wrn_width
      two sweeps of the store in /data/sweeps
  python -m sweep.aggregate --sweep lenet --to markdown
      the LeNet sweep's tables as Markdown, its table 2 printed
  python -m sweep.aggregate --sweep lenet --recipe 3f2a9c1e --out results/lenet-90
      only the runs of one recipe (ids as printed, and in recipes.parquet)
  python -m sweep.aggregate --sweep lenet --suite poisson-variants --report
      the scores python -m sweep.evaluate added, in results/poisson-variants/

exit status: 0 tables written; 2 bad input or nothing to aggregate (no file written)."""


def _markdown(frame: pd.DataFrame) -> str:
    import pandas as pd

    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.itertuples(index=False):
        cells = ["" if pd.isna(v) else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(tables: dict[str, pd.DataFrame], out: Path, fmt: str) -> list[Path]:
    """Write every table to ``out`` as ``<stem>.<parquet|csv|md>``; returns the paths written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweep.tables import RECIPE_SCHEMA, RESULT_SCHEMA

    schemas = {"results": RESULT_SCHEMA, "recipes": RECIPE_SCHEMA}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, frame in tables.items():
        if fmt == "parquet":
            table = pa.Table.from_pandas(frame, schema=schemas.get(stem), preserve_index=False)
            path = out / f"{stem}.parquet"
            pq.write_table(table, path)
        elif fmt == "csv":
            path = out / f"{stem}.csv"
            frame.to_csv(path, index=False, lineterminator="\n")
        else:
            path = out / f"{stem}.md"
            path.write_text(_markdown(frame))
        written.append(path)
    return written


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser("python -m sweep.aggregate", _DESCRIPTION, _EPILOG)
    parser.add_argument(
        "--sweep",
        nargs="+",
        action="extend",  # --sweep a --sweep b reads both, as --sweep a b does
        default=[],
        metavar="NAME",
        help="sweeps (MLflow experiments) to read (default: every sweep the store holds; python -m sweep.run "
        "--list names them)",
    )
    parser.add_argument(
        "--recipe",
        nargs="+",
        action="extend",
        default=[],
        metavar="ID",
        help="keep only the runs of these recipes (ids as printed and in recipes.parquet)",
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<storage>/mlflow.db)"
    )
    parser.add_argument(
        "--storage",
        help=f"the sweep storage folder whose embedded store to read (default: $SWEEP_STORAGE or ./{DEFAULT_STORAGE})",
    )
    parser.add_argument("--to", default="parquet", choices=FORMATS, help="output format")
    parser.add_argument(
        "--suite",
        metavar="NAME",
        help="the noise suite whose scores to aggregate (default: the paper's; others as scored by python -m "
        "sweep.evaluate, which lists them: --list-suites)",
    )
    parser.add_argument("--out", help="output folder (default: results/, or results/<suite>/ for another suite)")
    parser.add_argument("--report", action="store_true", help="also write report.md and PNG figures")
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="keep unfinished and failed runs (their status column says so)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="POINTS",
        help="the claims table's equivalence margin: differences within +-POINTS of accuracy count as none",
    )
    parser.add_argument(
        "--diverged-as-chance",
        action="store_true",
        help="test the paper's claims with each diverged trial scored at chance (100 / classes) on every cell, "
        "not left out: whether divergence moves a verdict",
    )
    return parser


def _summary(
    aggregation: Aggregation, chosen: list, runs: list, passed_over: dict[str, int], include_incomplete: bool
) -> list[str]:
    """What the console says about the runs read: counts, recipes, duplicates, trials left out."""
    from sweep.tables import diverged, makes_rows

    lines = [
        f"{len(chosen)} trials from {len(runs)} runs ({sum(passed_over.values())} duplicate runs of the same trial passed over)"
    ]
    for row in aggregation.recipes.itertuples(index=False):
        changes = f" with {row.changes}" if row.changes else ""
        lines.append(f"recipe {row.recipe}: {row.arch}, {row.profile} profile{changes} ({row.trials} trials)")
    if aggregation.recipes["arch"].duplicated().any():
        lines.append("several recipes of one architecture: their cells are kept apart; --recipe ID shows one")
    for run in chosen:
        if run.info.run_id in passed_over:
            key = run.data.tags.get("trial_key")
            lines.append(
                f"duplicate {key}: kept run {run.info.run_id} (latest finished), passed over {passed_over[run.info.run_id]}"
            )
        if run.info.status != "FINISHED":
            label = "DIVERGED" if diverged(run) else run.info.status
            kept = makes_rows(run, include_incomplete)
            lines.append(f"{label:9} {run.data.tags.get('trial_key')} ({'kept, flagged' if kept else 'left out'})")
    return lines + _claim_lines(aggregation.claims)


def _claim_lines(claims: pd.DataFrame | None) -> list[str]:
    """One line per claim of the paper and recipe: its verdict, difference and interval (points)."""
    lines = []
    for row in [] if claims is None else claims.itertuples(index=False):
        interval = "" if row.seeds < 2 else f" [{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
        lines.append(
            f"claim {row.claim} (recipe {row.recipe}, {row.seeds} seeds): {row.verdict}, {row.difference:+.2f}{interval}"
        )
    return lines


def _run(args: argparse.Namespace) -> int:
    from perturb import PAPER_SUITE, SUITES
    from sweep.study import StudyError, load_study

    try:  # a built-in study's name, or a study file: the name of its sweep
        studies = [load_study(name) for name in args.sweep]
    except StudyError as error:
        raise UsageError(str(error)) from None
    args.sweep = [study.name for study in studies]
    suite = args.suite or PAPER_SUITE
    if suite not in SUITES:
        raise UsageError(f"unknown suite {suite!r}: expected one of {', '.join(SUITES)}")
    if not (args.margin > 0 and math.isfinite(args.margin)):
        raise UsageError(f"--margin must be a number of points > 0, got {args.margin:g}")
    try:
        tracking_uri = resolve_storage(args.storage).tracking_uri(args.tracking_uri)
    except StorageError as error:
        raise UsageError(str(error)) from None
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise UsageError(f"no MLflow store at {tracking_uri}: run a sweep first, or pass --tracking-uri")
    # MLflow and pandas load once the arguments are checked: a typo answers at once.
    from sweep.runs import RunsUnavailable, read_runs, select_recipes, select_runs
    from sweep.tables import DuplicateResults, aggregate, has_measurements

    try:
        runs, sweeps = read_runs(tracking_uri, args.sweep)
        chosen, passed_over = select_runs(runs)
        chosen = select_recipes(chosen, args.recipe)
    except RunsUnavailable as error:
        raise UsageError(str(error)) from None

    try:
        searches = [study.search for study in studies if study.search is not None]
        # The points of a study that searched rank by its (first) metric; a grid's, by the mean over every noise.
        metric, mode = (searches[0].metrics[0], searches[0].modes[0]) if searches else ("noise", "max")
        aggregation = aggregate(
            chosen,
            args.sweep or sweeps,
            include_incomplete=args.include_incomplete,
            suite=suite,
            search_metric=metric,
            search_mode=mode,
        )
    except DuplicateResults as error:
        raise UsageError(str(error)) from None
    from sweep.catalog import STUDIES

    # The paper's claims are about the paper's noises and models: a study of one's own makes its own (the effects).
    if suite == PAPER_SUITE and all(name in STUDIES for name in args.sweep or sweeps):
        from sweep.claims import claims_table

        claims = claims_table(
            aggregation.results, aggregation.excluded, aggregation.recipes, args.margin, args.diverged_as_chance
        )
        aggregation = dataclasses.replace(aggregation, claims=claims)
    out = Path(args.out or ("results" if suite == PAPER_SUITE else f"results/{suite}"))
    try:
        written = write_tables(aggregation.files(), out, args.to)
        if args.report:
            from sweep.report import write_report  # matplotlib only when figures are asked for

            written += write_report(aggregation, out)
    except OSError as error:
        raise UsageError(f"cannot write the tables to {out}: {error.strerror or error}") from None

    print("\n".join(_summary(aggregation, chosen, runs, passed_over, args.include_incomplete)))
    if args.to == "markdown":
        for stem in ("table2", "supp_table1"):
            table = aggregation.paper_tables.get(stem)
            if table is not None and has_measurements(table):
                print(f"\n{stem}\n{_markdown(table)}")
    print(f"wrote {len(written)} files to {out.resolve()}")
    if args.report:
        print(f"report: {(out / 'report.md').resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("sweep.aggregate", _parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
