"""How much of a sweep's time its trial slots stand empty: the gaps between one trial ending and the next
one computing.

    python benchmarks/empty_slots.py --data-root DIR [--seeds 2] [--slots N]

Runs ``python -m sweep.run lenet --profile smoke --seeds N`` (8 LeNets per seed, on real MNIST from
``DIR/MNIST/raw``) in this process, into a temporary storage and MLflow store, with one more Tune callback
that records, on the driver, when each trial started and ended. Then prints, over the window from the first
trial's start to the last trial's end:

- the slots: trials that can run at once (default: this machine's cores, one per LeNet trial);
- computing: each trial's own time in its trainable (Tune's ``time_total_s``, ending when its last result
  reached the driver), summed, over slots x window: the share of slot-time spent training and scoring;
- empty: one minus that, the share in which a slot stood empty (worker start-up, data hand-over, Tune's
  bookkeeping, the end of the sweep when fewer trials than slots remain);
- the gaps: from a trial's end to the start of the next trial Tune started, as seen by the driver.

Measures only; asserts nothing. On 2 idle cores a 16-trial smoke sweep takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from sweep import console, run


class RecordingProgress(console.ConsoleProgress):
    """The sweep's own progress view, which also keeps each trial's start and end (wall clock, s) and its
    last ``time_total_s``."""

    spans: dict[str, dict[str, float]] = {}  # trial id -> start, end, computing; class-wide: Tune copies callbacks

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.spans.setdefault(trial.trial_id, {})["start"] = time.time()
        super().on_trial_start(iteration, trials, trial, **info)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        span = self.spans.setdefault(trial.trial_id, {})
        span["end"], span["computing"] = time.time(), float((trial.last_result or {}).get("time_total_s", 0.0))
        super().on_trial_complete(iteration, trials, trial, **info)


def empty_share(spans: list[dict[str, float]], slots: int) -> tuple[float, float, float]:
    """(window s, computing s summed over trials, share of slot-time empty) of finished trials' ``spans``."""
    start = min(span["start"] for span in spans)
    window = max(span["end"] for span in spans) - start
    computing = sum(span["computing"] for span in spans)
    return window, computing, 1 - computing / (slots * window)


def gaps(spans: list[dict[str, float]], slots: int) -> list[float]:
    """Seconds from each trial's end to the next start after it, for the trials that started once a slot
    came free (all but the first ``slots``)."""
    starts = sorted(span["start"] for span in spans)[slots:]
    ends = sorted(span["end"] for span in spans)
    return [start - max(end for end in ends if end <= start) for start in starts if any(end <= start for end in ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the folder with MNIST/raw")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the 8 LeNets (default: 2, 16 trials)")
    parser.add_argument("--slots", type=int, default=os.cpu_count(), help="trials at once (default: the cores)")
    args = parser.parse_args()
    console.ConsoleProgress = RecordingProgress  # sweep.run imports it from sweep.console when it launches
    with tempfile.TemporaryDirectory(prefix="empty-slots-") as storage:
        began = time.time()
        argv = ["lenet", "--profile", "smoke", "--seeds", str(args.seeds), "--storage", storage]
        code = run.main([*argv, "--data-root", args.data_root])
        wall = time.time() - began
    spans = [span for span in RecordingProgress.spans.values() if {"start", "end"} <= set(span)]
    window, computing, empty = empty_share(spans, args.slots)
    between = gaps(spans, args.slots)
    print(f"\nsweep.run exited with {code} after {wall:.1f} s; {len(spans)} trials finished, {args.slots} slots")
    print(f"first trial start to last trial end: {window:.1f} s; trials computed {computing:.1f} s in all")
    print(f"empty-slot share: {empty:.1%} of {args.slots} x {window:.1f} slot-seconds")
    if between:
        print(
            f"gap from a trial's end to the next start: median {statistics.median(between):.2f} s, "
            f"max {max(between):.2f} s ({len(between)} starts)"
        )


if __name__ == "__main__":
    main()
