"""MLflow tracking from the driver: one run per trial and launch, every epoch logged once.

Only the driver writes to MLflow (through sweep.mirror's background writer), so trials need no tracking
access and no two processes race on the store (a fresh SQLite store written by parallel trial workers
loses runs to its schema creation). Every operation of :class:`Tracker` is idempotent, so that the
writer may retry it after an outage and a resumed sweep may replay what Tune kept:

- the run of a trial is found by its ``trial_key`` and ``launch`` tags (a launch is one started sweep,
  whatever is retried or resumed in it); a later launch of the same trial key opens a new run that names
  the one it supersedes (tag ``supersedes``), and a FINISHED run is never reopened or changed;
- a result is logged at step = epoch only if the run holds no point at that step yet.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import read_mlflow_creds

from models import LENET_VARIANTS, plain_name
from perturb import PAPER_SUITE
from sweep.cli import first_line
from sweep.devices import DEVICE_ERROR
from sweep.metrics import EPOCH_METRICS, noise_curves, noise_metric, parse_noise_metric
from sweep.specs import TrialSpec
from sweep.storage import ARTIFACT_FOLDER, folder_problem

__all__ = [
    "RESULTS_ARTIFACT",
    "SUITE_ARTIFACT",
    "TrackingUnavailable",
    "Tracker",
    "TrialOutcome",
    "check_store",
    "failure_reason",
    "launch_trial_keys",
    "log_suite_scores",
    "open_client",
    "reconcile_results",
    "run_color",
    "trial_status",
]

# URI schemes of MLflow's tracking stores ("": a local path, MLflow's file store; "postgresql+psycopg2": "postgresql").
TRACKING_SCHEMES = ("", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
FILE_SCHEMES = ("", "file")  # MLflow 3 refuses these stores unless MLFLOW_ALLOW_FILE_STORE is true
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy opens them, through a driver of its own
RESULTS_ARTIFACT = "results.json"
SUITE_ARTIFACT = "suites/{suite}.json"  # the scores of a suite other than the paper's (sweep.evaluate)
# Tags MLflow's UI reads. The experiment's kind: "Machine learning", not "GenAI apps & agents" (MLflow 3 UIs
# without the sidebar's GenAI / Model training switch read it; 3.17's decides by that switch alone).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# A run's colour in the runs list and the charts, where MLflow would pick one by run id (two runs often
# share it): plain models in oranges (as MLflow draws the group pushpull=False), push-pull models in blues,
# a model and its twin in the same shade.
RUN_COLOR_TAG = "mlflow.runColor"
PLAIN_COLORS = ("#a33b00", "#d9541a", "#f08a3c", "#f7b877")
PUSHPULL_COLORS = ("#1f4e9c", "#2f6fd0", "#5b95e6", "#93bdf2")


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or opened; the message is one line. ``error_code``: MLflow's code
    of the error behind it, where there is one (see sweep.mirror.is_permanent)."""

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


