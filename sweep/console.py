"""What ``python -m sweep.run`` prints: one compact progress view, a summary per model, the next commands.

On a terminal the view is a table of the trials redrawn in place, cut to the terminal's size (the running
trials and the latest ended first, then a line of counts); piped to a file it is plain lines, one per event
(trial started, ended) and per reported epoch, at most one every ``PIPED_EPOCH_INTERVAL_S`` per trial (the
first and the last epoch always). Ray's and Tune's own output is off unless ``--verbose``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

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
# A terminal with fewer lines than this shows the counts line alone: a table there would be a row or two.
MIN_TABLE_LINES = 5
ELLIPSIS = "..."  # ASCII: a terminal's encoding may lack U+2026
ENDED = ("finished", "diverged", "failed")
COUNTED = ("running", *ENDED, "pending")  # the counts line's statuses, in its order
# The runs of an experiment in the MLflow UI (3.x). Whether MLflow 3.17 shows its GenAI pages or its ML ones
# is the sidebar's GenAI / Model training switch, which a browser keeps (GenAI until switched); a URL's
# ?workflowType=machine_learning holds for that page only: the next click (a run, the experiment) is GenAI
# again, and the switch, showing Model training then, does nothing. So no workflowType: the switch, once.
RUNS_VIEW = "#/experiments/{experiment_id}/runs"
# How to see the study there: per noise, the runs grouped into plain and push-pull (a mean curve with its
# min-max band each), against the level's index or, chart by chart, the level (sweep.metrics' level/<noise>).
STUDY_VIEW = (
    "    (click Model training, top left, once: MLflow then keeps out of its GenAI pages; then Chart view,",
    "    Group by pushpull, search curve/: accuracy per noise level, push-pull (True) against plain (False);",
    "    x axis = level index, or in a chart's Configure: X-axis Metric level/<noise>)",
)


# The libraries' loggers a sweep quiets, and the level it sets each to.
QUIETED_LOGGERS = {
    "ray": logging.ERROR,
    "ray.tune": logging.ERROR,
    "ray.train": logging.ERROR,
    "ray.data": logging.ERROR,
    "mlflow": logging.WARNING,
}


# Tune's own words on a failed trial, logged at ERROR: the trial's whole traceback, then the list of the
# trials that did not complete. The console says each failure in one line, with where the traceback is kept.
TUNE_FAILURE_RECORDS = {
    "ray.tune.execution.tune_controller": "Trial task failed for trial",
    "ray.tune.tune": "Trials did not complete",
}


class _DropRecords(logging.Filter):
    """Drops a logger's records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_libraries(verbose: bool) -> None:
    """Before Ray starts: Tune's old, silent-at-verbose-0 reporter, Ray's loggers at ERROR, MLflow's at
    WARNING (no "Creating initial MLflow database tables") and no Tune traceback of a failed trial
    (:data:`TUNE_FAILURE_RECORDS`), unless ``verbose``. A user's own setting of ``RAY_AIR_NEW_OUTPUT`` wins."""
    if verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name, level in QUIETED_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for name, prefix in TUNE_FAILURE_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRecords) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropRecords(prefix))


@dataclass
class _Row:
    spec: TrialSpec
    epoch: int = 0
    train_loss: float | None = None
    test_acc: float | None = None
    status: str = "pending"
    ended: int = 0  # 1 for the first trial to end, 2 for the next...; 0 while it has not: the latest show first

    @property
    def counted_as(self) -> str:
        """The row's status in the counts line: a restarting trial counts as running."""
        return "running" if self.status.startswith("restarting") else self.status

    def cells(self) -> tuple[str, ...]:
        loss = "-" if self.train_loss is None else f"{self.train_loss:.4f}"
        acc = "-" if self.test_acc is None else f"{self.test_acc:.2f}"
        epochs = f"{self.epoch}/{self.spec.recipe.epochs}"
        return (self.spec.run_name, self.spec.model.name, str(self.spec.seed), epochs, loss, acc, self.status)


HEADER = ("trial", "model", "seed", "epoch", "train loss", "test acc %", "status")


