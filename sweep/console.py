"""What ``python -m sweep.run`` prints: one compact progress view, a summary per model, the next commands.

On a terminal the view is a table of the trials redrawn in place; piped to a file it is plain lines, one
per event (trial started, ended) and per reported epoch, at most one every ``PIPED_EPOCH_INTERVAL_S``
per trial (the first and the last epoch always). Ray's and Tune's own output is off unless ``--verbose``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ray import tune

from perturb import NOISES
from sweep.cli import aggregate_command, format_table
from sweep.devices import DEVICE_ERROR
from sweep.metrics import parse_noise_metric
from sweep.specs import TrialSpec
from sweep.tracking import TrialOutcome, failure_reason, trial_status

__all__ = [
    "ConsoleProgress",
    "next_commands",
    "quiet_libraries",
    "runs_view_url",
    "summary_lines",
]

PIPED_EPOCH_INTERVAL_S = 30.0
REDRAW_INTERVAL_S = 0.5
# The runs of an experiment in the MLflow UI (3.x), as a table; without workflowType MLflow 3 opens an
# experiment on its GenAI overview. compareRunsMode=CHART shows the chart view instead.
RUNS_VIEW = "#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def quiet_libraries(verbose: bool) -> None:
    """Before Ray starts: Tune's old, silent-at-verbose-0 reporter, Ray's loggers at ERROR and MLflow's at
    WARNING (no "Creating initial MLflow database tables"), unless ``verbose``. A user's own setting of
    ``RAY_AIR_NEW_OUTPUT`` wins."""
    if verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


@dataclass
class _Row:
    spec: TrialSpec
    epoch: int = 0
    train_loss: float | None = None
    test_acc: float | None = None
    status: str = "pending"

    def cells(self) -> tuple[str, ...]:
        loss = "-" if self.train_loss is None else f"{self.train_loss:.4f}"
        acc = "-" if self.test_acc is None else f"{self.test_acc:.2f}"
        epochs = f"{self.epoch}/{self.spec.recipe.epochs}"
        return (self.spec.run_name, self.spec.model.name, str(self.spec.seed), epochs, loss, acc, self.status)


HEADER = ("trial", "model", "seed", "epoch", "train loss", "test acc %", "status")


class ConsoleProgress(tune.Callback):
    """The progress view of a sweep's trials (trial, model, seed, epoch/total, train loss, last test
    accuracy, status), on the driver. ``interactive``: redraw a table in place (a terminal) rather than
    print lines (a pipe or a file)."""

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.rows: dict[str, _Row] = {}
        self.started = time.monotonic()
        self._printed_at: dict[str, float] = {}
        self._drawn_lines = 0
        self._drawn_at = 0.0

    def _row(self, trial: Any) -> _Row:
        """The row of ``trial``, made on its first event: the spec is parsed once, not on every result."""
        if trial.trial_id not in self.rows:
            self.rows[trial.trial_id] = _Row(TrialSpec.from_config(trial.config))
        return self.rows[trial.trial_id]

    def _line(self, row: _Row, event: str) -> None:
        elapsed = time.monotonic() - self.started
        spec = row.spec
        text = f"[{elapsed:6.0f}s] {spec.run_name} ({spec.model.name}, seed {spec.seed}) {event}"
        self._print([text])

    def _print(self, lines: list[str]) -> None:
        if self.interactive and self._drawn_lines:
            sys.stdout.write(f"\x1b[{self._drawn_lines}F\x1b[J")  # up to the table's first line, clear below
            self._drawn_lines = 0
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()

    def _redraw(self, trials: Iterable[Any], force: bool = False) -> None:
        if not self.interactive or (not force and time.monotonic() - self._drawn_at < REDRAW_INTERVAL_S):
            return
        for trial in trials:
            self._row(trial)  # a row for every trial, pending until a hook says otherwise
        lines = format_table([HEADER, *(row.cells() for row in self.rows.values())])
        self._print(lines)
        self._drawn_lines, self._drawn_at = len(lines), time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row.status = "running"
        if not self.interactive:
            self._line(row, "started" if row.epoch == 0 else f"restarted after epoch {row.epoch}")
        self._redraw(trials, force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        row = self._row(trial)
        if "train_loss" in result:
            row.epoch, row.train_loss = int(result["epoch"]), float(result["train_loss"])
        if "test_acc" in result:
            row.test_acc = float(result["test_acc"])
        now = time.monotonic()
        due = now - self._printed_at.get(row.spec.key, 0.0) >= PIPED_EPOCH_INTERVAL_S
        if not self.interactive and "train_loss" in result and (due or row.epoch == row.spec.recipe.epochs):
            self._printed_at[row.spec.key] = now
            acc = "" if "test_acc" not in result else f", test acc {row.test_acc:.2f} %"
            self._line(row, f"epoch {row.epoch}/{row.spec.recipe.epochs}: train loss {row.train_loss:.4f}{acc}")
        self._redraw(trials)

    def _ended(self, trials: list, trial: Any, failed: bool) -> None:
        # Tune calls these hooks before it marks the trial TERMINATED or ERROR.
        row = self._row(trial)
        row.status = "failed" if failed else trial_status(None, trial.last_result or {})
        if self.interactive and row.status == "finished":
            self._redraw(trials, force=True)
            return
        reason = ""
        if row.status == "diverged":
            reason = f": {trial.last_result.get('health_reason', '')}"
        elif row.status == "failed" and DEVICE_ERROR in (trial.last_result or {}):
            reason = f": {failure_reason(None, trial.last_result)}"
        elif row.status == "failed" and getattr(trial, "error_file", None):
            reason = f": see {trial.error_file}"
        self._line(row, f"{row.status}{reason}")
        self._redraw(trials, force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, failed=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self._row(trial)
        row.status = f"restarting ({trial.num_failures})"
        self._line(row, f"lost its worker after epoch {row.epoch}: restarting from its last checkpoint")
        self._redraw(trials, force=True)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; a resumed sweep draws its view afresh, for the
        # console it runs in now (a sweep started in a terminal may go on in a pipe).
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()


def _model_label(spec: TrialSpec) -> str:
    label = f"{spec.dataset} {spec.model.name}"
    return f"{label} h={spec.model.h:g} alpha={spec.model.alpha:g}" if spec.model.pushpull else label


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "-"


def summary_lines(outcomes: Sequence[TrialOutcome]) -> list[str]:
    """One row per model (over its seeds): clean test accuracy and the mean accuracy over the levels of
    each of the paper's noises, in percent, of the trials that finished; and how its trials ended."""
    groups: dict[str, list[TrialOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault(_model_label(outcome.spec), []).append(outcome)
    rows = [("model", "trials", "clean", *(f"{noise} (mean)" for noise in NOISES), "status")]
    for label, group in groups.items():
        finished = [o.metrics for o in group if o.status == "finished"]
        by_noise: dict[str, list[float]] = {noise: [] for noise in NOISES}
        for metrics in finished:
            for name, value in metrics.items():
                parsed = parse_noise_metric(name)
                if parsed is not None and parsed[0] in by_noise:
                    by_noise[parsed[0]].append(float(value))
        statuses = {s: sum(o.status == s for o in group) for s in ("finished", "diverged", "failed")}
        status = ", ".join(f"{n} {s}" for s, n in statuses.items() if n)
        clean = _mean([float(m["test_acc"]) for m in finished if "test_acc" in m])
        rows.append((label, str(len(group)), clean, *(_mean(by_noise[n]) for n in NOISES), status))
    return format_table(rows)


def runs_view_url(tracking_uri: str, experiment_id: str, ui_address: str = "http://127.0.0.1:5000") -> str:
    """The URL of the experiment's runs table: on the tracking server itself, or on ``mlflow ui`` at
    ``ui_address`` for an embedded store."""
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else ui_address
    return f"{base.rstrip('/')}/{RUNS_VIEW.format(experiment_id=experiment_id)}"


def next_commands(sweep: str, storage: str, tracking_uri: str, experiment_id: str) -> list[str]:
    """What to run next, with the real paths: the MLflow UI on the sweep's runs, and the tables and figures."""
    lines = ["next:"]
    if not tracking_uri.startswith(("http://", "https://")):
        lines.append(f"  mlflow ui --backend-store-uri {tracking_uri}")
    lines += [
        f"  open {runs_view_url(tracking_uri, experiment_id)}",
        "    (the runs; in their Chart view, search curve/: accuracy against noise level, step = level index)",
        f"  {aggregate_command(sweep, storage, tracking_uri)}",
    ]
    return lines
