"""MLflow as a mirror of what Tune keeps: tracking that never stops or slows the trials.

Design: what the sweep's storage keeps of each trial is the source of truth, and MLflow mirrors it: Tune's
``<storage>/<sweep>/<trial key>/result.json`` (uploaded from the driver's staging folder every few seconds
at best, so it may lag behind the trial) and the reports the trial saved with its newest checkpoint
(sweep.checkpoints.REPORTED_FILE, uploaded with the checkpoint itself). Live, the Tune callback hands each
event to one background :class:`TrackingWriter`, which delivers them in order and retries each with
exponential backoff for as long as the tracking store is away: training never waits for MLflow. When a
sweep is resumed, before any trial runs again, and when it ends, :func:`replay_trials` hands the writer
everything the storage kept, so whatever the callback never saw (a driver killed mid-sweep with writes
waiting, a write dropped with a dying process) is delivered too, also the epochs a resumed trial, starting
after its checkpoint, does not report again.
Nothing is doubled, because every operation of :class:`sweep.tracking.Tracker` is idempotent (a run per
trial and launch, a point per step). Writes still waiting when a sweep ends are not lost: they are all in
Tune's results, and ``python -m sweep.run SWEEP --sync`` delivers them later.

The writer tells an outage (no answer, a timeout, a 5xx: retried for as long as it lasts) from a write the
store refuses for good (a deleted experiment or run, a refused value, a permission: :func:`is_permanent`).
Such a write gets a few tries, then it and every later write of its trial are set aside as dead letters
(:class:`DeadLetters`, a file in the sweep's storage) with one line per trial, and the other trials' writes
go on. ``--sync`` tries the dead letters again and says what still fails and why.

This design rather than a durable outbox of MLflow writes: the results are already durable, on the
storage the sweep uses (a local folder or S3), so a second copy would only add a file that can disagree.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from sweep.checkpoints import checkpointed_results
from sweep.cli import first_line
from sweep.metrics import EPOCH_METRICS, parse_noise_metric
from sweep.specs import TrialSpec
from sweep.storage import StorageError, SweepStorage
from sweep.tracking import Tracker

__all__ = [
    "DeadLetter",
    "DeadLetters",
    "TrackingCallback",
    "TrackingWriter",
    "is_permanent",
    "kept_results",
    "replay_trials",
    "writer_for",
]

TRACKED_FIELDS = ("node_id", "health", "health_reason")  # what the Tracker reads besides the metrics
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
OUTAGE_LINE_EVERY_S = 300.0  # while MLflow is away, a line this often says so, with the writes waiting
PERMANENT_TRIES = 3  # tries of a write the store refuses for good, before it is set aside
# MLflow's error codes for a write that no retry mends: it needs a person (a deleted experiment or run, a
# value the store refuses, a permission or credential). Every other error is taken for an outage.
PERMANENT_ERRORS = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "INVALID_STATE",
        "BAD_REQUEST",
    }
)


def is_permanent(error: BaseException) -> bool:
    """Whether ``error`` (raised by a Tracker) is the store refusing a write for good, not an outage: one of
    MLflow's PERMANENT_ERRORS, or an artifact store's (boto3's) refusal with an HTTP 4xx other than a
    timeout or a throttle (AccessDenied, NoSuchBucket...)."""
    if getattr(error, "error_code", None) in PERMANENT_ERRORS:
        return True
    status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return 400 <= status < 500 and status not in (408, 429)


def outage_reason(error: BaseException) -> str:
    """Why the store did not answer, in a few words (MLflow's own messages run to hundreds of characters)."""
    text = str(error)
    for pattern, reason in (
        (r"connection refused", "connection refused"),
        # A server killed during a request: requests' ConnectionError without urllib3's retry wrapper.
        (r"connection aborted|remote end closed|connection reset|broken pipe", "connection lost"),
        (r"timed? ?out", "timed out"),
        (r"name or service not known|nodename nor servname|failed to resolve", "unknown host"),
        (r"database is locked", "database is locked"),
        (r"error code (5\d\d)", "HTTP {}"),
        (r"max retries exceeded", "no answer"),
    ):
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            return reason.format(*match.groups())
    return first_line(error, 80)


@dataclass(frozen=True)
class DeadLetter:
    """A write the store refused for good: ``Tracker.<operation>(*args)`` of trial ``trial_key``, and why."""

    trial_key: str
    operation: str
    args: tuple
    error: str

    def to_json(self) -> str:
        spec, *rest = self.args
        return json.dumps(
            {
                "trial_key": self.trial_key,
                "operation": self.operation,
                "spec": spec.to_dict(),
                "args": rest,
                "error": self.error,
            }
        )

    @classmethod
    def from_json(cls, line: str) -> DeadLetter:
        data = json.loads(line)
        return cls(
            data["trial_key"], data["operation"], (TrialSpec.from_dict(data["spec"]), *data["args"]), data["error"]
        )


class DeadLetters:
    """The dead letters of a sweep, kept in ``<sweep>.dead-letters.jsonl`` in its storage (one JSON line
    each), so that a later ``--sync`` can try them again."""

    def __init__(self, storage: SweepStorage, sweep: str) -> None:
        self.storage, self.name = storage, f"{sweep}.dead-letters.jsonl"
        self.path = storage.path(self.name)

    def read(self) -> list[DeadLetter]:
        """The letters kept; a line cut short (a process that died writing it) is passed over with one line."""
        letters = []
        for line in (self.storage.read_text(self.name) or "").splitlines():
            try:
                letters.append(DeadLetter.from_json(line))
            except (ValueError, KeyError, TypeError):
                print(f"passed over a damaged line of {self.path}: {line[:80]}", file=sys.stderr, flush=True)
        return letters

    def write(self, letters: list[DeadLetter]) -> None:
        """Keep exactly ``letters`` (none: the file goes)."""
        if letters:
            self.storage.write_text(self.name, "".join(letter.to_json() + "\n" for letter in letters))
        else:
            self.storage.delete(self.name)


def tracked(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a Tune result that goes to MLflow: the metrics and the health fields."""
    return {
        k: v
        for k, v in result.items()
        if k in EPOCH_METRICS or k in TRACKED_FIELDS or parse_noise_metric(k) is not None
    }


class TrackingWriter:
    """Delivers :class:`Tracker` operations from one background thread, in the order submitted, each
    retried with exponential backoff (0.5 s doubling to 30 s) until the store takes it, through any outage;
    a write the store refuses for good (:func:`is_permanent`) gets PERMANENT_TRIES tries, then it and the
    later writes of its trial are set aside as :class:`DeadLetter` (kept in ``dead_letters`` when given).

    ``submit`` never blocks; ``drain`` waits, at most ``timeout`` seconds, for the queue to empty. After a
    failure the writer opens a fresh Tracker, which reads again what the store holds, so an operation that
    reached the store before its answer was lost is not applied twice.
    """

    def __init__(
        self,
        tracking_uri: str,
        sweep: str,
        artifact_root: str | None = None,
        launch: str = "",
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.start(dead_letters)
        self._tracker_args = (tracking_uri, sweep, artifact_root, launch)
        self._queue: deque[tuple[str, tuple]] = deque()
        self._changed = threading.Condition()
        self._tracker: Tracker | None = None
        threading.Thread(target=self._deliver, name=f"mlflow-writer-{sweep}", daemon=True).start()

    def start(self, dead_letters: DeadLetters | None, keep_earlier: bool = True) -> None:
        """Begin a launch (or a ``--sync``): no write set aside yet, the dead letters of earlier ones kept in
        ``dead_letters`` beside this launch's, unless this launch tries them again (``keep_earlier`` false)."""
        self.dead_letters = dead_letters
        self._kept_before = dead_letters.read() if dead_letters is not None and keep_earlier else []
        self.set_aside: list[DeadLetter] = []  # by this launch, in order

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
        backoff, refusals, outage = FIRST_BACKOFF_S, 0, None  # outage: (since, wall-clock since, last line)
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                operation, args = self._queue[0]
            key = args[0].key
            if any(letter.trial_key == key for letter in self.set_aside):  # in order behind its trial's first
                self._set_aside(DeadLetter(key, operation, args, "an earlier write of its trial was set aside"))
                continue
            try:
                if self._tracker is None:
                    self._tracker = Tracker(*self._tracker_args)
                getattr(self._tracker, operation)(*args)
            except Exception as error:  # noqa: BLE001 - whatever the store raises, the write waits or is set aside
                self._tracker = None
                if not is_permanent(error):
                    refusals, outage = 0, self._outage(outage, error)
                elif (refusals := refusals + 1) >= PERMANENT_TRIES:
                    backoff, refusals = FIRST_BACKOFF_S, 0
                    self._set_aside(DeadLetter(key, operation, args, first_line(error, 300)), loud=True)
                    continue
                time.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            self._done()
            if outage is not None:
                print(
                    f"MLflow at {self.tracking_uri} is back after {time.monotonic() - outage[0]:.0f} s: delivering {self.pending()} waiting writes",
                    file=sys.stderr,
                    flush=True,
                )
            backoff, refusals, outage = FIRST_BACKOFF_S, 0, None

    def keep(self) -> None:
        """Write the dead letters (the earlier launches' kept, and this one's) to the storage; a storage that
        refuses them is one line, and they stay in this process (the delivery goes on)."""
        if self.dead_letters is None:
            return
        try:
            self.dead_letters.write([*self._kept_before, *self.set_aside])
        except (OSError, StorageError) as error:
            print(f"cannot keep the dead letters in {self.dead_letters.path}: {first_line(error)}", file=sys.stderr)

    def _outage(self, outage: tuple[float, str, float] | None, error: BaseException) -> tuple[float, str, float]:
        """Say that the store is away, when it went and every OUTAGE_LINE_EVERY_S while it stays away."""
        now = time.monotonic()
        if outage is None:
            outage = (now, time.strftime("%H:%M:%S"), -OUTAGE_LINE_EVERY_S)
        if now - outage[2] >= OUTAGE_LINE_EVERY_S:
            print(
                f"MLflow at {self.tracking_uri} unavailable since {outage[1]} ({outage_reason(error)}): "
                f"{self.pending()} writes wait, retried in the background; training goes on",
                file=sys.stderr,
                flush=True,
            )
            outage = (outage[0], outage[1], now)
        return outage

    def _done(self) -> None:
        with self._changed:
            self._queue.popleft()
            self._changed.notify_all()

    def _set_aside(self, letter: DeadLetter, loud: bool = False) -> None:
        """Take the write at the head of the queue off it as a dead letter. The first of a trial (``loud``)
        is kept in the storage at once, with one line; the trial's later ones join it at :meth:`keep`."""
        self.set_aside.append(letter)
        if loud:
            self.keep()
            where = self.dead_letters.path if self.dead_letters is not None else "this process"
            print(
                f"MLflow refused a write of trial {letter.trial_key} for good ({letter.error}): it and the trial's "
                f"later writes are set aside in {where}; once the cause is mended, run the command again with --sync",
                file=sys.stderr,
                flush=True,
            )
        self._done()


_WRITERS: dict[tuple[str, str], TrackingWriter] = {}
_LAUNCHED: dict[str, TrackingWriter] = {}  # sweep -> the writer of its latest launch in this process
_WRITERS_LOCK = threading.Lock()


def writer_for(
    tracking_uri: str,
    sweep: str,
    artifact_root: str | None = None,
    launch: str = "",
    dead_letters: DeadLetters | None = None,
) -> TrackingWriter:
    """The one writer of (``tracking_uri``, ``sweep``) in this process, which the sweep's
    :class:`TrackingCallback` then hands its events to: a single thread orders every write. See
    :class:`TrackingWriter` for the other arguments."""
    with _WRITERS_LOCK:
        key = (tracking_uri, sweep)
        if key not in _WRITERS:
            _WRITERS[key] = TrackingWriter(tracking_uri, sweep, artifact_root, launch, dead_letters)
        else:
            _WRITERS[key].start(dead_letters)
        _LAUNCHED[sweep] = _WRITERS[key]
        return _WRITERS[key]


def kept_results(storage: SweepStorage, sweep: str, key: str) -> list[dict[str, Any]]:
    """What the storage kept of trial ``key``'s reports, one per epoch, oldest first: its ``result.json``,
    with the epochs it lacks taken from the reports saved with the trial's newest checkpoint; a diverged
    trial's last report (of its last healthy epoch again) last. Reports without an epoch (a GPU the trial
    could not use) are left out."""
    text = storage.read_text(f"{sweep}/{key}/result.json")
    uploaded = [json.loads(line) for line in (text or "").splitlines() if line.strip()]
    try:
        checkpointed = checkpointed_results(storage.path(f"{sweep}/{key}"))
    except (OSError, ValueError) as error:  # pyarrow's errors for a storage it cannot read
        raise StorageError(f"cannot read the checkpoints of trial {key} in {storage.location}: {error}") from None
    by_epoch: dict[int, dict[str, Any]] = {}
    for result in [*uploaded, *checkpointed]:
        if "epoch" in result:
            by_epoch.setdefault(int(result["epoch"]), result)
    results = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    if uploaded and uploaded[-1].get("health") == "diverged" and results[-1] is not uploaded[-1]:
        results.append(uploaded[-1])
    return [tracked(result) for result in results]


def replay_trials(storage: SweepStorage, sweep: str, specs: list[TrialSpec], writer: TrackingWriter) -> int:
    """Submit to ``writer`` every result the storage kept of each trial (:func:`kept_results`), and the end
    of each trial that finished or diverged. Returns the number of trials that had results."""
    replayed = 0
    for spec in specs:
        results = kept_results(storage, sweep, spec.key)
        if not results:
            continue
        replayed += 1
        for result in results:
            writer.submit("log_result", spec, result)
        last = results[-1]
        # A trial of a search scores the suite every epoch: only its last epoch's scores end it.
        trained = int(last.get("epoch", 0)) >= spec.recipe.epochs
        if last.get("health") == "diverged" or (trained and any(parse_noise_metric(name) for name in last)):
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
