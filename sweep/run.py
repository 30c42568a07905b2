"""``python -m sweep.run SWEEP``: run a sweep of the paper as Ray Tune trials tracked in MLflow.

The command works in two steps. :func:`preflight` checks everything that can be checked before Ray starts
(sweep, overrides, resources, storage, tracking store, data) and creates nothing; a problem there ends
the command with one line and exit status 2. :func:`launch` then starts (or joins) Ray and runs the trials
with Tune. ``--dry-run`` runs the pre-flight and prints the trials instead of launching them.

This module imports only the standard library and torch-free modules at import time, so that ``--help``
and argument errors answer at once: torch, Ray and MLflow load after the arguments are parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweep.cli import CommandParser, UsageError, format_table, run_command
from sweep.cluster import RayUnavailable, join_ray, ray_address, ray_running_here, reach_ray
from sweep.defaults import DEFAULT_DATA_ROOT, DEFAULT_OVERHEAD_BUDGET, PROFILES
from sweep.storage import DEFAULT_STORAGE, StorageError, SweepStorage, resolve_storage, without_credentials

if TYPE_CHECKING:
    from sweep.data import DatasetTensors
    from sweep.gpus import GpuProbe, GpuSurvey
    from sweep.mirror import TrackingWriter
    from sweep.specs import TrialSpec
    from sweep.study import Search, Study
    from sweep.tracking import TrialOutcome

__all__ = ["Plan", "launch", "main", "preflight"]

# MLflow's HTTP client retries a request for minutes by default; the mirror's writer retries on its own
# (sweep.mirror), so a request may fail fast and report the outage. With a tracking server MLflow prints
# "View run ... / View experiment ..." whenever a run ends (twice per trial): the console names the runs
# view once, at the end. A user's own settings win.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
EXIT_WRITES_WAIT = 3  # every trial ended, but MLflow has not taken everything yet (away, or refused): run --sync later

_DESCRIPTION = """\
Run a sweep of the paper as Ray Tune trials tracked in MLflow.

