"""``python -m sweep.aggregate``: MLflow runs to tidy Parquet tables, the paper's tables and a comparison.

Reads runs through MLflow's client (the default store of ``sweep.run`` or ``--tracking-uri``), keeps one
run per trial key (the latest finished one), and writes to ``--out``:

- ``results.parquet``: one row per (run, noise, level), schema :data:`RESULT_SCHEMA`;
- one file per results table of the paper (``table2``, ``table3``, ``supp_table1`` .. ``supp_table9``),
  in the paper's layout, mean over seeds with standard deviation and seed count;
- ``comparison.parquet``: every measured cell beside the paper's number;
- ``excluded.parquet``: the trials left out (diverged, failed, unfinished) with the reason;
- with ``--report``: ``report.md`` and PNG figures in the style of the paper's (see sweep.report).

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

from sweep.catalog import SWEEPS
from sweep.metrics import parse_noise_metric
from sweep.paper import PAPER_TABLES, PaperTable, paper_results
from sweep.storage import StorageError, resolve_storage
from sweep.tracking import TrackingUnavailable, open_client

__all__ = ["RESULT_SCHEMA", "aggregate", "cell_statistics", "comparison", "has_measurements", "main", "paper_table", "tidy_results"]

RESULT_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_key", pa.string()),
        ("run_id", pa.string()),
        ("dataset", pa.string()),
        ("arch", pa.string()),
        ("model", pa.string()),
        ("depth", pa.int64()),
        ("width", pa.int64()),
        ("pushpull", pa.bool_()),
        ("h", pa.float64()),
        ("alpha", pa.float64()),
        ("seed", pa.int64()),
        ("noise", pa.string()),
        ("level", pa.float64()),
        ("accuracy", pa.float64()),
        ("epochs_trained", pa.int64()),
        ("status", pa.string()),
        ("start_time", pa.timestamp("ms", tz="UTC")),
        ("end_time", pa.timestamp("ms", tz="UTC")),
    ]
)
CELL = ["dataset", "model", "pushpull", "h", "alpha", "noise", "level"]
NOISE_ORDER = {"clean": 0, "gaussian": 1, "speckle": 2, "poisson": 3}
FORMATS = ("parquet", "csv", "markdown")


class AggregateError(Exception):
    """Bad input or nothing to aggregate: one line, exit status 2, no file written."""


def _param(params: dict[str, str], name: str, kind: type) -> object:
    value = params.get(name)
    if value is None or value == "None":
        return None
    if kind is bool:
        return value == "True"
    return kind(float(value)) if kind is int else kind(value)


def read_runs(tracking_uri: str, sweeps: list[str]) -> list:
    """Every run of the experiments named ``sweeps`` (all of the catalog's when empty)."""
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
    return runs


def select_runs(runs: list) -> tuple[list, int]:
    """One run per trial key: the latest FINISHED one, or the latest at all when none finished.

    Returns the chosen runs and how many runs were passed over as duplicates.
    """
    by_key: dict[str, list] = {}
    for run in runs:
        key = run.data.tags.get("trial_key")
        if key is not None:
            by_key.setdefault(key, []).append(run)
    chosen = []
    for key in sorted(by_key):
        candidates = by_key[key]
        chosen.append(max(candidates, key=lambda r: (r.info.status == "FINISHED", r.info.end_time or 0, r.info.start_time, r.info.run_id)))
    return chosen, sum(len(c) - 1 for c in by_key.values())


def tidy_results(runs: list) -> pd.DataFrame:
    """One row per (run, noise, level) with :data:`RESULT_SCHEMA`'s columns, sorted deterministically."""
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        base = {
            "sweep": run.data.tags.get("sweep"),
            "trial_key": run.data.tags.get("trial_key"),
            "run_id": run.info.run_id,
            "dataset": params.get("dataset"),
            "arch": params.get("arch"),
            "model": params.get("model"),
            "depth": _param(params, "depth", int),
            "width": _param(params, "width", int),
            "pushpull": _param(params, "pushpull", bool),
            "h": _param(params, "h", float),
            "alpha": _param(params, "alpha", float),
            "seed": _param(params, "seed", int),
            "epochs_trained": int(metrics["epoch"]) if "epoch" in metrics else None,
            "status": run.info.status,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC") if run.info.start_time else None,
            "end_time": pd.Timestamp(run.info.end_time, unit="ms", tz="UTC") if run.info.end_time else None,
        }
        if "test_acc" in metrics:
            rows.append({**base, "noise": "clean", "level": 0.0, "accuracy": metrics["test_acc"]})
        for name, value in metrics.items():
            parsed = parse_noise_metric(name)
            if parsed is not None:
                rows.append({**base, "noise": parsed[0], "level": parsed[1], "accuracy": value})
    frame = pd.DataFrame(rows, columns=RESULT_SCHEMA.names)
    frame["noise_order"] = frame["noise"].map(NOISE_ORDER)
    frame = frame.sort_values(["dataset", "arch", "depth", "width", "model", "h", "alpha", "seed", "noise_order", "level", "trial_key"], na_position="first", kind="stable")
    return frame.drop(columns="noise_order").reset_index(drop=True)


def cell_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation of the accuracy over seeds, and the seed count, per cell."""
    grouped = results.groupby(CELL, dropna=False, sort=True)["accuracy"]
    stats = grouped.agg(accuracy="mean", std="std", seeds="count").reset_index()
    stats["seeds"] = stats["seeds"].astype("int64")
    return stats


def _with_cells(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (paper cells) left-joined with the measured statistics of the same cells."""
    return frame.merge(cells, on=CELL, how="left", suffixes=("_paper", ""))


def paper_table(table: PaperTable, cells: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our numbers in the layout of one paper table: its rows and columns, in its order.

    Each paper column becomes three: the mean over seeds (named like the paper's column, e.g.
    ``gaussian 0.001`` or ``cifar10 push-pull``), ``<column> std`` and ``<column> seeds``. Cells we did not
    measure are null with 0 seeds.
    """
    layout = _with_cells(paper[paper["source"] == table.source], cells)
    if table.by_noise:
        keys = ["noise", "level"]
        layout["column"] = [f"{d} {'push-pull' if pp else 'plain'}" for d, pp in zip(layout["dataset"], layout["pushpull"])]
    else:
        keys = ["model", "h", "alpha"] if table.source == "paper Table 3" else ["model"]
        layout["column"] = [f"{noise} {level:g}" for noise, level in zip(layout["noise"], layout["level"])]
    # A new row wherever the row keys change, in the paper's order. (Table 2 prints the clean column twice,
    # as Gaussian and as speckle variance 0, so keys alone do not tell its rows apart.)
    row_keys = layout[keys].map(repr)  # repr, so that missing h and alpha compare equal
    layout["row"] = row_keys.ne(row_keys.shift()).any(axis=1).cumsum()
    layout["seeds"] = layout["seeds"].fillna(0).astype("int64")
    columns = list(dict.fromkeys(layout["column"]))
    parts = [layout.drop_duplicates("row").set_index("row")[keys]]
    for value, suffix in (("accuracy", ""), ("std", " std"), ("seeds", " seeds")):
        wide = layout.pivot(index="row", columns="column", values=value)[columns]
        parts.append(wide.add_suffix(suffix))
    return pd.concat(parts, axis=1).reset_index(drop=True).rename_axis(columns=None)


def comparison(cells: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Every measured cell beside the paper's number, once per paper table that prints it."""
    joined = _with_cells(paper.drop_duplicates(["source", *CELL]), cells)  # Table 2 prints clean twice
    joined = joined[joined["seeds"].notna()].copy()
    joined["seeds"] = joined["seeds"].astype("int64")
    joined = joined.rename(columns={"accuracy_paper": "paper_accuracy"})
    joined["difference"] = joined["accuracy"] - joined["paper_accuracy"]
    columns = ["source", *CELL, "accuracy", "std", "seeds", "paper_accuracy", "difference"]
    return joined[columns].reset_index(drop=True)


EXCLUDED_COLUMNS = ["sweep", "trial_key", "run_id", "dataset", "model", "seed", "status", "health", "reason"]


def _diverged(run: object) -> bool:
    return run.data.tags.get("health") == "diverged"


def _makes_rows(run: object, include_incomplete: bool) -> bool:
    """Whether a run becomes rows of the tables: a FINISHED one, or with ``include_incomplete`` an
    unfinished or failed one, never a diverged one (a model that did not train is no result)."""
    return run.info.status == "FINISHED" or (include_incomplete and not _diverged(run))


def excluded_trials(runs: list) -> pd.DataFrame:
    """One row per trial left out of the tables (diverged, failed, unfinished), with the reason."""
    rows = [
        {
            "sweep": run.data.tags.get("sweep"),
            "trial_key": run.data.tags.get("trial_key"),
            "run_id": run.info.run_id,
            "dataset": run.data.params.get("dataset"),
            "model": run.data.params.get("model"),
            "seed": _param(run.data.params, "seed", int),
            "status": run.info.status,
            "health": run.data.tags.get("health", ""),
            "reason": run.data.tags.get("health_reason") or run.data.tags.get("error") or f"run is {run.info.status}",
        }
        for run in runs
        if run.info.status != "FINISHED"
    ]
    frame = pd.DataFrame(rows, columns=EXCLUDED_COLUMNS).astype({"seed": "Int64"})
    return frame.sort_values("trial_key", kind="stable").reset_index(drop=True)


def aggregate(chosen: list, include_incomplete: bool = False) -> dict[str, pd.DataFrame]:
    """All output tables from one run per trial (see select_runs), keyed by file stem (``results``...).

    The runs that make rows are chosen by :func:`_makes_rows`; the others are listed in ``excluded``.
    """
    kept = [r for r in chosen if _makes_rows(r, include_incomplete)]
    left_out = [r for r in chosen if not _makes_rows(r, include_incomplete)]
    results = tidy_results(kept)
    cells = cell_statistics(results)
    paper = paper_results()
    tables = {"results": results}
    tables.update({table.stem: paper_table(table, cells, paper) for table in PAPER_TABLES})
    tables["comparison"] = comparison(cells, paper)
    tables["excluded"] = excluded_trials(left_out)
    return tables


def has_measurements(table: pd.DataFrame) -> bool:
    """Whether a paper-shaped table holds at least one measured cell."""
    return bool(table.filter(like=" seeds").gt(0).any().any())


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
            schema = RESULT_SCHEMA if stem == "results" else None
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
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
    parser.add_argument("--sweep", nargs="+", default=[], metavar="NAME", help=f"sweeps (MLflow experiments) to read; default all of: {', '.join(SWEEPS)}")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<storage>/mlflow.db)")
    parser.add_argument("--storage", help="the sweep storage folder whose embedded store to read (default: $SWEEP_STORAGE or ./sweeps)")
    parser.add_argument("--to", default="parquet", choices=FORMATS, help="output format")
    parser.add_argument("--out", default="results", help="output folder (default: results/)")
    parser.add_argument("--report", action="store_true", help="also write report.md and PNG figures")
    parser.add_argument("--include-incomplete", action="store_true", help="keep unfinished and failed runs (their status column says so)")
    return parser


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
    runs = read_runs(tracking_uri, args.sweep)
    chosen, duplicates = select_runs(runs)

    tables = aggregate(chosen, include_incomplete=args.include_incomplete)
    out = Path(args.out)
    try:
        written = write_tables(tables, out, args.to)
        if args.report:
            from sweep.report import write_report  # matplotlib only when figures are asked for

            written += write_report(tables, out)
    except OSError as error:
        raise AggregateError(f"cannot write the tables to {out}: {error.strerror or error}") from None

    print(f"{len(chosen)} trials from {len(runs)} runs ({duplicates} duplicate runs of the same trial key passed over)")
    for run in chosen:
        if run.info.status != "FINISHED":
            label = "DIVERGED" if _diverged(run) else run.info.status
            kept = _makes_rows(run, args.include_incomplete)
            print(f"{label:9} {run.data.tags.get('trial_key')} ({'kept, flagged' if kept else 'left out'})")
    if args.to == "markdown":
        for stem in ("table2", "supp_table1"):
            if has_measurements(tables[stem]):
                print(f"\n{stem}\n{_markdown(tables[stem])}")
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
