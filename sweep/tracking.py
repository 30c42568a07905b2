"""MLflow tracking from the driver: exactly one run per trial key, whatever is retried or resumed.

Only the driver writes to MLflow, through a Tune callback, so trials need no tracking access and no two
processes race on the store (a fresh SQLite store written by parallel trial workers loses runs to its
schema creation). The run of a trial is found by its ``trial_key`` tag, so a retried trial, a resumed
sweep or a rerun continue the same run instead of opening another.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from ray import tune

from sweep.metrics import EPOCH_METRICS, parse_noise_metric
from sweep.specs import TrialSpec

__all__ = ["RESULTS_ARTIFACT", "TrackingUnavailable", "Tracker", "TrackingCallback", "open_client"]

RESULTS_ARTIFACT = "results.json"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or opened; the message is one line."""


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


def _check_server(uri: str) -> None:
    """Fail fast on an unreachable server: MLflow's own client retries for minutes before giving up."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(f"cannot reach the MLflow tracking server at {uri}: {reason}") from None


def open_client(tracking_uri: str) -> MlflowClient:
    """An MLflow client for ``tracking_uri``, after checking that a tracking server answers at all."""
    if tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)
    return MlflowClient(tracking_uri)


class Tracker:
    """The MLflow experiment of one sweep, and the run of each of its trials.

    Args:
        tracking_uri: ``sqlite:///...`` (embedded) or ``http(s)://`` (a tracking server).
        sweep: the experiment name.
        artifact_root: where a new experiment in an embedded store keeps its artifacts (a server decides
            for itself).
    """

    def __init__(self, tracking_uri: str, sweep: str, artifact_root: Path | None = None) -> None:
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = open_client(tracking_uri)
        self.sweep = sweep
        self.tags = _project_tags()
        self._run_ids: dict[str, str] = {}
        try:
            self.experiment_id = self._experiment(artifact_root)
        except MlflowException as error:
            first_line = str(error).strip().splitlines()[0]
            raise TrackingUnavailable(f"cannot open the MLflow store {tracking_uri}: {first_line}") from None

    def _experiment(self, artifact_root: Path | None) -> str:
        experiment = self.client.get_experiment_by_name(self.sweep)
        if experiment is not None:
            return experiment.experiment_id
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        try:
            return self.client.create_experiment(self.sweep, artifact_location=location)
        except MlflowException:
            experiment = self.client.get_experiment_by_name(self.sweep)  # created meanwhile by another driver
            if experiment is None:
                raise
            return experiment.experiment_id

    def find_run(self, key: str) -> str | None:
        """The id of the run of trial ``key`` (the latest, if an older engine left several), or None."""
        if key in self._run_ids:
            return self._run_ids[key]
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.trial_key = '{key}'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if runs:
            self._run_ids[key] = runs[0].info.run_id
            return self._run_ids[key]
        return None

    def open_run(self, spec: TrialSpec) -> str:
        """The run of ``spec``, created with its params and tags, or reopened (status RUNNING)."""
        run_id = self.find_run(spec.key)
        if run_id is not None:
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return run_id
        tags = {"sweep": self.sweep, "trial_key": spec.key, "model": spec.model.name, **self.tags}
        run = self.client.create_run(self.experiment_id, run_name=spec.key, tags=tags)
        params = [Param(name, str(value)) for name, value in spec.params().items()]
        self.client.log_batch(run.info.run_id, params=params)
        self._run_ids[spec.key] = run.info.run_id
        return run.info.run_id

    def _run_id(self, spec: TrialSpec) -> str:
        return self.find_run(spec.key) or self.open_run(spec)

    def log_result(self, spec: TrialSpec, result: dict[str, Any]) -> None:
        """Log one Tune result (one epoch, the last one carrying the noise scores) at step = epoch."""
        run_id = self._run_id(spec)
        step, now = int(result["epoch"]), int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), now, step)
            for name, value in result.items()
            if name in EPOCH_METRICS or parse_noise_metric(name) is not None
        ]
        tags = [RunTag("ray_node_id", str(result["node_id"]))] if "node_id" in result else []
        self.client.log_batch(run_id, metrics=metrics, tags=tags)

    def finish(self, spec: TrialSpec, final: dict[str, Any]) -> None:
        """End the run of a trial that returned: FINISHED with the exact (noise, level, accuracy) rows as
        an artifact, or, for a diverged trial, FAILED with tags ``health=diverged`` and ``health_reason``."""
        run_id = self._run_id(spec)
        if final.get("health") == "diverged":
            self.client.log_batch(run_id, tags=[RunTag("health", "diverged"), RunTag("health_reason", str(final["health_reason"]))])
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            return
        rows = []
        for name, value in final.items():
            parsed = parse_noise_metric(name)
            if parsed is not None:
                rows.append({"noise": parsed[0], "level": parsed[1], "accuracy": float(value)})
        self.client.log_dict(run_id, {"trial_key": spec.key, "clean_accuracy": final["test_acc"], "rows": rows}, RESULTS_ARTIFACT)
        self.client.set_tag(run_id, "health", "healthy")
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def fail(self, spec: TrialSpec, reason: str) -> None:
        """End the run FAILED, with the reason as a tag."""
        run_id = self._run_id(spec)
        self.client.set_tag(run_id, "error", reason[:5000])
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

    def note_restart(self, spec: TrialSpec, restarts: int) -> None:
        """Record on the run how often its trial was restarted after a failure (tag ``restarts``)."""
        run_id = self._run_id(spec)
        self.client.set_tag(run_id, "restarts", str(restarts))

    def status(self, key: str) -> str | None:
        """MLflow status of the run of ``key`` (``FINISHED``, ``RUNNING``, ``FAILED``...), None if it has none."""
        run_id = self.find_run(key)
        return None if run_id is None else self.client.get_run(run_id).info.status


class TrackingCallback(tune.Callback):
    """Mirrors Tune's trial events into MLflow, on the driver.

    Tune pickles its callbacks with the experiment (``Tuner.restore`` brings them back), so this one
    keeps only where to log and opens its :class:`Tracker` on first use.
    """

    def __init__(self, tracking_uri: str, sweep: str, artifact_root: Path | None = None) -> None:
        self.config = (tracking_uri, sweep, artifact_root)
        self._tracker: Tracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_tracker": None}

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(*self.config)
        return self._tracker

    @staticmethod
    def _spec(trial: Any) -> TrialSpec:
        return TrialSpec.from_dict(trial.config["spec"])

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.open_run(self._spec(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.tracker.log_result(self._spec(trial), result)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # The worker died; Tune restarts the trial from its last checkpoint, into the same run.
        self.tracker.note_restart(self._spec(trial), trial.num_failures)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.finish(self._spec(trial), trial.last_result)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.fail(self._spec(trial), _error_summary(trial))


def _error_summary(trial: Any) -> str:
    """The last line of the trial's error (the exception), or a generic reason."""
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        lines = [line for line in Path(error_file).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return "trial errored"