Everything that can be checked before Ray starts is checked first (sweep,
--set, resources, storage, tracking store, data sets): a problem there ends
the command with one line and exit status 2, having created nothing.
--dry-run runs these checks and prints the trials without starting Ray."""

_EPILOG = """\
examples:
  python -m sweep.run --list
      the built-in studies (the paper's sweeps), with their trial counts
  python -m sweep.run my_study.toml --profile smoke --data-root ~/data
      a study of your own (see the README: models, data sets, recipe grids, a search of h and alpha)
  python -m sweep.run lenet --profile smoke --dry-run
      check everything and print the trials of a short LeNet sweep, creating nothing
  python -m sweep.run lenet --profile smoke --data-root ~/data --max-concurrent 4
      run it on a local Ray, four trials at once
  python -m sweep.run wrn_width --seeds 3 --address auto --gpus require --tracking-uri http://mlflow:5000
      the WRN width sweep, three seeds, on a Ray cluster with GPU workers (storage: $SWEEP_STORAGE)
  python -m sweep.run wrn_width --seeds 3 --address auto --gpus require --tracking-uri http://mlflow:5000 --resume
      continue it after an interruption: finished trials are kept, errored ones retried
  python -m sweep.run lenet --profile smoke --sync
      deliver to MLflow what the trials reported during an MLflow outage

exit status: 0 every trial finished; 1 a trial failed or diverged; 2 bad input
(nothing started); 3 every trial ended but MLflow has not taken every write yet:
it was away, or it refused some for good (set aside in <sweep>.dead-letters.jsonl);
run the command again with --sync.

one driver per sweep: its lease <sweep>.lease.json stops a second one (exit status 2)"""


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser("python -m sweep.run", _DESCRIPTION, _EPILOG)
    parser.add_argument(
        "sweep", nargs="?", metavar="STUDY", help="a built-in study (see --list) or a study file (.toml)"
    )
    parser.add_argument(
        "--list", action="store_true", help="print the built-in studies with their trial counts and exit"
    )
    parser.add_argument(
        "--profile", default="paper", choices=PROFILES, help="paper: the real recipe; smoke: capped, minutes on a CPU"
    )
    parser.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 of each trial (default: the study's)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[ARCH.]KEY=VALUE",
        help="override a recipe field (repeatable)",
    )
    parser.add_argument("--data-root", help=f"data sets folder (default: $SWEEP_DATA_ROOT or {DEFAULT_DATA_ROOT})")
    parser.add_argument(
        "--storage", help=f"Ray Tune storage folder or URI (default: $SWEEP_STORAGE or ./{DEFAULT_STORAGE})"
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<storage>/mlflow.db)"
    )
    parser.add_argument("--address", help="Ray cluster address, e.g. auto (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--max-concurrent", type=int, metavar="N", help="at most this many trials at once")
    parser.add_argument(
        "--gpus",
        default="auto",
        choices=("auto", "require", "none"),
        help="auto: trials ask for GPUs when the cluster has any or its autoscaler can add some; require: always; "
        "none: CPUs only. Without a GPU yet, the driver waits --gpu-wait s for GPU workers to join",
    )
    parser.add_argument(
        "--gpu-wait",
        type=float,
        default=600,
        metavar="SECONDS",
        help="how long to wait for the first GPU worker when GPU trials are planned",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=2,
        metavar="N",
        help="restarts of a trial whose worker dies, from its last checkpoint (-1: without limit)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep: finished trials are kept, errored ones retried",
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="train nothing: deliver to MLflow what the sweep's trials reported and MLflow has not received "
        "(after an outage)",
    )
    parser.add_argument(
        "--tracking-wait",
        type=float,
        default=60,
        metavar="SECONDS",
        help="at the end, how long to wait for MLflow to take the writes still waiting",
    )
    parser.add_argument(
        "--overhead-budget",
        type=float,
        default=DEFAULT_OVERHEAD_BUDGET,
        metavar="FRACTION",
        help="the most of a trial's time its per-epoch test evaluation and checkpoints may take; other epochs "
        "report training metrics only (the first and last always evaluate; 1: every epoch)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Ray's and Tune's own output too (their log lines, the workers' output, Tune's status tables)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run every check, print the trial table and exit, creating nothing and starting no Ray",
    )
    return parser


@dataclass(frozen=True)
class Plan:
    """What the pre-flight established: everything :func:`launch` needs. The pre-flight made
    nothing of a new sweep (no storage folder, no MLflow store) and started no Ray.

    Attributes:
        sweep: the sweep's name.
        specs: its trials; in fp32 for a new sweep (the launch picks the precision once Ray tells whether
            the trials get GPUs), in the precision it started with for a continued one.
        storage: where Tune keeps the sweep (checked writable when local).
        tracking_uri: the MLflow store (checked reachable, or creatable for an embedded one).
        started: the record of the started sweep (``--resume``, ``--sync``), None for a new one.
        launch_id: the id of the started sweep (``<sweep>.sweep.json``) whose runs this launch writes.
        address: the Ray cluster to join (``--address`` or ``$RAY_ADDRESS``), None for a local Ray.
        data: each data set the trials need, loaded; None with ``--sync`` (which trains nothing), and a data
            set is None in a dry run when only its archives are there (a launch extracts them).
        survey: the GPUs of the cluster joined at ``address`` (or of the Ray running here); None for a local
            Ray (the launch starts it), ``--gpus none`` and ``--sync``.
        probe: what a task found on one of the cluster's live GPU nodes; None when it has none.
        tracking_moved: a continued sweep is tracked at ``tracking_uri`` from now on, not at the store its
            record names (which the launch then updates).
        study: the study that makes the trials (sweep.study).
        search_base: for a study that searches push-pull's h and alpha, the trial each searched one varies
            (h, alpha and seed); None for a grid.
    """

    sweep: str
    specs: tuple[TrialSpec, ...]
    storage: SweepStorage
    tracking_uri: str
    started: dict[str, Any] | None
    launch_id: str
    address: str | None
    data: dict[str, DatasetTensors | None] | None
    survey: GpuSurvey | None = None
    probe: GpuProbe | None = None
    tracking_moved: bool = False
    study: Study | None = None
    search_base: TrialSpec | None = None

    @property
    def artifact_root(self) -> str | None:
        """Where a new experiment keeps its artifacts: beside the sweep for an embedded store; None for a
        tracking server, which decides for itself (its --artifacts-destination)."""
        return None if self.tracking_uri.startswith(("http://", "https://")) else self.storage.artifact_root


def _started_gpus(started: dict[str, Any]) -> tuple[bool, tuple[int, int] | None, bool]:
    """Whether started sweep ``started`` (its record) planned GPU trials, the compute capability of the GPUs
    it planned their precision for (None: not probed), and whether it is of an engine that gave every GPU
    trial bf16 (its record has no ``gpu_capability``)."""
    capability = started.get("gpu_capability")
    gpus = started.get("gpus", False)
    return gpus, None if capability is None else tuple(capability), gpus and "gpu_capability" not in started


def _trial_table(specs: list[TrialSpec] | tuple[TrialSpec, ...]) -> str:
    rows = [
        ("trial key", "model", "h", "alpha", "dataset", "seed", "epochs", "precision", "resources (GPU / CPU only)")
    ]
    for spec in specs:
        gpu, cpu = spec.resources(True, 2), spec.resources(False, 2)
        resources = f"{gpu['cpu']:g} CPU + {gpu['gpu']:g} GPU / {cpu['cpu']:g} CPU"
        h, alpha = ("-", "-") if not spec.model.pushpull else (f"{spec.model.h:g}", f"{spec.model.alpha:g}")
        seed, epochs = str(spec.seed), str(spec.recipe.epochs)
        rows.append((spec.key, spec.model.name, h, alpha, spec.dataset, seed, epochs, spec.recipe.precision, resources))
    return "\n".join(format_table(rows) + [f"{len(specs)} trials"])


def _search_line(search: Search, base: TrialSpec, seeds: int) -> str:
    """The searched trials of a dry run, in one line."""
    ranges = ", ".join(f"{name} in [{low:g}, {high:g}]" for name, (low, high) in search.ranges.items())
    goal = ", ".join(f"{mode} {metric}" for metric, mode in zip(search.metrics, search.modes))
    scheduler = "" if search.scheduler == "none" else f", {search.scheduler.upper()} stops the worst early"
    return (
        f"then {search.samples * seeds} searched trials: {base.model.name} on {base.dataset}, {search.samples} points "
        f"({ranges}) x {seeds} seeds, {search.algorithm}: {goal}{scheduler}"
    )


def _trial_dirname(trial: Any) -> str:
    from sweep.specs import TrialSpec

    return TrialSpec.from_config(trial.config).key


def _trial_resources(config: dict[str, Any]) -> dict[str, float]:
    from sweep.specs import TrialSpec

    return TrialSpec.from_config(config).resources(config["gpus"], config["node_cpus"])


def _study(args: argparse.Namespace) -> Study:
    """The study named on the command line (a built-in name or a study file); one line and exit 2 when it
    is none or does not parse."""
    from sweep.study import StudyError, built_in_names, load_study

    if args.sweep is None:
        raise UsageError(f"name a study: {', '.join(built_in_names())} or a study file (.toml) (or --list)")
    try:
        return load_study(args.sweep)
    except StudyError as error:
        raise UsageError(str(error)) from None


def _plan(
    args: argparse.Namespace,
    study: Study,
    gpus: bool,
    capability: tuple[int, int] | None = None,
    all_bf16: bool = False,
) -> tuple[list[TrialSpec], TrialSpec | None]:
    """The trials of the study asked for and, for a study that searches, the base of its searched trials
    (sweep.study.Study.search_base; else None), each in the precision :func:`_precision` gives it for trials
    that get GPUs (``gpus``) of compute ``capability`` (None: not known); ``all_bf16``: bf16 for every one,
    as the engine before the precision table gave GPU trials (a sweep it started continues so)."""
    try:
        overrides = _overrides(args)
        specs = study.trials(args.profile, args.seeds, overrides)
        base = study.search_base(args.profile, overrides)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if all_bf16:
        overrides = [(None, "precision", "bf16"), *overrides]

    def in_precision(spec: TrialSpec) -> TrialSpec:
        precision = _precision(spec, overrides, gpus, capability)[0]
        return dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, precision=precision))

    return [in_precision(spec) for spec in specs], None if base is None else in_precision(base)


def _overrides(args: argparse.Namespace) -> list[tuple[str | None, str, Any]]:
    from sweep.specs import parse_override

    return [parse_override(text) for text in args.overrides]


def _precision(
    spec: TrialSpec, overrides: list[tuple[str | None, str, Any]], gpus: bool, capability: tuple[int, int] | None
) -> tuple[str, str]:
    """(precision, why) of ``spec``'s trial: a ``--set precision=`` for its architecture, else the measured
    default (sweep.precision)."""
    from sweep.precision import default_precision

    chosen = [value for arch, key, value in overrides if key == "precision" and arch in (None, spec.model.arch)]
    if chosen:
        return chosen[-1], "--set precision"
    return default_precision(spec.model, gpus, capability)


def _started_record(storage: SweepStorage, sweep: str, continued: bool) -> dict[str, Any] | None:
    """A sweep folder is continued (``--resume``, ``--sync``) only when it was started, and started only once:
    the record of the started sweep when ``continued``, None for a sweep that may start."""
    if not continued:
        if storage.has_record(sweep):
            raise UsageError(
                f"sweep {sweep!r} already exists in {storage.location}: continue it with --resume, or pass another --storage"
            )
        return None
    record = storage.read_record(sweep)
    if record is None:
        raise UsageError(f"nothing to continue: no sweep {sweep!r} in {storage.location}")
    return record


def _check_continued(started: dict[str, Any], specs: list[TrialSpec]) -> None:
    """A sweep is continued as it was started: the same trials."""
    if started["trial_keys"] != [s.key for s in specs]:
        raise UsageError(
            "--resume and --sync continue the sweep as it was started: use the same --profile, --seeds and --set"
        )


def _moved_tracking(sweep: str, started: dict[str, Any], storage: SweepStorage, tracking_uri: str) -> bool:
    """Whether a continued sweep is tracked at another store than it started with (a tracking server that
    moved with a replaced head), which is allowed when that store holds runs of the sweep's launch: one line
    says so. A store that holds none is one line, exit 2 (its runs would split over two stores)."""
    from sweep.tracking import TrackingUnavailable, launch_trial_keys

    recorded = without_credentials(storage.resolve(started["tracking_uri"]))  # an older engine recorded them
    if recorded == tracking_uri:
        return False
    try:
        held = launch_trial_keys(tracking_uri, sweep, started.get("launch", "")) & set(started["trial_keys"])
    except TrackingUnavailable as error:
        raise UsageError(str(error)) from None
    if not held:
        raise UsageError(
            f"sweep {sweep} is tracked at {recorded}, and {tracking_uri} holds none of its runs: continue it "
            f"with --tracking-uri {recorded}, or with the store its runs moved to"
        )
    print(
        f"sweep {sweep}: tracked at {tracking_uri} from now on, which holds the runs of {len(held)} of its "
        f"{len(started['trial_keys'])} trials (it started at {recorded})",
        flush=True,
    )
    return True


def _check_options(args: argparse.Namespace) -> None:
    """Option values no sweep can run with."""
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UsageError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if not args.overhead_budget > 0:
        raise UsageError(f"--overhead-budget must be > 0, got {args.overhead_budget:g}")
    if args.max_failures < -1:
        raise UsageError(f"--max-failures must be >= 0 (or -1: without limit), got {args.max_failures}")
    for option in ("gpu_wait", "tracking_wait"):
        if not getattr(args, option) >= 0:
            raise UsageError(f"--{option.replace('_', '-')} must be >= 0, got {getattr(args, option):g}")
    if args.resume and args.sync:
        raise UsageError("--resume already delivers what MLflow lacks: use --resume or --sync, not both")


def _check_gpus(args: argparse.Namespace, address: str | None) -> None:
    """``--gpus require`` on a local Ray (started here) that can have no GPU: it would wait --gpu-wait s for
    GPU workers that no autoscaler adds."""
    if args.gpus != "require" or address is not None or ray_running_here():
        return
    from sweep.devices import cuda_problem

    problem = cuda_problem()
    if problem is not None:
        raise UsageError(
            f"--gpus require makes every trial ask for a GPU, and torch cannot use one on this machine ({problem.why}) "
            "for the local Ray the trials would run on: use --gpus auto or none, or join a cluster with GPU "
            "workers (--address)"
        )


def _load_data(specs: list[TrialSpec], data_root: str | None, download: bool) -> dict[str, DatasetTensors | None]:
    """Each data set the trials need, loaded (downloaded first where absent, when ``download``)."""
    from sweep.data import DataUnavailable, load_datasets

    try:
        return load_datasets((s.dataset for s in specs), data_root, download)
    except DataUnavailable as error:
        raise UsageError(str(error)) from None


def preflight(args: argparse.Namespace) -> Plan:
    """Every check that can be made before any trial starts, in order: the sweep and its --set, the option
    values, the resources, the storage (writable, leased by no other live driver, and holding a started sweep
    exactly when continuing one), the tracking store, the cluster (a cluster given with --address, or the Ray
    running here, is joined: no local Ray is started): every node sees a local storage, and its GPUs; the
    data sets (loaded; downloaded first where absent, unless a dry run). Creates nothing; raises UsageError
    (one line) at the first problem, before any download."""
    study = _study(args)
    specs, base = _plan(args, study, gpus=False)  # the study, --seeds, every --set
    _check_options(args)
    address = ray_address(args.address)
    if not args.sync:  # --sync trains nothing: it needs no Ray
        _check_gpus(args, address)
        if address is not None:
            try:
                reach_ray(address)
            except RayUnavailable as error:
                raise UsageError(str(error)) from None
    from sweep.lease import LeaseHeld, check_free

    try:
        storage = resolve_storage(args.storage)
        storage.check_writable()
        continued = args.resume or args.sync
        if not continued:  # a remote storage without a tracking store says so before it is read
            tracking_uri = storage.tracking_uri(args.tracking_uri)
        check_free(storage, study.name)  # another driver runs it (a dry run too: its plan would not run now)
        started = _started_record(storage, study.name, continued)
        if continued:  # by default with the store its record names
            tracking_uri = storage.tracking_uri(args.tracking_uri, started["tracking_uri"])
    except (StorageError, LeaseHeld) as error:
        raise UsageError(str(error)) from None
    if started is not None:
        specs, base = _plan(args, study, *_started_gpus(started))  # the precision it started with
        _check_continued(started, specs)

    from sweep.tracking import TrackingUnavailable, check_store

    try:
        check_store(tracking_uri)
    except TrackingUnavailable as error:
        raise UsageError(str(error)) from None
    moved = started is not None and _moved_tracking(study.name, started, storage, tracking_uri)
    survey, probe = (None, None) if args.sync else _survey_cluster(args, address, storage)
    every = specs + ([] if base is None else [base])
    data = None if args.sync else _load_data(every, args.data_root, download=not args.dry_run)
    return Plan(
        sweep=study.name,
        specs=tuple(specs),
        study=study,
        search_base=base,
        storage=storage,
        tracking_uri=tracking_uri,
        started=started,
        # Sweeps started before launch ids have none: "".
        launch_id=uuid.uuid4().hex[:12] if started is None else started.get("launch", ""),
        address=address,
        data=data,
        survey=survey,
        probe=probe,
        tracking_moved=moved,
    )


def _survey_cluster(
    args: argparse.Namespace, address: str | None, storage: SweepStorage
) -> tuple[GpuSurvey | None, GpuProbe | None]:
    """Join the cluster at ``address`` (or use the Ray running here), check that each of its nodes sees a
    local ``storage``, and see what GPUs its trials can get: (its GPUs, what a task found on one live GPU
    node). A GPU that torch cannot use there stops the sweep here, with the one line a trial would fail
    with. (None, None) for a local Ray, which the launch starts (on this machine alone: nothing to check),
    and with ``--gpus none``."""
    if address is None and not ray_running_here():
        return None, None
    import ray

    if not ray.is_initialized():
        try:
            join_ray(address, verbose=args.verbose)
        except RayUnavailable as error:
            raise UsageError(str(error)) from None
    _check_shared_storage(storage)
    if args.gpus == "none":
        return None, None
    from sweep.gpus import survey_gpus

    survey = survey_gpus()
    return survey, _probe(args) if survey.live else None


def _check_shared_storage(storage: SweepStorage) -> None:
    """A local storage that a node of the joined cluster cannot see stops the sweep here: each trial there
    would fail at its first checkpoint (sweep.shared_storage)."""
    from sweep.shared_storage import check_shared_storage

    try:
        check_shared_storage(storage)
    except StorageError as error:
        raise UsageError(str(error)) from None


def _probe(args: argparse.Namespace) -> GpuProbe | None:
    """What a task finds on a live GPU node (sweep.gpus.probe_gpu_node); a GPU that torch cannot use stops
    the sweep here, with the one line a trial would fail with."""
    from sweep.gpus import ProbeFailed, probe_gpu_node

    try:
        probe = probe_gpu_node()
    except ProbeFailed as error:
        raise UsageError(str(error)) from None
    if probe is not None and probe.problem is not None:
        raise UsageError(
            f"a task on the cluster's GPU node {probe.node} {probe.problem}; so would every GPU trial (--gpus none: "
            "CPUs only)"
        )
    return probe


def _gpus_planned(args: argparse.Namespace, survey: GpuSurvey) -> bool:
    """Whether the trials ask for GPUs: always with ``--gpus require``, with ``auto`` when the cluster has
    GPUs now or its autoscaler can add some."""
    return args.gpus == "require" or (args.gpus == "auto" and survey.any)


def _dry_run(plan: Plan, args: argparse.Namespace) -> None:
    """Print the trials a launch would run, whether they get GPUs and what that was planned from, and the
    precision of each and why."""
    capability = plan.probe.capability if plan.probe else None
    if plan.started is not None:
        (gpus, capability, _), source = _started_gpus(plan.started), "the record of the started sweep"
    elif plan.survey is not None:
        gpus, source = _gpus_planned(args, plan.survey), f"the cluster: {plan.survey.describe()}"
        if plan.probe is not None:
            source += f"; a task on {plan.probe.node} found {plan.probe.name} (compute capability {capability[0]}.{capability[1]})"
    elif args.gpus == "none":  # on a local Ray and on a cluster joined (whose GPUs the pre-flight left unsurveyed)
        gpus, source = False, "the option: no trial asks for a GPU"
    else:
        from sweep.devices import cuda_problem

        problem = cuda_problem() if args.gpus == "auto" else None
        gpus = args.gpus == "require" or (args.gpus == "auto" and problem is None)
        source = "this machine, for a local Ray" + (f" (no GPU: {problem.why})" if problem else "")
    if plan.started is not None:
        specs, base = list(plan.specs), plan.search_base
    else:
        specs, base = _plan(args, plan.study, gpus, capability)
    print(_trial_table(specs))
    if base is not None:
        print(_search_line(plan.study.search, base, plan.study.seeds if args.seeds is None else args.seeds))
    print(f"{'GPU' if gpus else 'CPU-only'} trials (--gpus {args.gpus}), planned from {source}")
    reasons: dict[tuple[str, str], list[str]] = {}
    overrides = _overrides(args)
    for spec in specs + ([] if base is None else [base]):
        precision, why = _precision(spec, overrides, gpus, capability)
        reasons.setdefault((precision, why), []).append(spec.model.name)
    for (precision, why), models in reasons.items():
        print(f"precision {precision} for {', '.join(dict.fromkeys(models))}: {why}")


def _open_tracking(plan: Plan) -> tuple[TrackingWriter, str]:
    """Create the sweep's MLflow experiment (and an embedded store) if absent: the writer of its runs and
    the experiment's id."""
    from sweep.mirror import DeadLetters, writer_for
    from sweep.tracking import Tracker, TrackingUnavailable

    for name, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if plan.tracking_moved:  # later launches continue at the new store without being told
        plan.storage.write_record(
            plan.sweep, {**plan.started, "tracking_uri": plan.storage.portable(plan.tracking_uri)}
        )
    try:
        tracker = Tracker(plan.tracking_uri, plan.sweep, plan.artifact_root, plan.launch_id)
    except TrackingUnavailable as error:
        raise UsageError(str(error)) from None
    dead_letters = DeadLetters(plan.storage, plan.sweep)
    try:
        writer = writer_for(plan.tracking_uri, plan.sweep, plan.artifact_root, plan.launch_id, dead_letters)
    except StorageError as error:  # the dead letters of earlier launches could not be read
        raise UsageError(str(error)) from None
    return writer, tracker.experiment_id


def launch(plan: Plan, args: argparse.Namespace) -> int:
    """Run the sweep that passed :func:`preflight`: join or start Ray, create the MLflow experiment, run the
    trials with Tune, report how they ended and deliver what MLflow still lacks. With ``--sync``, only the
    delivery. Returns the exit status."""
    from sweep.mirror import replay_trials

    if args.sync:
        writer, _ = _open_tracking(plan)
        letters = writer.dead_letters.read()
        writer.start(writer.dead_letters, keep_earlier=False)  # tried again, first: what fails now is kept
        for letter in letters:
            writer.submit(letter.operation, *letter.args)
        from sweep.search import searched_specs

        specs = list(plan.specs) + searched_specs(plan.storage, plan.sweep)  # a search's trials, as it made them
        replayed = replay_trials(plan.storage, plan.sweep, specs, writer)
        again = f" and {len(letters)} writes set aside before" if letters else ""
        print(
            f"sweep {plan.sweep}: delivering what {replayed} trials reported{again} to {plan.tracking_uri}", flush=True
        )
        code = _deliver(writer, args, 0)
        if writer.pending():  # not every letter was tried: they stay
            writer.dead_letters.write([*letters, *writer.set_aside])
        else:
            writer.keep()
        return code

    # Keeping two checkpoints per trial makes Tune snapshot its state after every epoch, and warn about
    # it when epochs are short (a LeNet epoch takes seconds): intended here, so not worth a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from sweep.console import ConsoleProgress, quiet_libraries

    quiet_libraries(args.verbose)
    import ray
    from ray import tune

    from sweep.checkpoints import mend_lost_checkpoints
    from sweep.data import share_datasets
    from sweep.gpus import GpuSurvey, survey_gpus
    from sweep.mirror import TrackingCallback
    from sweep.search import searched_specs
    from sweep.trainable import NoRetryOnDeviceError, train_trial

    if not ray.is_initialized():
        try:
            join_ray(plan.address, verbose=args.verbose)
        except RayUnavailable as error:
            raise UsageError(str(error)) from None
    if plan.started is not None:  # as it started, whatever the cluster now has
        gpus, specs, base = _started_gpus(plan.started)[0], list(plan.specs), plan.search_base
    else:
        gpus = _gpus_planned(args, plan.survey or (survey_gpus() if args.gpus != "none" else GpuSurvey(0, 0)))
    if gpus and not ray.cluster_resources().get("GPU", 0):
        _wait_for_gpus(args.gpu_wait, args.gpus)
    probe = plan.probe or (_probe(args) if gpus and plan.started is None else None)  # a GPU node that came since
    capability = probe.capability if probe else None
    if plan.started is None:
        specs, base = _plan(args, plan.study, gpus, capability)
    writer, experiment_id = _open_tracking(plan)
    storage = plan.storage
    node_cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=1)
    datasets = share_datasets(plan.data)  # each once into the object store; a trial fetches its own
    trainable = tune.with_resources(tune.with_parameters(train_trial, datasets=datasets), _trial_resources)
    param_space = {
        "spec": tune.grid_search([spec.to_dict() for spec in specs]),
        "gpus": gpus,
        "node_cpus": node_cpus,
        "overhead_budget": args.overhead_budget,
    }
    search_options: dict[str, Any] = {}
    if base is not None:
        param_space, search_options = _search_space(plan, args, param_space, specs, base)
    if args.resume and tune.Tuner.can_restore(storage.path(plan.sweep)):
        for mend in mend_lost_checkpoints(storage.path(plan.sweep)):
            print(
                f"{mend.trial} resumes from {mend.source}: Tune's saved state names {mend.named}, "
                "which Tune deleted before the driver stopped",
                flush=True,
            )
        # Before any trial runs again: what the stopped driver's writer still held, and the epochs a resumed
        # trial will not report again (after its last uploaded result, up to the checkpoint it resumes from).
        replay_trials(storage, plan.sweep, specs + searched_specs(storage, plan.sweep), writer)
        # The param space again: Tune keeps it in its experiment state, which a driver stopped right
        # after creating the Tuner has not written yet.
        tuner = tune.Tuner.restore(
            storage.path(plan.sweep), trainable=trainable, resume_errored=True, param_space=param_space
        )
    else:
        # A new sweep, or one whose driver stopped after recording it and before Tune saved any state:
        # nothing of it ran, so it starts from the beginning (under the launch id it was recorded with).
        record = {
            "sweep": plan.sweep,
            "tracking_uri": storage.portable(plan.tracking_uri),
            "trial_keys": [s.key for s in specs],
            "launch": plan.launch_id,
            "gpus": gpus,
            "gpu_capability": None if capability is None else list(capability),
            "artifact_root": None if plan.artifact_root is None else storage.portable(plan.artifact_root),
        }
        storage.write_record(plan.sweep, record)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                # A trial that ends hands its worker process (torch and the data set already loaded) to the next
                # trial with the same resources: a free slot fills within a second, not after a new process starts.
                reuse_actors=True,
                max_concurrent_trials=args.max_concurrent,
                **search_options,
                trial_name_creator=_trial_dirname,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=plan.sweep,
                storage_path=storage.location,
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[NoRetryOnDeviceError(args.max_failures), TrackingCallback(plan.sweep), ConsoleProgress()],
                verbose=None if args.verbose else 0,
            ),
        )
    trials = (
        f"{len(specs)} trials"
        if base is None
        else f"{search_options['num_samples']} trials (the {len(specs)} plain twin{'s' * (len(specs) > 1)} first)"
    )
    print(
        f"sweep {plan.sweep}: {trials}, {'GPU' if gpus else 'CPU-only'} cluster, tracking at {plan.tracking_uri}",
        flush=True,
    )
    results = tuner.fit()
    outcomes, code = _summarize(results, writer, base is not None and plan.study.search.scheduler != "none")
    # What the storage kept and the callback never saw (a search's trials are known once it made them).
    replay_trials(storage, plan.sweep, specs + searched_specs(storage, plan.sweep), writer)
    code = _deliver(writer, args, code)
    writer.keep()
    if code != EXIT_WRITES_WAIT:  # with every run in MLflow: the study's other suites, as sweep.evaluate scores them
        _score_suites(plan, args)
    _print_outcomes(plan, outcomes, experiment_id)
    return code


