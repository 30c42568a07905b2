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
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import torch

from perturb import NOISE_FAMILIES, SUITES, Perturbation, perturb_test_set, suite_settings
from sweep.catalog import SWEEPS
from sweep.data import MEAN_STD, DatasetTensors, DataUnavailable, load_dataset, resolve_data_root
from sweep.defaults import DEFAULT_DATA_ROOT
from sweep.metrics import noise_metric
from sweep.specs import TrialSpec
from sweep.storage import StorageError, SweepStorage, resolve_storage
from sweep.tracking import TrackingUnavailable, log_suite_scores, open_client

__all__ = ["ScoringJob", "find_checkpoint", "main", "score_jobs"]


class EvaluateError(Exception):
    """Bad input: one line, exit status 2, nothing scored or logged."""


@dataclass(frozen=True)
class ScoringJob:
    """One trained trial to score: its MLflow run, spec, checkpoint file, the epoch its scores are logged
    at, and the settings its run lacks."""

    run_id: str
    spec: TrialSpec
    checkpoint: str
    step: int
    settings: tuple[Perturbation, ...]


def find_checkpoint(storage: SweepStorage, sweep: str, key: str) -> str | None:
    """The ``trial.pt`` of the latest checkpoint Tune kept of trial ``key``, None when it kept none."""
    import pyarrow.fs

    from sweep.trainable import CHECKPOINT_FILE

    filesystem, folder = pyarrow.fs.FileSystem.from_uri(storage.path(f"{sweep}/{key}"))
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    checkpoints = sorted(
        e.base_name
        for e in entries
        if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith("checkpoint_")
    )
    for name in reversed(checkpoints):
        target = f"{folder}/{name}/{CHECKPOINT_FILE}"
        if filesystem.get_file_info(target).type == pyarrow.fs.FileType.File:
            return storage.path(f"{sweep}/{key}/{name}/{CHECKPOINT_FILE}")
    return None


def _read_checkpoint(location: str) -> dict:
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    with filesystem.open_input_stream(path) as stream:
        return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=False)


def _load_model(job: ScoringJob, device: torch.device) -> torch.nn.Module:
    from models import build_model

    model = build_model(job.spec.model)
    model.load_state_dict(_read_checkpoint(job.checkpoint)["model"])
    return model.to(device).eval()


def score_jobs(
    jobs: list[ScoringJob],
    data: dict[str, DatasetTensors],
    device: str | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, dict[Perturbation, float]]:
    """Accuracy in percent of each job's model on each of its settings: {run id: {setting: accuracy}}.

    Jobs that share a test set (data set and test-image cap) are scored together: each distinct noisy
    test set (:meth:`Perturbation.same_images`) is made once and every model that needs it is scored on
    it. device: ``cuda`` when there is one, else ``cpu``, unless given. A job whose checkpoint does not
    load (truncated, corrupt) is skipped with one ``progress`` line and has no entry in the result.
    """
    from sweep.training import Normalizer, capped_test_set, evaluate

    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scores: dict[str, dict[Perturbation, float]] = {}
    loaded: dict[str, torch.nn.Module] = {}
    groups: dict[tuple[str, int | None], list[ScoringJob]] = {}
    for job in jobs:
        try:
            loaded[job.run_id] = _load_model(job, target)
        except Exception as error:  # noqa: BLE001 - whatever a damaged file raises, this trial alone is skipped
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            progress(f"skipped {job.spec.key}: its checkpoint {job.checkpoint} does not load ({reason})")
            continue
        scores[job.run_id] = {}
        groups.setdefault((job.spec.dataset, job.spec.recipe.max_test_images), []).append(job)
    for (dataset, _), group in groups.items():
        tensors = data[dataset]
        images, labels = capped_test_set(
            tensors.test_images.to(target), tensors.test_labels.to(target), group[0].spec.recipe
        )
        models = [loaded.pop(job.run_id) for job in group]
        normalizers = [
            Normalizer(*MEAN_STD[dataset], device=target, enabled=job.spec.recipe.normalize) for job in group
        ]
        # source (the setting whose images a setting shares; None: clean) -> job index -> its settings
        sources: dict[Perturbation | None, dict[int, list[Perturbation]]] = {}
        for i, job in enumerate(group):
            for setting in job.settings:
                sources.setdefault(setting.same_images(), {}).setdefault(i, []).append(setting)
        started = time.monotonic()
        for n, (source, users) in enumerate(sources.items(), 1):
            noisy = images if source is None else perturb_test_set(images, dataset, source)
            for i, settings in users.items():
                recipe = group[i].spec.recipe
                accuracy = evaluate(models[i], noisy, labels, normalizers[i], recipe.eval_batch_size, recipe.precision)
                scores[group[i].run_id].update(dict.fromkeys(settings, accuracy))
            name = "clean" if source is None else f"{source.noise} {source.level:g}"
            progress(
                f"{dataset}: [{n}/{len(sources)}] {name}: {len(users)} models scored ({time.monotonic() - started:.0f} s)"
            )
    return scores


