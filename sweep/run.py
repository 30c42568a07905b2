"""``python -m sweep.run SWEEP``: run a sweep of the paper as Ray Tune trials tracked in MLflow.

Everything that can be checked before Ray starts is checked first (sweep, overrides, storage, tracking
store, data); a problem there ends the command with one line and exit status 2, having started nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import uuid
from typing import Any, NoReturn

from sweep.catalog import SWEEPS, build_sweep
from sweep.data import DataUnavailable, load_dataset, resolve_data_root
from sweep.mirror import TrackingCallback, TrackingWriter, replay_trials, writer_for
from sweep.specs import PROFILES, TrialSpec, parse_override
from sweep.storage import StorageError, SweepStorage, resolve_storage
from sweep.tracking import Tracker, TrackingUnavailable
from sweep.training import DEFAULT_OVERHEAD_BUDGET

__all__ = ["UsageError", "join_ray", "main"]

# MLflow's HTTP client retries a request for minutes by default; the mirror's writer retries on its own
# (sweep.mirror), so a request may fail fast and report the outage. A user's own settings win.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
EXIT_WRITES_WAIT = 3  # every trial ended, but MLflow has not received everything yet: run --sync later


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sweep.run", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", help=f"one of: {', '.join(SWEEPS)}")
    parser.add_argument("--list", action="store_true", help="print the sweeps with their trial counts and exit")
    parser.add_argument(
        "--profile", default="paper", choices=PROFILES, help="paper: the real recipe; smoke: capped, minutes on a CPU"
    )
    parser.add_argument("--seeds", type=int, default=1, help="repeat each trial with seeds 0..N-1")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[lenet.|wrn.]KEY=VALUE",
        help="override a recipe field",
    )
    parser.add_argument(
        "--data-root", help="data sets folder (default: $SWEEP_DATA_ROOT or ~/.cache/pushpull-sweep/data)"
    )
    parser.add_argument("--storage", help="Ray Tune storage folder or URI (default: $SWEEP_STORAGE or ./sweeps)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<storage>/mlflow.db)"
    )
    parser.add_argument("--address", help="Ray cluster address, e.g. auto (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    parser.add_argument(
        "--gpus",
        default="auto",
        choices=("auto", "require", "none"),
        help="auto: trials ask for GPUs when the cluster has any; require: always, waiting --gpu-wait s for GPU workers to join; none: CPUs only",
    )
    parser.add_argument(
        "--gpu-wait",
        type=float,
        default=600,
        metavar="SECONDS",
        help="with --gpus require, how long to wait for an autoscaler to add GPU workers (default 600)",
    )
    parser.add_argument(
        "--max-failures", type=int, default=2, help="restarts of a trial whose worker dies (from its last checkpoint)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep: finished trials are kept, errored ones retried",
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="train nothing: deliver to MLflow what the sweep's trials reported and MLflow has not received (after an outage)",
    )
    parser.add_argument(
        "--tracking-wait",
        type=float,
        default=60,
        metavar="SECONDS",
        help="at the end, how long to wait for MLflow to take the writes still waiting (default 60)",
    )
    parser.add_argument(
        "--overhead-budget",
        type=float,
        default=DEFAULT_OVERHEAD_BUDGET,
        metavar="FRACTION",
        help=f"the most of a trial's time its per-epoch test evaluation and checkpoints may take; other epochs report training metrics only (the first and last always evaluate; 1: every epoch; default {DEFAULT_OVERHEAD_BUDGET:g})",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the trial table and exit without starting Ray")
    return parser


def _trial_table(specs: list[TrialSpec]) -> str:
    rows = [("trial key", "model", "h", "alpha", "dataset", "seed", "epochs", "resources (GPU cluster / CPU only)")]
    for spec in specs:
        gpu, cpu = spec.resources(True, 2), spec.resources(False, 2)
        resources = f"{gpu['cpu']:g} CPU + {gpu['gpu']:g} GPU / {cpu['cpu']:g} CPU"
        h, alpha = ("-", "-") if not spec.model.pushpull else (f"{spec.model.h:g}", f"{spec.model.alpha:g}")
        rows.append(
            (spec.key, spec.model.name, h, alpha, spec.dataset, str(spec.seed), str(spec.recipe.epochs), resources)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [f"{len(specs)} trials"])


def _trial_dirname(trial: Any) -> str:
    return TrialSpec.from_dict(trial.config["spec"]).key


def _trial_resources(config: dict[str, Any]) -> dict[str, float]:
    return TrialSpec.from_dict(config["spec"]).resources(config["gpus"], config["node_cpus"])


def _plan(args: argparse.Namespace, gpus: bool) -> list[TrialSpec]:
    """The trials of the sweep asked for; in bf16 when they get GPUs (``gpus``), unless ``--set precision=``."""
    if args.sweep is None:
        raise UsageError(f"name a sweep: {', '.join(SWEEPS)} (or --list)")
    try:
        overrides = [(None, "precision", "bf16" if gpus else "fp32")] + [
            parse_override(text) for text in args.overrides
        ]
        return build_sweep(args.sweep, profile=args.profile, seeds=args.seeds, overrides=overrides)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _started_record(storage: SweepStorage, sweep: str, continued: bool) -> dict[str, Any] | None:
    """A sweep folder is continued (``--resume``, ``--sync``) only when it was started, and started only once:
    the record of the started sweep when ``continued``, None for a sweep that may start."""
    text = storage.read_text(f"{sweep}.sweep.json")
    if not continued:
        if text is not None:
            raise UsageError(
                f"sweep {sweep!r} already exists in {storage.location}: continue it with --resume, or pass another --storage"
            )
        return None
    if text is None:
        raise UsageError(f"nothing to continue: no sweep {sweep!r} in {storage.location}")
    return json.loads(text)


def _check_continued(started: dict[str, Any], specs: list[TrialSpec], tracking_uri: str) -> None:
    """A sweep is continued as it was started: the same trials, the same tracking store."""
    if started["trial_keys"] != [s.key for s in specs]:
        raise UsageError(
            "--resume and --sync continue the sweep as it was started: use the same --profile, --seeds and --set"
        )
    if started["tracking_uri"] != tracking_uri:
        raise UsageError(
            f"--resume and --sync continue the sweep with the tracking store it started with: {started['tracking_uri']}"
        )


def _dry_run_gpus(args: argparse.Namespace) -> bool:
    """Whether the trials would get GPUs, as far as this machine can tell without starting Ray."""
    import torch

    return args.gpus == "require" or (args.gpus == "auto" and torch.cuda.is_available())


def _run(args: argparse.Namespace) -> int:
    specs = _plan(args, gpus=False)  # every --set checked before anything else
    if args.dry_run:
        gpus = _dry_run_gpus(args)
        print(_trial_table(_plan(args, gpus)))
        print(
            f"precision {'bf16' if gpus else 'fp32'} unless --set precision=: {'GPU' if gpus else 'no GPU'} trials, as far as this machine tells (--gpus {args.gpus})"
        )
        return 0
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UsageError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if not args.overhead_budget > 0:
        raise UsageError(f"--overhead-budget must be > 0, got {args.overhead_budget:g}")
    if args.resume and args.sync:
        raise UsageError("--resume already delivers what MLflow lacks: use --resume or --sync, not both")

    try:
        storage = resolve_storage(args.storage)
        tracking_uri = storage.tracking_uri(args.tracking_uri)
        started = _started_record(storage, args.sweep, args.resume or args.sync)
    except StorageError as error:
        raise UsageError(str(error)) from None
    if started is not None:
        specs = _plan(args, started.get("gpus", False))  # the precision it started with
        _check_continued(started, specs, tracking_uri)
    launch = (
        uuid.uuid4().hex[:12] if started is None else started.get("launch", "")
    )  # sweeps started before launch ids: ""

    for name, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    artifact_root = storage.local / "mlartifacts" if storage.local is not None else None
    try:
        Tracker(tracking_uri, args.sweep, artifact_root, launch)  # the store answers, the experiment exists
    except TrackingUnavailable as error:
        raise UsageError(str(error)) from None
    writer = writer_for(tracking_uri, args.sweep, artifact_root, launch)
    if args.sync:
        replayed = replay_trials(storage, args.sweep, specs, writer)
        print(f"sweep {args.sweep}: delivering what {replayed} trials reported to {tracking_uri}", flush=True)
        return _deliver(writer, args, 0)

    try:
        data = {
            name: load_dataset(name, resolve_data_root(args.data_root))
            for name in dict.fromkeys(s.dataset for s in specs)
        }
    except DataUnavailable as error:
        raise UsageError(str(error)) from None

    # Keeping two checkpoints per trial makes Tune snapshot its state after every epoch, and warn about
    # it when epochs are short (a LeNet epoch takes seconds): intended here, so not worth a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray  # Ray starts only once every check has passed.
    from ray import tune

    from sweep.trainable import train_trial

    if not ray.is_initialized():
        join_ray(args.address or os.environ.get("RAY_ADDRESS"))
    gpus = args.gpus != "none" and ray.cluster_resources().get("GPU", 0) > 0
    if args.gpus == "require" and not gpus:
        _wait_for_gpus(args.gpu_wait)
        gpus = True
    planned_gpus = gpus if started is None else started.get("gpus", False)  # what the precision was chosen for
    specs = _plan(args, planned_gpus)
    record = {
        "sweep": args.sweep,
        "tracking_uri": tracking_uri,
        "trial_keys": [s.key for s in specs],
        "launch": launch,
        "gpus": planned_gpus,
    }
    node_cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=1)
    trainable = tune.with_resources(tune.with_parameters(train_trial, data=data), _trial_resources)
    param_space = {
        "spec": tune.grid_search([spec.to_dict() for spec in specs]),
        "gpus": gpus,
        "node_cpus": node_cpus,
        "overhead_budget": args.overhead_budget,
    }
    if args.resume and tune.Tuner.can_restore(storage.path(args.sweep)):
        # The param space again: Tune keeps it in its experiment state, which a driver stopped right
        # after creating the Tuner has not written yet.
        tuner = tune.Tuner.restore(
            storage.path(args.sweep), trainable=trainable, resume_errored=True, param_space=param_space
        )
    else:
        # A new sweep, or one whose driver stopped after recording it and before Tune saved any state:
        # nothing of it ran, so it starts from the beginning (under the launch id it was recorded with).
        storage.write_text(f"{args.sweep}.sweep.json", json.dumps(record, indent=1))
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=args.max_concurrent,
                trial_name_creator=_trial_dirname,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=args.sweep,
                storage_path=storage.location,
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[TrackingCallback(tracking_uri, args.sweep, artifact_root, launch)],
            ),
        )
    print(
        f"sweep {args.sweep}: {len(specs)} trials, {'GPU' if gpus else 'CPU-only'} cluster, tracking at {tracking_uri}",
        flush=True,
    )
    results = tuner.fit()
    code = _summarize(results, writer)
    replay_trials(storage, args.sweep, specs, writer)  # what Tune kept and the callback never saw (a driver that died)
    return _deliver(writer, args, code)


def _deliver(writer: TrackingWriter, args: argparse.Namespace, code: int) -> int:
    """Wait for MLflow to take the writes still waiting; one line and EXIT_WRITES_WAIT when it does not."""
    waiting = writer.drain(args.tracking_wait)
    if not waiting:
        return code
    print(
        f"sweep.run: {waiting} MLflow writes wait for {writer.tracking_uri} after {args.tracking_wait:g} s; every trial's results are "
        "kept in the sweep's storage: deliver them by running this command again with --sync (in place of --resume) once MLflow is back",
        file=sys.stderr,
        flush=True,
    )
    return code or EXIT_WRITES_WAIT


def join_ray(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``...), or start a local Ray when None.

    An unreachable cluster stops with one line: for ``HOST:PORT`` Ray itself would retry for minutes.
    """
    import ray

    host, _, port = (address or "").rpartition(":")
    if host and port.isdigit() and "://" not in host:
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as error:
            raise UsageError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise UsageError(f"cannot join the Ray cluster at {address}: {str(error).strip().splitlines()[0]}") from None