def _score_suites(plan: Plan, args: argparse.Namespace) -> None:
    """Score the trained trials on each suite the study names besides the paper's (which every trial scored
    itself), with ``python -m sweep.evaluate``; what was scored before (a --resume) is not scored again."""
    from perturb import PAPER_SUITE
    from sweep import evaluate

    for suite in plan.study.suites:
        if suite == PAPER_SUITE:
            continue
        options = ["--storage", plan.storage.location, "--tracking-uri", plan.tracking_uri]
        options += ["--data-root", args.data_root] if args.data_root else []
        options += ["--address", plan.address] if plan.address else []
        evaluate.main([plan.study.reference, "--suite", suite, *options])


def _trial_slots(spec: TrialSpec, gpus: bool, node_cpus: float) -> int:
    """How many trials like ``spec`` the cluster holds at once."""
    import ray

    total = ray.cluster_resources()
    wanted = spec.resources(gpus, node_cpus)
    return int(min(total.get(kind.upper(), 0) // amount for kind, amount in wanted.items() if amount > 0))


def _search_space(
    plan: Plan, args: argparse.Namespace, param_space: dict[str, Any], twins: list[TrialSpec], base: TrialSpec
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The param space and the TuneConfig options of a study that searches (sweep.search): the twins first,
    then the searcher's points, each on every seed; every trial reports the search's metrics each epoch."""
    from sweep.search import search_setup

    search = plan.study.search
    seeds = plan.study.seeds if args.seeds is None else args.seeds
    slots = args.max_concurrent or _trial_slots(base, param_space["gpus"], param_space["node_cpus"])
    space, searcher, scheduler, trials = search_setup(search, base, twins, seeds, slots)
    # A trial that diverges reports no metric: the searcher takes that as a failed point, not Tune as an error.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    param_space = {**param_space, "spec": base.to_dict(), **space, "search_metrics": list(search.metrics)}
    return param_space, {"search_alg": searcher, "scheduler": scheduler, "num_samples": trials}


def _deliver(writer: TrackingWriter, args: argparse.Namespace, code: int) -> int:
    """Wait for MLflow to take the writes still waiting; one line and EXIT_WRITES_WAIT when it does not, and
    one line per trial whose writes MLflow refused for good (set aside as dead letters)."""
    waiting = writer.drain(args.tracking_wait)
    refused: dict[str, list[str]] = {}
    for letter in writer.set_aside:
        refused.setdefault(letter.trial_key, []).append(letter.error)
    for key, errors in refused.items():
        print(
            f"sweep.run: MLflow refused {len(errors)} writes of trial {key} for good ({errors[0]}): set aside in "
            f"{writer.dead_letters.path}; run the command again with --sync once the cause is mended",
            file=sys.stderr,
            flush=True,
        )
    if refused and not waiting:
        return code or EXIT_WRITES_WAIT
    if not waiting:
        return code
    print(
        f"sweep.run: {waiting} MLflow writes wait for {writer.tracking_uri} after {args.tracking_wait:g} s; every trial's results are "
        "kept in the sweep's storage: deliver them by running this command again with --sync (in place of --resume) once MLflow is back",
        file=sys.stderr,
        flush=True,
    )
    return code or EXIT_WRITES_WAIT


def _wait_for_gpus(seconds: float, mode: str) -> None:
    """Wait for GPU workers to join (an autoscaler starting them), or stop with one line: a trial that
    asks for a GPU the cluster will never have would wait forever."""
    import ray

    deadline = time.monotonic() + seconds
    print(f"waiting up to {seconds:g} s for GPU workers to join the Ray cluster (--gpus {mode})", flush=True)
    while time.monotonic() < deadline:
        if ray.cluster_resources().get("GPU", 0) > 0:
            return
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    raise UsageError(
        f"no GPU joined the Ray cluster in {seconds:g} s, and --gpus {mode} makes every trial ask for one: "
        "start GPU workers (min_workers of the GPU node type in cluster.yaml), or use --gpus none"
    )


def _summarize(results: Any, writer: TrackingWriter, early_stops: bool) -> tuple[list[TrialOutcome], int]:
    """Make sure the run of an errored trial ends FAILED, and report how the trials ended: (each trial's
    outcome, 1 when a trial failed or diverged, else 0)."""
    from sweep.tracking import reconcile_results

    outcomes = reconcile_results(results, writer, early_stops)
    _print_summary(outcomes)
    return outcomes, int(any(o.status in ("failed", "diverged") for o in outcomes))


def _print_summary(outcomes: list[TrialOutcome]) -> None:
    """The console report of a sweep's end: one line per failed or diverged trial (stderr), then the count
    of the finished ones (stdout)."""
    finished = stopped = 0
    for outcome in outcomes:
        spec = outcome.spec
        if outcome.status in ("finished", "stopped"):
            finished += outcome.status == "finished"
            stopped += outcome.status == "stopped"
            continue
        about = f"{spec.key} ({spec.model.name} on {spec.dataset}, seed {spec.seed})"
        print(f"{outcome.status.upper()} {about}: {outcome.reason}", file=sys.stderr)
    early = f", {stopped} stopped early by the search's scheduler" if stopped else ""
    print(f"{finished} of {len(outcomes)} trials finished{early}", flush=True)


def _print_outcomes(plan: Plan, outcomes: list[TrialOutcome], experiment_id: str) -> None:
    """The summary per model of how the trials ended, and the commands to look at the results."""
    from sweep.console import next_commands, summary_lines

    print("\n".join(["", *summary_lines(outcomes), ""]))
    print(
        "\n".join(next_commands(plan.study.reference, plan.storage.location, plan.tracking_uri, experiment_id)),
        flush=True,
    )


def _main(args: argparse.Namespace) -> int:
    if args.list:
        from sweep.catalog import STUDIES

        for name, study in STUDIES.items():
            print(f"{name:12} {len(study.trials()):3d} trials  {study.description}")
        return 0
    plan = preflight(args)
    if args.dry_run:
        _dry_run(plan, args)
        return 0
    from sweep.lease import LeaseHeld, SweepLease

    lease = SweepLease(plan.storage, plan.sweep)
    try:
        lease.take()  # checked again: another driver may have passed its pre-flight at the same time
    except (StorageError, LeaseHeld) as error:
        raise UsageError(str(error)) from None
    try:
        return launch(plan, args)
    finally:
        lease.release()


def main(argv: list[str] | None = None) -> int:
    return run_command("sweep.run", _parser(), _main, argv)


if __name__ == "__main__":
    sys.exit(main())
