"""``python -m sweep.aggregate``: MLflow runs to tidy Parquet tables, the paper's tables, the push-pull
effect with its confidence, and an honest comparison with the paper.

Reads runs through MLflow's client (the default store of ``sweep.run`` or ``--tracking-uri``), keeps one
run per trial (the latest finished one), and writes to ``--out`` the tables of :mod:`sweep.tables`:

- ``results.parquet``: one row per (run, noise, level), schema :data:`~sweep.tables.RESULT_SCHEMA`;
- ``recipes.parquet``: every recipe of the runs, by the id that every other table carries;
- one file per results table of the paper that the sweeps asked for cover (``table2``, ``table3``,
  ``supp_table1`` .. ``supp_table9``), in the paper's layout, one block per recipe;
- ``pushpull_effect.parquet``: push-pull minus plain, paired by seed, with a 95 % interval and a verdict;
- ``comparison.parquet`` and ``reading_fit.parquet``: every measured cell beside the paper's number, under
  each reading of the paper's cells, and how well each reading fits;
- ``excluded.parquet``: the trials left out (diverged, failed, unfinished) with the reason;
- with ``--report``: ``report.md`` and PNG figures (see sweep.report).

With ``--suite NAME`` (a suite scored by ``python -m sweep.evaluate``) the tables are those of that
suite's scores, written to ``results/<suite>/`` by default: ``results``, ``recipes``, ``pushpull_effect``,
``variant_fit`` (which noise of the suite comes nearest to the paper's contrast + Poisson cells, under each
reading) and ``excluded``; ``--report`` draws one figure per noise of the suite.

Output is deterministic: the same runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from perturb import PAPER_SUITE, SUITES
from sweep.catalog import SWEEPS
from sweep.storage import StorageError, resolve_storage
from sweep.tables import (
    RECIPE_SCHEMA,
    RESULT_SCHEMA,
    UNKNOWN_RECIPE,
    Aggregation,
    aggregate,
    diverged,
    has_measurements,
    makes_rows,
    recipe_id,
)
from sweep.tracking import TrackingUnavailable, open_client

__all__ = ["main", "read_runs", "select_runs"]

FORMATS = ("parquet", "csv", "markdown")
SCHEMAS = {"results": RESULT_SCHEMA, "recipes": RECIPE_SCHEMA}


class AggregateError(Exception):
    """Bad input or nothing to aggregate: one line, exit status 2, no file written."""


def read_runs(tracking_uri: str, sweeps: list[str]) -> tuple[list, list[str]]:
    """Every run of the experiments named ``sweeps`` (when empty: every experiment of the store named
    after a sweep of the catalog), and the names of the experiments that hold them, in catalog order."""
    try:
        client = open_client(tracking_uri)
        names = sweeps or list(SWEEPS)
        experiments = [e for e in (client.get_experiment_by_name(n) for n in names) if e is not None]
        runs, token = [], None
        while experiments:
            page = client.search_runs([e.experiment_id for e in experiments], max_results=5000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except TrackingUnavailable as error:
        raise AggregateError(str(error)) from None
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds for a store it cannot read
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AggregateError(f"cannot read the MLflow store {tracking_uri}: {first_line}") from None
    if not runs:
        raise AggregateError(f"no runs found for {', '.join(sweeps) or 'any sweep'} in {tracking_uri}")
    held = {e.experiment_id for e in experiments if any(r.info.experiment_id == e.experiment_id for r in runs)}
    return runs, [e.name for e in experiments if e.experiment_id in held]


def _trial_identity(run: object) -> tuple | None:
    """(recipe id, dataset, model, h, alpha, seed) from a run's params, None when they lack a recipe."""
    recipe = recipe_id(run)
    if recipe == UNKNOWN_RECIPE:
        return None
    params = run.data.params
    # A field that does not apply is absent in runs of this engine and "None" in older ones: the same trial.
    return (recipe, *(params.get(name, "None") for name in ("dataset", "model", "h", "alpha", "seed")))


def _latest(runs: list) -> object:
    """The latest FINISHED run, or the latest at all when none finished."""
    return max(
        runs, key=lambda r: (r.info.status == "FINISHED", r.info.end_time or 0, r.info.start_time, r.info.run_id)
    )


def select_runs(runs: list) -> tuple[list, dict[str, int]]:
    """One run per trial, the latest finished one: runs with the same ``trial_key`` tag, or with the same
    (recipe, dataset, model, h, alpha, seed) in their params, are one trial (a rerun, a second sweep).

    Returns the chosen runs, sorted by trial key, and for each chosen run that had duplicates how many
    runs it was chosen over (by run id).
    """
    identity_of_key: dict[str, tuple] = {}
    for run in runs:
        key, identity = run.data.tags.get("trial_key"), _trial_identity(run)
        if key is not None and identity is not None:
            identity_of_key.setdefault(key, identity)
    trials: dict[tuple, list] = {}
    for run in runs:
        key = run.data.tags.get("trial_key")
        if key is not None:
            trials.setdefault(identity_of_key.get(key, ("trial_key", key)), []).append(run)
    chosen = sorted(
        (_latest(group) for group in trials.values()), key=lambda r: (r.data.tags["trial_key"], r.info.run_id)
    )
    passed_over = {_latest(group).info.run_id: len(group) - 1 for group in trials.values() if len(group) > 1}
    return chosen, passed_over