def _jobs(storage: SweepStorage, sweep: str, suite: str, runs: list) -> tuple[list[ScoringJob], list[str], int]:
    """The jobs of ``runs`` (one per trial, see sweep.aggregate.select_runs), the lines that say which
    trials are skipped and why, and how many trials hold every score of the suite already."""
    from sweep.tables import diverged

    jobs, skipped, complete = [], [], 0
    for run in runs:
        key = run.data.tags.get("trial_key")
        if diverged(run):
            skipped.append(f"skipped {key}: diverged ({run.data.tags.get('health_reason', 'no reason recorded')})")
            continue
        if run.info.status != "FINISHED":
            skipped.append(f"skipped {key}: its run is {run.info.status}, not FINISHED")
            continue
        spec = _spec_of(storage, sweep, key)
        if spec is None:
            skipped.append(f"skipped {key}: no trial folder with its spec in {storage.path(sweep)}")
            continue
        missing = tuple(
            s
            for s in suite_settings(suite, spec.dataset)
            if noise_metric(s.noise, s.level, suite) not in run.data.metrics
        )
        if not missing:
            complete += 1
            continue
        checkpoint = find_checkpoint(storage, sweep, key)
        if checkpoint is None:
            skipped.append(f"skipped {key}: no checkpoint in {storage.path(f'{sweep}/{key}')}")
            continue
        jobs.append(
            ScoringJob(
                run.info.run_id, spec, checkpoint, int(run.data.metrics.get("epoch", spec.recipe.epochs)), missing
            )
        )
    return jobs, skipped, complete


def _spec_of(storage: SweepStorage, sweep: str, key: str) -> TrialSpec | None:
    """The spec Tune ran trial ``key`` with (its ``params.json``), None when the folder has none."""
    text = storage.read_text(f"{sweep}/{key}/params.json")
    return None if text is None else TrialSpec.from_config(json.loads(text))