def _project_tags() -> dict[str, str]:
    tags = {"project_version": metadata.version("pushpull-sweep")}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            tags["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed wheel): the version tag has to do
    return tags


def run_color(spec: TrialSpec) -> str:
    """The colour of ``spec``'s run (tag :data:`RUN_COLOR_TAG`): its hue says plain or push-pull, its shade
    which model (LeNet A..D each their own; a WRN by a hash of its plain name)."""
    palette = PUSHPULL_COLORS if spec.model.pushpull else PLAIN_COLORS
    plain = plain_name(spec.model.name)
    shade = list(LENET_VARIANTS).index(plain) if plain in LENET_VARIANTS else zlib.crc32(plain.encode())
    return palette[shade % len(palette)]


def _check_server(uri: str) -> None:
    """Fail fast on an unreachable server (MLflow's own client retries for minutes before giving up), and
    on one that refuses our credentials (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, else
    MLflow's credentials file ``~/.mlflow/credentials``, as MLflow's client sends them to a server run with
    its basic-auth app)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:  # ValueError: a URL that does not parse
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(f"cannot reach the MLflow tracking server at {uri}: {reason}") from None
    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = read_mlflow_creds()  # the environment's, else those of ~/.mlflow/credentials, as MLflow's client
    if user is not None and password is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as error:
        if error.code not in (401, 403):
            return  # an answer: the server is there; MLflow's client reports anything else itself
        if user is None or password is None:
            raise TrackingUnavailable(
                f"the MLflow tracking server at {uri} asks for credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or put them in ~/.mlflow/credentials"
            ) from None
        raise TrackingUnavailable(
            f"the MLflow tracking server at {uri} refused user {user!r} (HTTP {error.code}): check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise TrackingUnavailable(
            f"cannot reach the MLflow tracking server at {uri}: {getattr(error, 'reason', error)}"
        ) from None


def _scheme(tracking_uri: str) -> str:
    """The kind of store ``tracking_uri`` names: ``postgresql`` for ``postgresql+psycopg://...``, "" for a path."""
    return tracking_uri.partition("://")[0].partition("+")[0] if "://" in tracking_uri else ""


def _check_scheme(tracking_uri: str) -> None:
    """Raise TrackingUnavailable (one line) for a URI of a kind MLflow has no tracking store for: its own
    client would raise a long exception about the model registry."""
    if _scheme(tracking_uri) not in TRACKING_SCHEMES:
        raise TrackingUnavailable(
            f"MLflow has no tracking store for {tracking_uri}: use http(s)://HOST:PORT (a tracking server) or "
            "sqlite:///PATH (an embedded store)"
        )


def open_client(tracking_uri: str) -> MlflowClient:
    """An MLflow client for ``tracking_uri``, after checking that MLflow has a store for it and that a
    tracking server answers at all, or after re-rooting the artifacts of an embedded store that was moved
    (:func:`follow_moved_store`)."""
    _check_scheme(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)
    elif tracking_uri.startswith("sqlite:///"):
        follow_moved_store(Path(tracking_uri.removeprefix("sqlite:///")))
    try:
        return MlflowClient(tracking_uri)
    except (MlflowException, ImportError) as error:  # a refused file store, a database without its driver
        raise TrackingUnavailable(f"cannot open the MLflow store {tracking_uri}: {first_line(error)}") from None


def follow_moved_store(database: Path) -> None:
    """Point the experiments of the embedded store ``database`` at the artifact folder beside it, when
    the store was moved or copied with its storage folder.

    MLflow keeps absolute artifact URIs (``file:///<storage>/mlartifacts/<run id>/artifacts``) and has no
    call to change them, so this rewrites the two columns that hold them (``experiments.artifact_location``,
    ``runs.artifact_uri``), and only for experiments whose artifacts lie in a local ``mlartifacts`` folder
    (the ones sweep.run creates for a local storage): the old prefix becomes ``<folder of database>/mlartifacts``.
    """
    if not database.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            _reroot_experiments(connection, (database.parent / ARTIFACT_FOLDER).resolve().as_uri())
    except sqlite3.Error as error:  # a file that is no SQLite database, or one locked or read-only
        raise _unreadable(database, error) from None


def _check_database(database: Path) -> None:
    """Raise TrackingUnavailable (one line) when the file ``database`` is not a SQLite database that this
    process can read; opened read-only, so that nothing changes, unless a writer killed mid-transaction (a
    driver killed while it logged) left its rollback journal: only a read-write connection may roll that
    back (read-only, SQLite says "attempt to write a readonly database"), which restores the last committed
    state, as MLflow's own first connection would."""
    mode = "rw" if database.with_name(f"{database.name}-journal").exists() else "ro"
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode={mode}", uri=True)) as connection:
            connection.execute("SELECT 1 FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        raise _unreadable(database, error) from None


def _unreadable(database: Path, error: sqlite3.Error) -> TrackingUnavailable:
    return TrackingUnavailable(f"cannot read the MLflow store sqlite:///{database}: {error}")


def _reroot_experiments(connection: sqlite3.Connection, here: str) -> None:
    """:func:`follow_moved_store` on an open store: the experiments of the ``mlartifacts`` folder that is
    not ``here`` (a URI) are moved to ``here``."""
    has_experiments = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'experiments'"
    ).fetchone()
    if has_experiments is None:  # an empty file: MLflow makes its tables when it first opens it
        return
    experiments = connection.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall()
    for experiment_id, location in experiments:
        local = str(location).startswith("file:")  # artifacts on S3 stay where they are when the store moves
        if location == here or not local or not str(location).endswith(f"/{ARTIFACT_FOLDER}"):
            continue
        connection.execute(
            "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
            "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
            (here, len(location) + 1, experiment_id, len(location) + 1, f"{location}/"),
        )
        connection.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (here, experiment_id)
        )


