"""How long the command lines take to answer ``--help``: their start-up cost, before any work.

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
    'python -c "import torch"': ["-c", "import torch"],
}


def wall_times(args: list[str], repeat: int) -> list[float]:
    """Seconds each of ``repeat`` runs of ``python ARGS`` took, start to exit."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
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
