"""``python -m sweep.evaluate SWEEP --suite NAME``: score the finished trials of a sweep on another noise
suite, without training them again.

Loads the last checkpoint of every finished, healthy trial (from the sweep's storage), scores it on every
setting of the suite (:data:`perturb.SUITES`) that its MLflow run lacks, and logs the scores into that same
run as ``acc/<suite>/<noise>/<level>`` (sweep.metrics) with an artifact ``suites/<suite>.json`` of the
rows. Each noisy test set is made once and shared by every model, on a GPU when there is one; with
``--address`` the trials are scored as Ray tasks across the cluster. A second call finds every score
logged and changes nothing. Trials without a checkpoint, whose checkpoint does not load, or that diverged
or did not finish, are skipped with a line each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep.cli import CommandParser, UsageError, aggregate_command, run_command
from sweep.defaults import DEFAULT_DATA_ROOT
from sweep.storage import DEFAULT_STORAGE, StorageError, SweepStorage, resolve_storage, take_credentials

__all__ = ["main"]

_DESCRIPTION = """\
Score the finished trials of a sweep on another noise suite, without training
them again: each trial's last checkpoint is scored on every setting of the
suite its MLflow run lacks, and the scores are logged into that same run. A
second call finds every score logged and changes nothing."""

_EPILOG = """\
examples:
  python -m sweep.evaluate --list-suites
      the suites and noise families
  python -m sweep.evaluate lenet --suite poisson-variants
      score the LeNet sweep in ./sweeps on the Poisson variants, then
      python -m sweep.aggregate --sweep lenet --suite poisson-variants --report
  python -m sweep.evaluate wrn_width --suite shot --storage s3://bucket/sweeps --address auto
      score as Ray tasks across a cluster, one per GPU

exit status: 0 scored (or nothing left to score); 2 bad input (nothing scored
or logged)."""


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser("python -m sweep.evaluate", _DESCRIPTION, _EPILOG)
    parser.add_argument("sweep", nargs="?", help="the sweep whose trials to score (python -m sweep.run --list)")
    parser.add_argument("--suite", help="the noise suite to score (see --list-suites)")
    parser.add_argument("--list-suites", action="store_true", help="print the suites and noise families and exit")
    parser.add_argument("--data-root", help=f"data sets folder (default: $SWEEP_DATA_ROOT or {DEFAULT_DATA_ROOT})")
    parser.add_argument(
        "--storage", help=f"the sweep's storage folder or URI (default: $SWEEP_STORAGE or ./{DEFAULT_STORAGE})"
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: the sweep's, as recorded in <storage>/<sweep>.sweep.json)"
    )
    parser.add_argument(
        "--address",
        help="Ray cluster address: score as Ray tasks across it (default: $RAY_ADDRESS, else in this process)",
    )
    return parser


def _list_suites() -> list[str]:
    from perturb import NOISE_FAMILIES, SUITES

    lines = ["suites:"]
    for suite in SUITES.values():
        settings = suite.settings("mnist")
        lines.append(f"  {suite.name:17} {len(settings):3d} settings on mnist: {suite.description}")
    lines.append("noise families (a noise is FAMILY[-p<PEAK>][-clip]; -clip clips the noisy images to [0, 1]):")
    lines += [f"  {family:17} {meaning}" for family, meaning in NOISE_FAMILIES.items()]
    return lines


def _tracking_uri(storage: SweepStorage, sweep: str, explicit: str | None) -> str:
    """``--tracking-uri``, else the one the sweep was started with; a sweep the storage lacks is an error."""
    record = storage.read_record(sweep)
    if record is None:
        raise UsageError(f"no sweep {sweep!r} in {storage.location}: pass the --storage it ran with")
    uri = take_credentials(explicit or storage.resolve(record["tracking_uri"]))  # an older engine recorded them
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UsageError(f"no MLflow store at {uri}: pass --tracking-uri")
    return uri


def _read_sweep(args: argparse.Namespace) -> tuple[SweepStorage, str, object, list]:
    """The sweep's storage, its MLflow store (URI and client) and one run per trial."""
    from sweep.runs import RunsUnavailable, read_runs, select_runs
    from sweep.tracking import TrackingUnavailable, open_client

    try:
        storage = resolve_storage(args.storage)
        tracking_uri = _tracking_uri(storage, args.sweep, args.tracking_uri)
        client = open_client(tracking_uri)
        runs, _ = read_runs(tracking_uri, [args.sweep])
    except (StorageError, TrackingUnavailable, RunsUnavailable) as error:
        raise UsageError(str(error)) from None
    return storage, tracking_uri, client, select_runs(runs)[0]


def _run(args: argparse.Namespace) -> int:
    if args.list_suites:
        print("\n".join(_list_suites()))
        return 0
    if args.sweep is None or args.suite is None:
        raise UsageError(
            "name a sweep and a suite: python -m sweep.evaluate SWEEP --suite NAME (--list-suites lists them)"
        )
    from perturb import SUITES
    from sweep.study import StudyError, load_study

    try:  # before torch, Ray and MLflow load: a typo answers at once
        study = load_study(args.sweep)
    except StudyError as error:
        raise UsageError(str(error)) from None
    args.sweep = study.name
    if args.suite not in SUITES:
        raise UsageError(f"unknown suite {args.suite!r}: expected one of {', '.join(SUITES)}")
    from sweep.cluster import RayUnavailable, ray_address
    from sweep.data import DataUnavailable, load_datasets
    from sweep.devices import DeviceUnusable, device_for
    from sweep.scoring import plan_jobs, score_jobs, score_on_cluster
    from sweep.tracking import log_suite_scores

    storage, tracking_uri, client, chosen = _read_sweep(args)
    try:
        jobs, skipped, complete = plan_jobs(storage, args.sweep, args.suite, chosen)
    except StorageError as error:
        raise UsageError(str(error)) from None
    try:
        data = load_datasets((job.spec.dataset for job in jobs), args.data_root)
    except DataUnavailable as error:
        raise UsageError(str(error)) from None

    for line in skipped:
        print(line, flush=True)
    settings = sum(len(job.settings) for job in jobs)
    print(
        f"sweep {args.sweep}, suite {args.suite}: {len(jobs)} trials to score ({settings} scores), {complete} already scored, {len(skipped)} skipped",
        flush=True,
    )
    address = ray_address(args.address)
    try:
        scores = score_on_cluster(jobs, data, address) if jobs and address else score_jobs(jobs, data, device_for(None))
    except (RayUnavailable, DeviceUnusable) as error:
        raise UsageError(str(error)) from None
    scored = [job for job in jobs if job.run_id in scores]  # less the trials whose checkpoint did not load
    logged = sum(log_suite_scores(client, job.run_id, args.suite, job.step, scores[job.run_id]) for job in scored)
    print(f"logged {logged} scores to {len(scored)} runs in {tracking_uri}")
    print(f"next: {aggregate_command(study.reference, storage.location, tracking_uri, args.suite)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("sweep.evaluate", _parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