def check_store(tracking_uri: str) -> None:
    """Raise TrackingUnavailable when the store at ``tracking_uri`` cannot be used, creating nothing: a
    tracking server must answer (:func:`_check_server`); for an embedded ``sqlite:///PATH`` store, the
    folder of PATH must be creatable and writable and PATH, if it exists, a SQLite database; a file store
    must be allowed (MLFLOW_ALLOW_FILE_STORE), a database must have its driver installed; a URI of another
    scheme must name a kind of store MLflow has (Databricks), which MLflow's client then checks."""
    _check_scheme(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)
    elif tracking_uri.startswith("sqlite:///") and tracking_uri != "sqlite:///:memory:":
        path = Path(tracking_uri.removeprefix("sqlite:///")).expanduser()
        problem = f"{path} is not a file" if path.exists() and not path.is_file() else folder_problem(path.parent)
        if problem is not None:
            raise TrackingUnavailable(f"cannot create the MLflow store {tracking_uri}: {problem}")
        if path.is_file():
            _check_database(path)
    elif _scheme(tracking_uri) in FILE_SCHEMES and not MLFLOW_ALLOW_FILE_STORE.get():
        raise TrackingUnavailable(
            f"MLflow keeps no runs in a file store such as {tracking_uri} unless MLFLOW_ALLOW_FILE_STORE=true: "
            "use sqlite:///PATH (an embedded store) or http(s)://HOST:PORT (a tracking server)"
        )
    elif _scheme(tracking_uri) in DATABASE_SCHEMES:
        _check_database_driver(tracking_uri)


def launch_trial_keys(tracking_uri: str, sweep: str, launch: str) -> set[str]:
    """The trial keys of the runs of launch ``launch`` of sweep ``sweep`` in the store at ``tracking_uri``
    (every run of the sweep's experiment for a launch id of "", an engine's before launch ids); none when
    the store has no such experiment. An embedded store that does not exist is not created."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return set()
    client = open_client(tracking_uri)
    keys: set[str] = set()
    try:
        experiment = client.get_experiment_by_name(sweep)
        token = None
        while experiment is not None:
            runs = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.launch = '{launch}'" if launch else "",
                max_results=1000,
                page_token=token,
            )
            keys.update(run.data.tags.get("trial_key", "") for run in runs)
            token = runs.token
            if not token:
                break
    except MlflowException as error:
        raise TrackingUnavailable(f"cannot read the MLflow store {tracking_uri}: {first_line(error)}") from None
    return keys - {""}


def _check_database_driver(tracking_uri: str) -> None:
    """Raise TrackingUnavailable (one line) when SQLAlchemy has no driver for the database ``tracking_uri``
    names; connects to nothing (SQLAlchemy loads the driver when it makes the engine, and connects later)."""
    import sqlalchemy

    try:
        sqlalchemy.create_engine(tracking_uri).dispose()
    except (ImportError, sqlalchemy.exc.ArgumentError) as error:
        extra = " (pip install 'pushpull-sweep[postgres]')" if _scheme(tracking_uri) == "postgresql" else ""
        raise TrackingUnavailable(f"cannot open the MLflow store {tracking_uri}: {first_line(error)}{extra}") from None


def trial_status(error: object, metrics: dict[str, Any]) -> str:
    """How a trial ended: ``failed`` (an error ended it), ``diverged`` (its health monitor stopped it, as its
    last reported ``metrics`` say) or ``finished``."""
    if error is not None:
        return "failed"
    return "diverged" if metrics.get("health") == "diverged" else "finished"


def failure_reason(error: object, metrics: dict[str, Any]) -> str:
    """Why a failed trial failed, in one line: the line of a trial that could not use its GPU (which it
    reported before its error), else the last line of its error."""
    if DEVICE_ERROR in metrics:
        return str(metrics[DEVICE_ERROR])
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended (:func:`trial_status`, or ``stopped`` early by a search's scheduler), its last
    reported ``metrics`` (the noise scores when it finished or stopped) and ``reason``, why it did not finish
    ("" when it did or stopped)."""

    spec: TrialSpec
    status: str
    metrics: dict[str, Any]
    reason: str = ""