def _markdown(frame: pd.DataFrame) -> str:
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.itertuples(index=False):
        cells = ["" if pd.isna(v) else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(tables: dict[str, pd.DataFrame], out: Path, fmt: str) -> list[Path]:
    """Write every table to ``out`` as ``<stem>.<parquet|csv|md>``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, frame in tables.items():
        if fmt == "parquet":
            table = pa.Table.from_pandas(frame, schema=SCHEMAS.get(stem), preserve_index=False)
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise AggregateError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sweep.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sweep",
        nargs="+",
        default=[],
        metavar="NAME",
        help=f"sweeps (MLflow experiments) to read; default every one the store holds of: {', '.join(SWEEPS)}",
    )
    parser.add_argument(
        "--recipe",
        nargs="+",
        default=[],
        metavar="ID",
        help="keep only the runs of these recipes (ids as printed and in recipes.parquet)",
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<storage>/mlflow.db)"
    )
    parser.add_argument(
        "--storage", help="the sweep storage folder whose embedded store to read (default: $SWEEP_STORAGE or ./sweeps)"
    )
    parser.add_argument("--to", default="parquet", choices=FORMATS, help="output format")
    parser.add_argument(
        "--suite",
        default=PAPER_SUITE,
        choices=SUITES,
        help="the noise suite whose scores to aggregate (default: paper; others as scored by python -m sweep.evaluate)",
    )
    parser.add_argument("--out", help="output folder (default: results/, or results/<suite>/ for another suite)")
    parser.add_argument("--report", action="store_true", help="also write report.md and PNG figures")
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="keep unfinished and failed runs (their status column says so)",
    )
    return parser


def _select_recipes(chosen: list, wanted: list[str]) -> list:
    """The runs of the recipes ``wanted`` (all when empty); an id no run has is an AggregateError."""
    if not wanted:
        return chosen
    ids = [recipe_id(run) for run in chosen]  # parsed from each run's params once
    held = {rid: run.data.params.get("arch") for rid, run in zip(ids, chosen)}
    unknown = [r for r in wanted if r not in held]
    if unknown:
        listed = ", ".join(f"{rid} ({arch})" for rid, arch in sorted(held.items()))
        raise AggregateError(f"unknown recipe {unknown[0]!r}: the runs hold {listed}")
    return [run for rid, run in zip(ids, chosen) if rid in wanted]


def _summary(
    aggregation: Aggregation, chosen: list, runs: list, passed_over: dict[str, int], include_incomplete: bool
) -> list[str]:
    """What the console says about the runs read: counts, recipes, duplicates, trials left out."""
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
    return lines


def _run(args: argparse.Namespace) -> int:
    unknown = [name for name in args.sweep if name not in SWEEPS]
    if unknown:
        raise AggregateError(f"unknown sweep {unknown[0]!r}: expected one of {', '.join(SWEEPS)}")
    try:
        tracking_uri = resolve_storage(args.storage).tracking_uri(args.tracking_uri)
    except StorageError as error:
        raise AggregateError(str(error)) from None
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise AggregateError(f"no MLflow store at {tracking_uri}: run a sweep first, or pass --tracking-uri")
    runs, sweeps = read_runs(tracking_uri, args.sweep)
    chosen, passed_over = select_runs(runs)
    chosen = _select_recipes(chosen, args.recipe)

    aggregation = aggregate(chosen, args.sweep or sweeps, include_incomplete=args.include_incomplete, suite=args.suite)
    out = Path(args.out or ("results" if args.suite == PAPER_SUITE else f"results/{args.suite}"))
    try:
        written = write_tables(aggregation.files(), out, args.to)
        if args.report:
            from sweep.report import write_report  # matplotlib only when figures are asked for

            written += write_report(aggregation, out)
    except OSError as error:
        raise AggregateError(f"cannot write the tables to {out}: {error.strerror or error}") from None

    print("\n".join(_summary(aggregation, chosen, runs, passed_over, args.include_incomplete)))
    if args.to == "markdown":
        for stem in ("table2", "supp_table1"):
            table = aggregation.paper_tables.get(stem)
            if table is not None and has_measurements(table):
                print(f"\n{stem}\n{_markdown(table)}")
    print(f"wrote {len(written)} files to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(_parser().parse_args(argv))
    except AggregateError as error:
        print(f"sweep.aggregate: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
