"""MLflow as a mirror of what Tune keeps: tracking that never stops or slows the trials.

Design: Tune's persisted trial results (``<storage>/<sweep>/<trial key>/result.json``, written with every
report, on shared storage for a cluster) are the source of truth, and MLflow mirrors them. Live, the Tune
callback hands each event to one background :class:`TrackingWriter`, which delivers them in order and
retries each with exponential backoff for as long as the tracking store is away: training never waits
for MLflow. When a sweep ends, :func:`replay_trials` hands the writer everything Tune kept, so whatever the
callback never saw (a driver killed mid-sweep, a write dropped with a dying process) is delivered too.
Nothing is doubled, because every operation of :class:`sweep.tracking.Tracker` is idempotent (a run per
trial and launch, a point per step). Writes still waiting when a sweep ends are not lost: they are all in
Tune's results, and ``python -m sweep.run SWEEP --sync`` delivers them later.

This design rather than a durable outbox of MLflow writes: the results are already durable, on the
storage the sweep uses (a local folder or S3), so a second copy would only add a file that can disagree.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ray import tune

from sweep.cli import first_line
from sweep.metrics import EPOCH_METRICS, parse_noise_metric
from sweep.specs import TrialSpec
from sweep.storage import SweepStorage
from sweep.tracking import Tracker

__all__ = ["TrackingCallback", "TrackingWriter", "replay_trials", "writer_for"]

TRACKED_FIELDS = ("node_id", "health", "health_reason")  # what the Tracker reads besides the metrics
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


def tracked(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a Tune result that goes to MLflow: the metrics and the health fields."""
    return {
        k: v
        for k, v in result.items()
        if k in EPOCH_METRICS or k in TRACKED_FIELDS or parse_noise_metric(k) is not None
    }


class TrackingWriter:
    """Delivers :class:`Tracker` operations from one background thread, in the order submitted, each
    retried with exponential backoff (0.5 s doubling to 30 s) until the store takes it.

    ``submit`` never blocks; ``drain`` waits, at most ``timeout`` seconds, for the queue to empty. After a
    failure the writer opens a fresh Tracker, which reads again what the store holds, so an operation that
    reached the store before its answer was lost is not applied twice.
    """

    def __init__(self, tracking_uri: str, sweep: str, artifact_root: Path | None = None, launch: str = "") -> None:
        self.tracking_uri = tracking_uri
        self._tracker_args = (tracking_uri, sweep, artifact_root, launch)
        self._queue: deque[tuple[str, tuple]] = deque()
        self._changed = threading.Condition()
        self._tracker: Tracker | None = None
        threading.Thread(target=self._deliver, name=f"mlflow-writer-{sweep}", daemon=True).start()

    def submit(self, operation: str, *args: Any) -> None:
        """Queue ``Tracker.<operation>(*args)``."""
        with self._changed:
            self._queue.append((operation, args))
            self._changed.notify_all()

    def pending(self) -> int:
        """How many operations wait for the store."""
        with self._changed:
            return len(self._queue)

    def drain(self, timeout: float) -> int:
        """Wait until every operation is delivered or ``timeout`` seconds pass; returns how many still wait."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queue and time.monotonic() < deadline:
                self._changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            return len(self._queue)

    def _deliver(self) -> None:
        backoff, outage_since = FIRST_BACKOFF_S, None
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                operation, args = self._queue[0]
            try:
                if self._tracker is None:
                    self._tracker = Tracker(*self._tracker_args)
                getattr(self._tracker, operation)(*args)
            except Exception as error:  # noqa: BLE001 - whatever the store raises, the write waits and is retried
                self._tracker = None
                if outage_since is None:
                    outage_since = time.monotonic()
                    print(
                        f"MLflow at {self.tracking_uri} is unavailable ({first_line(error)}): {self.pending()} writes wait, retried in the background; training goes on",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            with self._changed:
                self._queue.popleft()
                self._changed.notify_all()
            if outage_since is not None:
                print(
                    f"MLflow at {self.tracking_uri} is back after {time.monotonic() - outage_since:.0f} s: delivering {self.pending()} waiting writes",
                    file=sys.stderr,
                    flush=True,
                )
            backoff, outage_since = FIRST_BACKOFF_S, None


_WRITERS: dict[tuple[str, str], TrackingWriter] = {}
_LAUNCHED: dict[str, TrackingWriter] = {}  # sweep -> the writer of its latest launch in this process
_WRITERS_LOCK = threading.Lock()


def writer_for(tracking_uri: str, sweep: str, artifact_root: Path | None = None, launch: str = "") -> TrackingWriter:
    """The one writer of (``tracking_uri``, ``sweep``) in this process, which the sweep's
    :class:`TrackingCallback` then hands its events to: a single thread orders every write."""
    with _WRITERS_LOCK:
        key = (tracking_uri, sweep)
        if key not in _WRITERS:
            _WRITERS[key] = TrackingWriter(tracking_uri, sweep, artifact_root, launch)
        _LAUNCHED[sweep] = _WRITERS[key]
        return _WRITERS[key]


def replay_trials(storage: SweepStorage, sweep: str, specs: list[TrialSpec], writer: TrackingWriter) -> int:
    """Submit to ``writer`` every result Tune kept of each trial (its ``result.json``), and the end of
    each trial that finished or diverged. Returns the number of trials that had results."""
    replayed = 0
    for spec in specs:
        text = storage.read_text(f"{sweep}/{spec.key}/result.json")
        results = [tracked(json.loads(line)) for line in (text or "").splitlines() if line.strip()]
        if not results:
            continue
        replayed += 1
        for result in results:
            if "epoch" in result:
                writer.submit("log_result", spec, result)
        last = results[-1]
        if last.get("health") == "diverged" or any(parse_noise_metric(name) for name in last):
            writer.submit("finish", spec, last)
    return replayed


class TrackingCallback(tune.Callback):
    """Hands Tune's trial events to the writer of ``sweep`` that :func:`writer_for` made last in this
    process (the driver's, made before the Tuner runs); never blocks.

    Tune pickles its callbacks with the experiment (``Tuner.restore`` brings them back), so this one keeps
    the sweep's name alone: where to log is the driver's to say, also for a storage moved since it started.
    """

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Sweeps started before this engine pickled (tracking_uri, sweep, artifact_root, launch).
        self.sweep = state["sweep"] if "sweep" in state else state["writer_args"][1]

    @property
    def writer(self) -> TrackingWriter:
        return _LAUNCHED[self.sweep]

    @staticmethod
    def _spec(trial: Any) -> TrialSpec:
        return TrialSpec.from_config(trial.config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit("open_run", self._spec(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" in result:  # not a trial's report that it cannot use its GPU (it trained no epoch)
            self.writer.submit("log_result", self._spec(trial), tracked(result))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # The worker died; Tune restarts the trial from its last checkpoint, into the same run.
        self.writer.submit("note_restart", self._spec(trial), trial.num_failures)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit("finish", self._spec(trial), tracked(trial.last_result))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit("fail", self._spec(trial), _error_summary(trial))


def _error_summary(trial: Any) -> str:
    """The last line of the trial's error (the exception), or a generic reason."""
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        lines = [line for line in Path(error_file).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return "trial errored"