def reconcile_results(results: Any, writer: Any, early_stops: bool = False) -> list[TrialOutcome]:
    """How each trial of Tune's ``results`` (a ResultGrid, or any iterable of results with ``config``,
    ``error`` and ``metrics``) ended, in order; the run of each failed trial is made to end FAILED through
    ``writer.submit("fail", spec, reason)`` (sweep.mirror's TrackingWriter), since a trial that died may not
    have said so itself. A diverged trial's run already ended FAILED when it reported. ``early_stops``: a
    search's scheduler stopped trials early, so a searched trial with fewer epochs than its recipe's was
    ``stopped`` (without one, it was interrupted)."""
    outcomes = []
    for result in results:
        spec, metrics = TrialSpec.from_config(result.config), dict(result.metrics or {})
        status, reason = trial_status(result.error, metrics), ""
        trained = int(metrics.get("epoch", spec.recipe.epochs))
        if early_stops and status == "finished" and result.config.get("searched") and trained < spec.recipe.epochs:
            status = "stopped"  # by the search's scheduler (ASHA): its scores are of a shorter training
        if status == "failed":
            reason = failure_reason(result.error, metrics)
            writer.submit("fail", spec, reason)
        elif status == "diverged":
            reason = str(metrics.get("health_reason", ""))
        outcomes.append(TrialOutcome(spec, status, metrics, reason))
    return outcomes


def _log_curves(client: MlflowClient, run: Any, scores: dict[str, float], suite: str = PAPER_SUITE) -> None:
    """Log the noise curves of ``scores`` (see sweep.metrics) that ``run`` lacks: each curve's points in
    one batch with its levels (metric and param), so that a curve is in a run whole or not at all. The
    levels metric alone is added to a curve logged before it existed."""
    for curve in noise_curves(scores, suite):
        now = int(time.time() * 1000)
        points = []
        if curve.metric not in run.data.metrics:
            points += [Metric(curve.metric, accuracy, now, step) for step, accuracy in enumerate(curve.accuracies)]
        if curve.level_metric not in run.data.metrics:
            points += [Metric(curve.level_metric, level, now, step) for step, level in enumerate(curve.levels)]
        if not points:
            continue
        held = run.data.params.get(curve.levels_param)
        params = [] if held == curve.levels_text else [Param(curve.levels_param, curve.levels_text)]
        client.log_batch(run.info.run_id, metrics=points, params=params)