def _wait_for_gpus(seconds: float) -> None:
    """Wait for GPU workers to join (an autoscaler starting them), or stop with one line: a trial that
    asks for a GPU the cluster will never have would wait forever."""
    import ray

    deadline = time.monotonic() + seconds
    print(f"waiting up to {seconds:g} s for GPU workers to join the Ray cluster (--gpus require)", flush=True)
    while time.monotonic() < deadline:
        if ray.cluster_resources().get("GPU", 0) > 0:
            return
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    raise UsageError(
        f"no GPU joined the Ray cluster in {seconds:g} s, and --gpus require makes every trial ask for one: "
        "start GPU workers (min_workers of the GPU node type in cluster.yaml) or use --gpus auto"
    )


def _summarize(results: Any, writer: TrackingWriter) -> int:
    """Print one line per failed or diverged trial and the count of finished ones; make sure the run of an
    errored trial ends FAILED. Returns 1 when a trial failed or diverged, else 0."""
    problems = []
    for result in results:
        spec = TrialSpec.from_dict(result.config["spec"])
        about = f"{spec.key} ({spec.model.name} on {spec.dataset}, seed {spec.seed})"
        if result.error is not None:
            text = str(result.error).strip()
            reason = text.splitlines()[-1] if text else type(result.error).__name__
            problems.append(f"FAILED {about}: {reason}")
            writer.submit("fail", spec, reason)
        elif result.metrics.get("health") == "diverged":
            problems.append(f"DIVERGED {about}: {result.metrics['health_reason']}")
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(results) - len(problems)} of {len(results)} trials finished", flush=True)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.list:
            for name, (description, _) in SWEEPS.items():
                print(f"{name:12} {len(build_sweep(name)):3d} trials  {description}")
            return 0
        return _run(args)
    except UsageError as error:
        print(f"sweep.run: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
