"""How long the command lines take to answer ``--help`` and to reject a typo (an unknown sweep or suite,
``--seeds 0``: one line, exit 2): their start-up cost, before any work.

Runs each command in a fresh interpreter (``subprocess``) ``--repeat`` times and prints the best and the
median wall time, with ``python -c "import torch"`` for comparison (what a command pays that imports
torch before parsing its arguments). Measures only; asserts nothing.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -m sweep.run --help": ["-m", "sweep.run", "--help"],
    "python -m sweep.aggregate --help": ["-m", "sweep.aggregate", "--help"],
    "python -m sweep.evaluate --help": ["-m", "sweep.evaluate", "--help"],
    "python -m sweep.run nosuch": ["-m", "sweep.run", "nosuch"],
    "python -m sweep.run lenet --seeds 0": ["-m", "sweep.run", "lenet", "--seeds", "0"],
    "python -m sweep.evaluate lenet --suite nosuch": ["-m", "sweep.evaluate", "lenet", "--suite", "nosuch"],
    "python -m sweep.aggregate --suite nosuch": ["-m", "sweep.aggregate", "--suite", "nosuch"],
    'python -c "import torch"': ["-c", "import torch"],
}
REJECTED = 2  # the exit status of a command line that rejects its arguments


def wall_times(args: list[str], repeat: int) -> list[float]:
    """Seconds each of ``repeat`` runs of ``python ARGS`` took, start to exit."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=PROJECT, capture_output=True)
        if done.returncode not in (0, REJECTED):
            raise SystemExit(f"python {' '.join(args)} exited with {done.returncode}: {done.stderr.decode()[-500:]}")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (default: 5)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    width = max(len(name) for name in COMMANDS)
    print(f"{'command':{width}}  {'best s':>7}  {'median s':>8}")
    for name, command in COMMANDS.items():
        times = wall_times(command, args.repeat)
        print(f"{name:{width}}  {min(times):7.2f}  {statistics.median(times):8.2f}", flush=True)


if __name__ == "__main__":
    main()