def log_suite_scores(client: MlflowClient, run_id: str, suite: str, step: int, scores: dict) -> int:
    """Add the scores of ``suite`` ({Perturbation: accuracy in percent}) to a trial's run, which stays as
    it is otherwise (a FINISHED run stays FINISHED). Only the metrics the run lacks are logged, at ``step``
    (the epoch the scored checkpoint ends), so that scoring again changes nothing. The artifact
    :data:`SUITE_ARTIFACT` (every score of the suite the run then holds) is written before the metrics: a
    run that holds the metrics holds the artifact. Returns the number of metrics logged."""
    run = client.get_run(run_id)
    held = run.data.metrics
    new = {noise_metric(s.noise, s.level, suite): float(a) for s, a in scores.items()}
    new = {name: value for name, value in new.items() if name not in held}
    if not new:
        return 0
    every = {**held, **new}
    rows = [
        {"noise": parsed[0], "level": parsed[1], "accuracy": value}
        for name, value in every.items()
        if (parsed := parse_noise_metric(name, suite)) is not None
    ]
    client.log_dict(run_id, {"suite": suite, "rows": rows}, SUITE_ARTIFACT.format(suite=suite))
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, value, now, step) for name, value in new.items()])
    _log_curves(client, run, every, suite)  # the run as read above: only metrics were logged since
    return len(new)


