"""Build an MLflow SQLite store with 2,000 finished trials (as sweep.run logs them) and time the aggregator.

    python benchmarks/aggregate_2000_runs.py [--runs 2000] [--keep DIR]

Prints the time to build the store and the time of one `python -m sweep.aggregate --to parquet` over it
(the bar: under 30 s on a 2-core machine). Run twice on the same store to see the warm-cache time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from perturb import noise_suite
from sweep.aggregate import main as aggregate
from sweep.catalog import build_sweep
from sweep.metrics import epoch_metrics, noise_metric
from sweep.specs import TrialSpec
from sweep.tracking import Tracker
from sweep.training import EpochStats


def trials(count: int) -> list[TrialSpec]:
    """``count`` distinct trials: the paper's 32, over as many seeds as it takes."""
    seeds = -(-count // 32)
    return build_sweep("paper_full", seeds=seeds)[:count]


def build_store(root: Path, count: int) -> str:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri, "paper_full", (root / "mlartifacts").as_uri())
    for i, spec in enumerate(trials(count)):
        tracker.open_run(spec)
        stats = EpochStats(loss=0.1, accuracy=99.0, images=1000, seconds=1.0, step_losses=(), lr=0.001)
        result = epoch_metrics(spec.recipe.epochs, stats, test_acc=95.0)
        result.update({noise_metric(p.noise, p.level): 90.0 - 10 * p.level for p in noise_suite(spec.dataset)})
        tracker.log_result(spec, result)
        tracker.finish(spec, result)
        if (i + 1) % 250 == 0:
            print(f"  {i + 1} runs logged", flush=True)
    return uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="build the store here (reused if it exists)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp())
    root.mkdir(parents=True, exist_ok=True)
    if (root / "mlflow.db").exists():
        uri = f"sqlite:///{root / 'mlflow.db'}"
        print(f"reusing the store in {root}")
    else:
        start = time.perf_counter()
        uri = build_store(root, args.runs)
        print(f"built {args.runs} runs in {time.perf_counter() - start:.1f} s ({root})")
    start = time.perf_counter()
    code = aggregate(["--tracking-uri", uri, "--out", str(root / "results")])
    seconds = time.perf_counter() - start
    print(f"aggregate: exit {code}, {seconds:.1f} s for {args.runs} runs ({seconds / 30:.2f} of the 30 s budget)")


if __name__ == "__main__":
    main()