def _cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its end replaced by an ellipsis when cut."""
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[: max(width, 0)]
    return text[: width - len(ELLIPSIS)] + ELLIPSIS


def _table(rows: Sequence[_Row], width: int) -> list[str]:
    """The lines of the table of ``rows``, each at most ``width`` characters: the trial names are cut first
    (down to the header's width), then every line."""
    cells = [row.cells() for row in rows]
    widest = max(len(line) for line in format_table([HEADER, *cells]))
    names = max((len(c[0]) for c in cells), default=0)
    name_width = max(len(HEADER[0]), names - max(widest - width, 0))
    cells = [(_cut(c[0], name_width), *c[1:]) for c in cells]
    return [_cut(line, width) for line in format_table([HEADER, *cells])]


def _shown(rows: Sequence[_Row], room: int) -> list[_Row]:
    """The ``room`` rows most worth a look: the running trials, then the latest ended, then the pending."""
    running = [row for row in rows if row.counted_as == "running"]
    ended = sorted((row for row in rows if row.counted_as in ENDED), key=lambda row: -row.ended)
    pending = [row for row in rows if row.counted_as == "pending"]
    return [*running, *ended, *pending][:room]


def _counts_line(rows: Sequence[_Row], shown: int) -> str:
    """How many trials have each status, and how many the table hides (it shows ``shown``). Terse, to fit
    80 columns: ``96 trials: 4 running, 30 finished, 1 diverged, 0 failed, 61 pending; 58 hidden`` is 78."""
    counts = dict.fromkeys(COUNTED, 0)
    for row in rows:
        counts[row.counted_as] += 1
    statuses = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{len(rows)} trials: {statuses}; {len(rows) - shown} hidden"


def _frame(rows: Sequence[_Row], size: os.terminal_size) -> list[str]:
    """The lines of the view of ``rows`` on a terminal of ``size``: fewer than its lines (the cursor ends on
    the line after the last, so nothing scrolls off and moving up by their number lands on the first), none
    wider than its columns (a wrapped line would take two). The table shows every row when they fit, else
    the rows :func:`_shown` picks and the counts line; a terminal under ``MIN_TABLE_LINES`` the counts line."""
    width, room = size.columns, size.lines - 1
    if room < 1:
        return []
    if len(rows) < room:  # the header and every row
        return _table(rows, width)
    if size.lines < MIN_TABLE_LINES:
        return [_cut(_counts_line(rows, 0), width)]
    shown = _shown(rows, room - 2)  # less the header and the counts line
    return [*_table(shown, width), _cut(_counts_line(rows, len(shown)), width)]


class ConsoleProgress(tune.Callback):
    """The progress view of a sweep's trials (trial, model, seed, epoch/total, train loss, last test
    accuracy, status), on the driver. ``interactive``: redraw a table in place (a terminal) rather than
    print lines (a pipe or a file); by default when ``stream`` is a terminal. ``stream``: where it writes,
    ``sys.stdout`` (as it is at each write) by default. ``terminal_size``: the terminal's columns and lines,
    read at every redraw (a terminal can be resized)."""

    def __init__(
        self,
        interactive: bool | None = None,
        stream: TextIO | None = None,
        terminal_size: Callable[[], os.terminal_size] = shutil.get_terminal_size,
    ) -> None:
        self._stream = stream
        self.interactive = self._out().isatty() if interactive is None else interactive
        self.terminal_size = terminal_size
        self.rows: dict[str, _Row] = {}
        self.started = time.monotonic()
        self._printed_at: dict[str, float] = {}
        self._drawn_lines = 0
        self._drawn_at = 0.0
        self._ends = 0  # how many trials have ended, to order the ended rows
        self._closed = False

    def _out(self) -> TextIO:
        return sys.stdout if self._stream is None else self._stream

    def _row(self, trial: Any) -> _Row:
        """The row of ``trial``, made on its first event: the spec is parsed once, not on every result."""
        if trial.trial_id not in self.rows:
            self.rows[trial.trial_id] = _Row(TrialSpec.from_config(trial.config))
        return self.rows[trial.trial_id]

    def _line(self, row: _Row, event: str) -> None:
        elapsed = time.monotonic() - self.started
        spec = row.spec
        text = f"[{elapsed:6.0f}s] {spec.run_name} ({spec.model.name}, seed {spec.seed}) {event}"
        if self.interactive:  # above the table, where a wrapped line would throw off its redraw
            text = _cut(text, self.terminal_size().columns)
        self._print([text])

    def _print(self, lines: list[str]) -> None:
        """Write ``lines``; on a terminal in place of the table drawn last (up to its first line, cleared
        below), so that the next draw goes below them."""
        text = "".join(f"{line}\n" for line in lines)
        if self.interactive and self._drawn_lines:
            text = f"\x1b[{self._drawn_lines}F\x1b[J{text}"
        self._drawn_lines = 0
        out = self._out()
        try:
            out.write(text)
            out.flush()
        except KeyboardInterrupt:
            # A second Ctrl-C (Tune's handler takes the first) can stop a draw part-way, with the cursor inside
            # the table or above the old one: clear from the start of its line down, so that the traceback or
            # whatever the driver prints next starts on a clean line.
            if self.interactive:
                out.write("\r\x1b[J")
                out.flush()
            raise

    def _redraw(self, trials: Iterable[Any], force: bool = False) -> None:
        if not self.interactive or self._closed:
            return
        if not force and time.monotonic() - self._drawn_at < REDRAW_INTERVAL_S:
            return
        for trial in trials:
            self._row(trial)  # a row for every trial, pending until a hook says otherwise
        lines = _frame(list(self.rows.values()), self.terminal_size())
        self._print(lines)
        self._drawn_lines, self._drawn_at = len(lines), time.monotonic()

    def close(self) -> None:
        """Draw no more. The cursor stays on the line below the table, where what the driver prints next goes."""
        self._closed, self._drawn_lines = True, 0

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
        self._ends += 1
        row.ended = self._ends
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

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune calls it when its trial loop ends: every trial done, an error, or a first Ctrl-C (a second
        # raises KeyboardInterrupt in the driver instead, which _print handles mid-draw).
        self._redraw(trials, force=True)
        self.close()

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
        finished = [o.metrics for o in group if o.status in ("finished", "stopped")]
        by_noise: dict[str, list[float]] = {noise: [] for noise in NOISES}
        for metrics in finished:
            for name, value in metrics.items():
                parsed = parse_noise_metric(name)
                if parsed is not None and parsed[0] in by_noise:
                    by_noise[parsed[0]].append(float(value))
        statuses = {s: sum(o.status == s for o in group) for s in ("finished", "stopped", "diverged", "failed")}
        status = ", ".join(f"{n} {s}" for s, n in statuses.items() if n)
        clean = _mean([float(m["test_acc"]) for m in finished if "test_acc" in m])
        rows.append((label, str(len(group)), clean, *(_mean(by_noise[n]) for n in NOISES), status))
    return format_table(rows)


def runs_view_url(tracking_uri: str, experiment_id: str, ui_address: str = "http://127.0.0.1:5000") -> str:
    """The URL of the experiment's runs list: on the tracking server itself, or on ``mlflow ui`` at
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
        *STUDY_VIEW,
        f"  {aggregate_command(sweep, storage, tracking_uri)}",
    ]
    return lines