class Tracker:
    """The MLflow experiment of one sweep, and the run of each of its trials in one launch.

    Args:
        tracking_uri: ``sqlite:///...`` (embedded) or ``http(s)://`` (a tracking server).
        sweep: the experiment name.
        artifact_root: where a new experiment keeps its artifacts (a URI: beside the sweep, see
            SweepStorage.artifact_root); None: the store's default.
        launch: the id of the started sweep (``<sweep>.sweep.json``); runs of other launches are kept.
    """

    def __init__(self, tracking_uri: str, sweep: str, artifact_root: str | None = None, launch: str = "") -> None:
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = open_client(tracking_uri)
        self.sweep = sweep
        self.launch = launch
        self.tags = _project_tags()
        self._run_ids: dict[str, str] = {}
        self._logged_steps: dict[str, set[int]] = {}
        self._complete: set[str] = set()  # runs known to hold every param of their spec
        try:
            self.experiment_id = self._experiment(artifact_root)
        except MlflowException as error:
            raise TrackingUnavailable(
                f"cannot open the MLflow store {tracking_uri}: {first_line(error)}", error.error_code
            ) from None

    def _experiment(self, artifact_root: str | None) -> str:
        experiment = self.client.get_experiment_by_name(self.sweep)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(
                self.sweep, artifact_location=artifact_root, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except MlflowException:
            experiment = self.client.get_experiment_by_name(self.sweep)  # created meanwhile by another driver
            if experiment is None:
                raise
            return experiment.experiment_id

    def _runs_of(self, key: str) -> list:
        """Every run of trial ``key`` in the experiment, the latest first."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.trial_key = '{key}'",
            order_by=["attributes.start_time DESC"],
            max_results=100,
        )

    def find_run(self, key: str) -> str | None:
        """The id of this launch's run of trial ``key`` (the latest, if an older engine left several), or None."""
        if key not in self._run_ids:
            mine = [r for r in self._runs_of(key) if r.data.tags.get("launch", "") == self.launch]
            if not mine:
                return None
            self._run_ids[key] = mine[0].info.run_id
        return self._run_ids[key]

    def open_run(self, spec: TrialSpec) -> str:
        """This launch's run of ``spec``: created with its params and tags (and ``supersedes``, the latest
        run of the same trial key from another launch), or found again; reopened as RUNNING unless it
        FINISHED. Returns its id."""
        run_id = self.find_run(spec.key)
        if run_id is not None:
            if self.client.get_run(run_id).info.status != "FINISHED":
                self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self._complete_params(run_id, spec)
            return run_id
        tags = {
            "sweep": self.sweep,
            "trial_key": spec.key,
            "model": spec.model.name,
            "launch": self.launch,
            RUN_COLOR_TAG: run_color(spec),
            **self.tags,
        }
        earlier = self._runs_of(spec.key)
        if earlier:
            tags["supersedes"] = earlier[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=spec.run_name, tags=tags)
        params = [Param(name, str(value)) for name, value in spec.params().items()]
        self.client.log_batch(run.info.run_id, params=params)  # if this fails, the run found again gets them
        self._run_ids[spec.key] = run.info.run_id
        self._complete.add(run.info.run_id)
        return run.info.run_id

    def _complete_params(self, run_id: str, spec: TrialSpec) -> None:
        """Log the params of ``spec`` that the run lacks: a run created just before the store went away
        has none (its params are logged after it is created), and is found again by its tags."""
        if run_id in self._complete:
            return
        held = self.client.get_run(run_id).data.params
        missing = [Param(name, str(value)) for name, value in spec.params().items() if name not in held]
        if missing:
            self.client.log_batch(run_id, params=missing)
        self._complete.add(run_id)

    def _find_or_create_run(self, spec: TrialSpec) -> str:
        """The run of ``spec`` in this launch, opened (created) when it has none yet; a run found again gets
        the params it lacks."""
        run_id = self.find_run(spec.key)
        if run_id is None:
            return self.open_run(spec)
        self._complete_params(run_id, spec)
        return run_id

    def _steps(self, run_id: str) -> set[int]:
        """The steps (epochs) the run already holds a point at."""
        if run_id not in self._logged_steps:
            self._logged_steps[run_id] = {m.step for m in self.client.get_metric_history(run_id, "epoch")}
        return self._logged_steps[run_id]

    def log_result(self, spec: TrialSpec, result: dict[str, Any]) -> None:
        """Log one Tune result (one epoch, the last one carrying the noise scores) at step = epoch, unless
        the run already holds that step (a replayed or re-reported epoch)."""
        run_id = self._find_or_create_run(spec)
        step, now = int(result["epoch"]), int(time.time() * 1000)
        if step in self._steps(run_id):
            return
        metrics = [
            Metric(name, float(value), now, step)
            for name, value in result.items()
            if name in EPOCH_METRICS or parse_noise_metric(name) is not None
        ]
        tags = [RunTag("ray_node_id", str(result["node_id"]))] if "node_id" in result else []
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self._steps(run_id).add(step)

    def finish(self, spec: TrialSpec, final: dict[str, Any]) -> None:
        """End the run of a trial that returned: FINISHED with the exact (noise, level, accuracy) rows as
        an artifact, or, for a diverged trial, FAILED with tags ``health=diverged`` and ``health_reason``.
        A run that already FINISHED is left as it is."""
        run_id = self._find_or_create_run(spec)
        run = self.client.get_run(run_id)
        if run.info.status == "FINISHED":
            return
        if final.get("health") == "diverged":
            self.client.log_batch(
                run_id, tags=[RunTag("health", "diverged"), RunTag("health_reason", str(final["health_reason"]))]
            )
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            return
        rows = []
        for name, value in final.items():
            parsed = parse_noise_metric(name)
            if parsed is not None:
                rows.append({"noise": parsed[0], "level": parsed[1], "accuracy": float(value)})
        self.client.log_dict(
            run_id, {"trial_key": spec.key, "clean_accuracy": final["test_acc"], "rows": rows}, RESULTS_ARTIFACT
        )
        _log_curves(self.client, run, final)
        for stale in ("health_reason", "error"):  # from an earlier attempt of this launch
            if stale in run.data.tags:
                self.client.delete_tag(run_id, stale)
        self.client.set_tag(run_id, "health", "healthy")
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def fail(self, spec: TrialSpec, reason: str) -> None:
        """End the run FAILED, with the reason as a tag; a run that already FINISHED is left as it is."""
        run_id = self._find_or_create_run(spec)
        if self.client.get_run(run_id).info.status == "FINISHED":
            return
        self.client.set_tag(run_id, "error", reason[:5000])
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

    def note_restart(self, spec: TrialSpec, restarts: int) -> None:
        """Record on the run how often its trial was restarted after a failure (tag ``restarts``)."""
        run_id = self._find_or_create_run(spec)
        self.client.set_tag(run_id, "restarts", str(restarts))

    def status(self, key: str) -> str | None:
        """MLflow status of this launch's run of ``key`` (``FINISHED``, ``RUNNING``...), None if it has none."""
        run_id = self.find_run(key)
        return None if run_id is None else self.client.get_run(run_id).info.status