def _score_on_cluster(
    jobs: list[ScoringJob], data: dict[str, DatasetTensors], address: str
) -> dict[str, dict[Perturbation, float]]:
    """:func:`score_jobs` as Ray tasks: one per GPU of the cluster (one per two CPUs on a CPU cluster),
    each scoring a share of the jobs on its own copy of the noisy test sets."""
    import ray

    from sweep.run import UsageError, join_ray

    if not ray.is_initialized():
        try:
            join_ray(address)
        except UsageError as error:
            raise EvaluateError(str(error)) from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    tasks = max(1, min(len(jobs), gpus or int(resources.get("CPU", 1) // 2)))
    remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1 if gpus else 2)(score_jobs)
    # The test sets only: the tasks train nothing.
    shared = ray.put(
        {name: replace(t, train_images=t.train_images[:0], train_labels=t.train_labels[:0]) for name, t in data.items()}
    )
    futures = [remote.remote(jobs[i::tasks], shared, None, _print_flushed) for i in range(tasks)]
    merged: dict[str, dict[Perturbation, float]] = {}
    for part in ray.get(futures):
        merged.update(part)
    return merged


def _print_flushed(line: str) -> None:
    print(line, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise EvaluateError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sweep.evaluate", description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("sweep", nargs="?", help=f"one of: {', '.join(SWEEPS)}")
    parser.add_argument("--suite", help="the noise suite to score (see --list-suites)")
    parser.add_argument("--list-suites", action="store_true", help="print the suites and noise families and exit")
    parser.add_argument("--data-root", help=f"data sets folder (default: $SWEEP_DATA_ROOT or {DEFAULT_DATA_ROOT})")
    parser.add_argument("--storage", help="the sweep's storage folder or URI (default: $SWEEP_STORAGE or ./sweeps)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: the sweep's, as recorded in <storage>/<sweep>.sweep.json)"
    )
    parser.add_argument(
        "--address",
        help="Ray cluster address: score as Ray tasks across it (default: $RAY_ADDRESS, else in this process)",
    )
    return parser


def _list_suites() -> list[str]:
    lines = ["suites:"]
    for suite in SUITES.values():
        settings = suite.settings("mnist")
        lines.append(f"  {suite.name:17} {len(settings):3d} settings on mnist: {suite.description}")
    lines.append("noise families (a noise is FAMILY[-p<PEAK>][-clip]; -clip clips the noisy images to [0, 1]):")
    lines += [f"  {family:17} {meaning}" for family, meaning in NOISE_FAMILIES.items()]
    return lines


def _tracking_uri(storage: SweepStorage, sweep: str, explicit: str | None) -> str:
    """``--tracking-uri``, else the one the sweep was started with; a sweep the storage lacks is an error."""
    text = storage.read_text(f"{sweep}.sweep.json")
    if text is None:
        raise EvaluateError(f"no sweep {sweep!r} in {storage.location}: pass the --storage it ran with")
    uri = explicit or storage.resolve(json.loads(text)["tracking_uri"])
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise EvaluateError(f"no MLflow store at {uri}: pass --tracking-uri")
    return uri


def _run(args: argparse.Namespace) -> int:
    if args.list_suites:
        print("\n".join(_list_suites()))
        return 0
    if args.sweep is None or args.suite is None:
        raise EvaluateError(
            "name a sweep and a suite: python -m sweep.evaluate SWEEP --suite NAME (--list-suites lists them)"
        )
    if args.sweep not in SWEEPS:
        raise EvaluateError(f"unknown sweep {args.sweep!r}: expected one of {', '.join(SWEEPS)}")
    if args.suite not in SUITES:
        raise EvaluateError(f"unknown suite {args.suite!r}: expected one of {', '.join(SUITES)}")
    try:
        storage = resolve_storage(args.storage)
        tracking_uri = _tracking_uri(storage, args.sweep, args.tracking_uri)
        client = open_client(tracking_uri)
    except (StorageError, TrackingUnavailable) as error:
        raise EvaluateError(str(error)) from None

    from sweep.aggregate import AggregateError, read_runs, select_runs

    try:
        runs, _ = read_runs(tracking_uri, [args.sweep])
    except AggregateError as error:
        raise EvaluateError(str(error)) from None
    chosen, _ = select_runs(runs)
    jobs, skipped, complete = _jobs(storage, args.sweep, args.suite, chosen)
    try:
        data = {
            name: load_dataset(name, resolve_data_root(args.data_root))
            for name in dict.fromkeys(job.spec.dataset for job in jobs)
        }
    except DataUnavailable as error:
        raise EvaluateError(str(error)) from None

    for line in skipped:
        print(line, flush=True)
    settings = sum(len(job.settings) for job in jobs)
    print(
        f"sweep {args.sweep}, suite {args.suite}: {len(jobs)} trials to score ({settings} scores), {complete} already scored, {len(skipped)} skipped",
        flush=True,
    )
    address = args.address or os.environ.get("RAY_ADDRESS")
    scores = (
        _score_on_cluster(jobs, data, address) if jobs and address else score_jobs(jobs, data, progress=_print_flushed)
    )
    scored = [job for job in jobs if job.run_id in scores]  # less the trials whose checkpoint did not load
    for job in scored:
        log_suite_scores(client, job.run_id, args.suite, job.step, scores[job.run_id])
    print(f"logged {sum(len(job.settings) for job in scored)} scores to {len(scored)} runs in {tracking_uri}")
    print(
        f"next: python -m sweep.aggregate --sweep {args.sweep} --suite {args.suite} --storage {storage.location} --report"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(_parser().parse_args(argv))
    except EvaluateError as error:
        print(f"sweep.evaluate: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
