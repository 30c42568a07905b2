"""The 8 LeNets on real MNIST with the default recipe on a reduced epoch budget, next to the paper.

    python benchmarks/lenet_real_mnist.py --data-root DIR [--epochs 15] [--storage DIR]

Runs `python -m sweep.run lenet` with `--set lenet.epochs=E` and the milestones scaled from (30, 60) of
90 epochs, aggregates the runs and prints, per model, the clean test accuracy and the mean accuracy over
the paper's Gaussian, speckle and Poisson levels, ours beside the paper's. `--epochs 90` is the full
schedule. Needs MNIST in DIR/MNIST/raw (the runs download it where the machine is online).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--storage", type=Path, help="sweep storage (default: a new temporary folder)")
    args = parser.parse_args()
    storage = args.storage or Path(tempfile.mkdtemp(prefix="lenet-mnist-"))
    milestones = f"{round(args.epochs * 30 / 90)},{round(args.epochs * 60 / 90)}"
    start = time.perf_counter()
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweep.run",
            "lenet",
            "--data-root",
            args.data_root,
            "--storage",
            str(storage),
            "--set",
            f"lenet.epochs={args.epochs}",
            "--set",
            f"lenet.milestones={milestones}",
        ],
        stdout=subprocess.DEVNULL,
    )
    minutes = (time.perf_counter() - start) / 60
    out = storage / "tables"
    subprocess.run(
        [sys.executable, "-m", "sweep.aggregate", "--storage", str(storage), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )

    comparison = pd.read_parquet(out / "comparison.parquet")
    comparison = comparison[comparison["dataset"] == "mnist"]
    clean = comparison[comparison["noise"] == "clean"].groupby("model")[["accuracy", "paper_accuracy"]].first()
    noisy = (
        comparison[comparison["noise"] != "clean"]
        .groupby(["model", "noise"])[["accuracy", "paper_accuracy"]]
        .mean()
        .unstack("noise")
    )
    order = ["A", "PA", "B", "PB", "C", "PC", "D", "PD"]
    print(
        f"lenet on real MNIST, {args.epochs} epochs (milestones {milestones}), sweep exit {sweep.returncode}, {minutes:.1f} min"
    )
    print("| model | clean | paper | gaussian (mean) | paper | speckle (mean) | paper | poisson (mean) | paper |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in order:
        if model not in clean.index:
            print(f"| {model} | not trained (see excluded.parquet) |")
            continue
        cells = [f"{clean.loc[model, 'accuracy']:.2f}", f"{clean.loc[model, 'paper_accuracy']:.2f}"]
        for noise in ("gaussian", "speckle", "poisson"):
            cells += [
                f"{noisy.loc[model, ('accuracy', noise)]:.2f}",
                f"{noisy.loc[model, ('paper_accuracy', noise)]:.2f}",
            ]
        print(f"| {model} | " + " | ".join(cells) + " |")
    excluded = pd.read_parquet(out / "excluded.parquet")
    print(f"{len(excluded)} trials excluded" + "".join(f"\n  {r.model}: {r.reason}" for r in excluded.itertuples()))
    print(f"tables in {out}")


if __name__ == "__main__":
    main()
