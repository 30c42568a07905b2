"""Throughput of the paper's models on this machine's device (CUDA when there is one, else the CPU).

    python benchmarks/throughput.py [--steps N] [--json PATH] [--quick]

Five parts, each printed as a table (and written to PATH as JSON with --json):

1. training and scoring images/s of LeNet A and PA (1x28x28), WRN-16-4(-PP) and WRN-28-10(-PP) (3x32x32),
   in fp32 and bf16: one training step is the one of ``sweep.training.train_epoch`` (forward and loss
   under ``autocast``, zero_grad, backward, the paper recipe's SGD step) on a random batch already on the
   device, one scoring step that of ``evaluate``; the WRNs channels-last on CUDA, as ``sweep.trainable``;
2. the push-pull overhead: time per image of each push-pull model over that of its plain twin;
3. the FLOPs of one training step (``FlopCounterMode``, forward and backward) and the FLOP/s achieved,
   with the MFU against the GPU's dense peak where the GPU is in ``PEAK_TFLOPS`` (never on a CPU);
4. LeNet packing: the summed training images/s of 1, 2 and 4 LeNet-A trials running at once in separate
   processes, as the sweep packs them four to a GPU (on a CPU each gets cores / n torch threads);
5. the per-epoch orchestration overhead of a real Tune trial (``sweep.trainable.train_trial``, LeNet A,
   6 epochs on a learnable synthetic data set of MNIST's images): the share of each Tune iteration spent outside
   training, with the overhead budget at 1 (evaluate and checkpoint every epoch) and at its default.

Every measurement takes a fresh model through one warm-up block and three timed blocks of ``--steps``
training steps (LeNets 5x as many; scoring as many images in its own blocks) and keeps the fastest block,
so that a block slowed by another process on the machine does not count (the load averages before and
after are printed: on a machine busy throughout, every block is slowed, and the numbers with it).

The same command runs on a GPU (CUDA is used when torch sees it; ``CUDA_VISIBLE_DEVICES=`` forces the
CPU): there the models train at the sweep's batches (128; scoring 1000 for LeNet, 500 for WRN) and
``--steps`` defaults to 10. On a CPU the WRNs run at small batches (WRN-16-4 16 / 32, WRN-28-10 4 / 8, as
printed) and ``--steps`` defaults to 1, so that the run takes minutes (2 idle cores: about 5; ``--quick``,
one timed block, fewer packing steps and a smaller Tune data set: about 1.5; a busy machine takes several
times as long). The LeNet trials of parts 4 and 5 run in the precision ``sweep.run`` gives them
(``sweep.precision``: fp32, on a GPU too).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models import ModelSpec, build_model
from sweep.catalog import build_sweep
from sweep.data import DatasetTensors
from sweep.datasets import DATASETS
from sweep.defaults import DEFAULT_OVERHEAD_BUDGET
from sweep.devices import device_for
from sweep.precision import default_precision
from sweep.specs import PRECISIONS, default_recipe
from sweep.training import Normalizer, autocast, make_optimizer


@dataclass(frozen=True)
class Pair:
    """A plain model and its push-pull twin, with (train, eval) batches on a GPU and on a CPU, and how many
    times ``--steps`` training steps make one of their timed blocks."""

    plain: ModelSpec
    gpu_batches: tuple[int, int]
    cpu_batches: tuple[int, int]
    step_factor: int

    @property
    def pushpull(self) -> ModelSpec:
        """The twin: ``plain`` with the paper's push-pull first layer (h=2, alpha=1)."""
        return dataclasses.replace(self.plain, pushpull=True)


PAIRS = (
    Pair(ModelSpec(arch="lenet", variant="A"), (128, 1000), (128, 1000), 5),
    Pair(ModelSpec(arch="wrn", depth=16, width=4), (128, 500), (16, 32), 1),
    Pair(ModelSpec(arch="wrn", depth=28, width=10), (128, 500), (4, 8), 1),
)
DATASET = {"lenet": "mnist", "wrn": "cifar10"}
# Dense peak TFLOP/s (bf16, fp32 on CUDA cores, tf32 on tensor cores), by the first name part that matches
# the device's name. "H100" is the SXM board; NVL boards run lower clocks, so their MFU would read low.
PEAK_TFLOPS = (
    ("H100 PCIe", (756.0, 51.0, 378.0)),
    ("H100", (989.0, 67.0, 494.7)),
    ("H200", (989.0, 67.0, 494.7)),
    ("A100", (312.0, 19.5, 156.0)),
)
PACKING = (1, 2, 4)


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (timings end there); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's cores and torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak in ``precision`` (fp32 counts as TF32 when cuDNN or cuBLAS may use it), or
    None on a CPU or a GPU not in PEAK_TFLOPS."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    peaks = next((peaks for part, peaks in PEAK_TFLOPS if part in name), None)
    if peaks is None:
        return None
    bf16, fp32, tf32 = peaks
    if precision == "bf16":
        return bf16
    return tf32 if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 else fp32


def seconds_per_step(step: Callable[[], None], steps: int, blocks: int, device: torch.device) -> float:
    """Seconds per call of ``step`` in the fastest of ``blocks`` timed blocks of ``steps`` calls, after one
    such block of warm-up. Other processes on the machine can only slow a block down, so the fastest block
    is the closest to the device's own speed (as ``timeit`` advises)."""
    for _ in range(steps):
        step()
    return min(block_seconds(step, steps, blocks, device))


def block_seconds(step: Callable[[], None], steps: int, blocks: int, device: torch.device) -> list[float]:
    """Seconds per call of ``step`` in each of ``blocks`` blocks of ``steps`` calls."""
    times = []
    for _ in range(blocks):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        times.append((time.perf_counter() - start) / steps)
    return times


def random_batch(spec: ModelSpec, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] of the model's input shape and labels, on ``device``."""
    images = torch.rand(batch, *spec.input_shape, device=device)
    return images, torch.randint(0, spec.num_classes, (batch,), device=device)


def build(spec: ModelSpec, precision: str, device: torch.device) -> tuple[nn.Module, Normalizer, torch.optim.Optimizer]:
    """A fresh model on ``device`` (channels-last for a WRN on CUDA), its input normalizer and the paper
    recipe's optimizer in ``precision``."""
    torch.manual_seed(0)
    recipe = dataclasses.replace(default_recipe(spec.arch, "paper"), precision=precision)
    channels_last = device.type == "cuda" and spec.arch == "wrn"
    model = build_model(spec).to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    normalize = Normalizer(
        DATASETS[DATASET[spec.arch]].mean,
        DATASETS[DATASET[spec.arch]].std,
        device=device,
        enabled=recipe.normalize,
        channels_last=channels_last,
    )
    return model, normalize, make_optimizer(model, recipe)


def training_step(spec: ModelSpec, precision: str, device: torch.device, batch: int) -> Callable[[], None]:
    """One optimizer step of a fresh model on a fixed random batch, as ``train_epoch`` takes it."""
    model, normalize, optimizer = build(spec, precision, device)
    images, labels = random_batch(spec, batch, device)
    model.train()

    def step() -> None:
        with autocast(precision, device):
            loss = F.cross_entropy(model(normalize(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def scoring_step(spec: ModelSpec, precision: str, device: torch.device, batch: int) -> Callable[[], None]:
    """One batch of ``evaluate`` (no gradients, eval mode, autocast) with a fresh model on a random batch."""
    model, normalize, _ = build(spec, precision, device)
    images, _ = random_batch(spec, batch, device)
    model.eval()

    @torch.no_grad()
    def step() -> None:
        with autocast(precision, device):
            model(normalize(images)).argmax(1)

    return step


def training_flops(spec: ModelSpec, device: torch.device, batch: int) -> int:
    """FLOPs of one training step (forward and backward) at ``batch``, counted once."""
    step = training_step(spec, "fp32", device, batch)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure_pair(pair: Pair, device: torch.device, steps: int, blocks: int) -> list[dict[str, Any]]:
    """Parts 1 and 3 for both models of ``pair`` in every precision, timed in ``blocks`` blocks of ``steps``
    steps (times the pair's factor): one row each."""
    train_batch, eval_batch = pair.gpu_batches if device.type == "cuda" else pair.cpu_batches
    train_steps = steps * pair.step_factor
    eval_steps = max(1, round(train_steps * train_batch / eval_batch))  # as many images as training
    rows = []
    for spec in (pair.plain, pair.pushpull):
        flops = training_flops(spec, device, train_batch)
        for precision in PRECISIONS:
            train_s = seconds_per_step(training_step(spec, precision, device, train_batch), train_steps, blocks, device)
            eval_s = seconds_per_step(scoring_step(spec, precision, device, eval_batch), eval_steps, blocks, device)
            peak = peak_tflops(device, precision)
            tflops = flops / train_s / 1e12
            rows.append(
                {
                    "model": spec.name,
                    "precision": precision,
                    "train_batch": train_batch,
                    "eval_batch": eval_batch,
                    "train_steps": train_steps * blocks,
                    "eval_steps": eval_steps * blocks,
                    "train_images_per_s": train_batch / train_s,
                    "eval_images_per_s": eval_batch / eval_s,
                    "train_flops_per_step": flops,
                    "train_tflops_per_s": tflops,
                    "peak_tflops": peak,
                    "mfu": None if peak is None else tflops / peak,
                }
            )
            print(
                f"  {spec.name} {precision}: {train_batch / train_s:.0f} train, {eval_batch / eval_s:.0f} eval images/s",
                flush=True,
            )
    return rows


def overhead_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Part 2: per pair and precision, push-pull time per image over plain time per image."""
    by_key = {(r["model"], r["precision"]): r for r in rows}
    ratios = []
    for pair in PAIRS:
        for precision in PRECISIONS:
            plain, pushpull = by_key[pair.plain.name, precision], by_key[pair.pushpull.name, precision]
            ratios.append(
                {
                    "plain": pair.plain.name,
                    "pushpull": pair.pushpull.name,
                    "precision": precision,
                    "train": plain["train_images_per_s"] / pushpull["train_images_per_s"],
                    "eval": plain["eval_images_per_s"] / pushpull["eval_images_per_s"],
                }
            )
    return ratios


def packed_trial(n: int, device_type: str, precision: str, steps: int, blocks: int, start: Any, results: Any) -> None:
    """One of ``n`` LeNet-A trials running at once: warm up for ``steps`` steps, wait for the others at
    ``start`` (a barrier), train ``blocks`` blocks of ``steps`` steps and put (images/s in the median block,
    start, end) on ``results`` (perf_counter: one clock for all the processes). The median, not the fastest
    block: the fastest can come once the other trials have finished."""
    device = torch.device(device_type)
    if device.type == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() // n))
    batch = PAIRS[0].gpu_batches[0]
    step = training_step(PAIRS[0].plain, precision, device, batch)
    for _ in range(steps):
        step()
    synchronize(device)
    start.wait()
    began = time.perf_counter()
    seconds = statistics.median(block_seconds(step, steps, blocks, device))
    results.put((batch / seconds, began, time.perf_counter()))


def packing(device: torch.device, precision: str, steps: int, blocks: int) -> list[dict[str, Any]]:
    """Part 4: the summed images/s of 1, 2 and 4 LeNet-A trials in separate (spawned) processes, and all
    their images over the time from the first start to the last end (lower when some finish early)."""
    context = mp.get_context("spawn")
    batch = PAIRS[0].gpu_batches[0]
    rows = []
    for n in PACKING:
        start, results = context.Barrier(n), context.Queue()
        processes = [
            context.Process(target=packed_trial, args=(n, device.type, precision, steps, blocks, start, results))
            for _ in range(n)
        ]
        for process in processes:
            process.start()
        rates, starts, ends = zip(*(results.get(timeout=600) for _ in processes))
        for process in processes:
            process.join()
        span = n * blocks * steps * batch / (max(ends) - min(starts))
        rows.append(
            {
                "trials": n,
                "aggregate_images_per_s": sum(rates),
                "per_trial": list(rates),
                "images_over_span_per_s": span,
            }
        )
        print(f"  {n} at once: {sum(rates):.0f} images/s", flush=True)
    for row in rows:
        row["vs_one"] = row["aggregate_images_per_s"] / rows[0]["aggregate_images_per_s"]
    return rows


def synthetic_mnist(train: int, test: int) -> DatasetTensors:
    """An MNIST-shaped data set a LeNet learns within an epoch (so that the trial's health check keeps it):
    each image is its class's fixed random pattern plus noise."""
    generator = torch.Generator().manual_seed(0)
    patterns = (torch.rand(10, 1, 28, 28, generator=generator) < 0.3).float() * 160

    def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (count,), generator=generator)
        noise = torch.rand(count, 1, 28, 28, generator=generator) * 95
        return (patterns[labels] + noise).to(torch.uint8), labels

    return DatasetTensors(*split(train), *split(test))


def tune_trial(data: DatasetTensors, cuda: bool, budget: float, storage: str) -> pd.DataFrame:
    """Train the sweep's LeNet-A trial for 6 epochs through Tune with overhead budget ``budget``; Tune's
    record of it, one row per epoch."""
    from ray import tune

    from sweep.data import share_datasets
    from sweep.trainable import train_trial

    spec = build_sweep("lenet")[0]
    recipe = dataclasses.replace(spec.recipe, epochs=6, milestones=(), precision=default_precision(spec.model, cuda)[0])
    spec = dataclasses.replace(spec, recipe=recipe)
    resources = {"cpu": 1, "gpu": 0.25} if cuda else {"cpu": 2}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_trial, datasets=share_datasets({"mnist": data})), resources),
        param_space={"spec": spec.to_dict(), "gpus": cuda, "node_cpus": 2, "overhead_budget": budget},
        run_config=tune.RunConfig(
            storage_path=storage,
            name=f"bench-{budget:g}",
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = tuner.fit()[0]
    if result.error is not None:
        raise RuntimeError(f"the Tune trial failed: {result.error}")
    return result.metrics_dataframe.sort_values("training_iteration")


def orchestration_overhead(record: pd.DataFrame, budget: float) -> dict[str, Any]:
    """Part 5 from one trial's record: the share of its Tune iterations spent outside training, over every
    epoch but the last (whose noise suite is no per-epoch work)."""
    if (record["health"] != "healthy").any():
        raise RuntimeError(f"the Tune trial diverged: {record['health_reason'].dropna().tolist()}")
    outside = record["time_this_iter_s"] - record["epoch_seconds"]
    return {
        "overhead_budget": budget,
        "epochs": len(record),
        "epochs_evaluated": int(record["test_acc"].notna().sum()),
        "overhead_fraction": float(outside.iloc[:-1].sum() / record["time_this_iter_s"].iloc[:-1].sum()),
        "train_seconds": record["epoch_seconds"].tolist(),
        "outside_training_seconds": outside.tolist(),
    }


def orchestration(device: torch.device, train: int, test: int) -> list[dict[str, Any]]:
    """Part 5 with the overhead budget at 1.0 and at its default, in one quiet local Ray."""
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the old reporter: silent at verbose=0
    data = synthetic_mnist(train, test)
    cuda = device.type == "cuda"
    # address="local": a Ray of its own, never a cluster that happens to run on the machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as storage:
            rows = []
            for budget in (1.0, DEFAULT_OVERHEAD_BUDGET):
                began = time.perf_counter()
                rows.append(orchestration_overhead(tune_trial(data, cuda, budget, storage), budget))
                rows[-1]["trial_wall_seconds"] = time.perf_counter() - began
                print(f"  budget {budget:g}: {rows[-1]['overhead_fraction']:.1%} outside training", flush=True)
    finally:
        ray.shutdown()
    return rows


def print_throughput(report: dict[str, Any]) -> None:
    """Parts 1 and 3 as a table: TFLOP/s and MFU on CUDA, GFLOP/s on a CPU."""
    cuda = report["device_type"] == "cuda"
    unit, scale = ("TFLOP/s", 1e12) if cuda else ("GFLOP/s", 1e9)
    print(
        f"\n1, 3. images/s (fastest of {report['blocks']} timed blocks) and the FLOPs of one training step (forward + backward)"
    )
    print(
        f"{'model':<12} {'prec':<5} {'batch tr/ev':>11} {'steps tr/ev':>11} {'train img/s':>11} {'eval img/s':>10} "
        f"{'GFLOP/step':>10} {unit:>8}" + (f" {'MFU':>6}" if cuda else "")
    )
    for r in report["throughput"]:
        line = (
            f"{r['model']:<12} {r['precision']:<5} {r['train_batch']:>5}/{r['eval_batch']:<5} "
            f"{r['train_steps']:>5}/{r['eval_steps']:<5} {r['train_images_per_s']:>11.1f} {r['eval_images_per_s']:>10.1f} "
            f"{r['train_flops_per_step'] / 1e9:>10.2f} {r['train_tflops_per_s'] * 1e12 / scale:>8.2f}"
        )
        if cuda:
            line += f" {r['mfu']:>6.1%}" if r["mfu"] is not None else f" {'n/a':>6}"
        print(line)


def print_pushpull(report: dict[str, Any]) -> None:
    """Part 2 as a table."""
    print("\n2. push-pull overhead: push-pull time per image / plain time per image")
    print(f"{'pair':<26} {'prec':<5} {'train':>6} {'eval':>6}")
    for r in report["pushpull_overhead"]:
        print(f"{r['plain'] + ' -> ' + r['pushpull']:<26} {r['precision']:<5} {r['train']:>6.2f} {r['eval']:>6.2f}")


def print_packing(report: dict[str, Any]) -> None:
    """Part 4 as a table: summed images/s, its ratio to one trial, all images over the whole span."""
    print(
        f"\n4. LeNet-A trials training at once in separate processes ({report['packing_precision']}, batch 128, "
        f"median of {report['blocks']} blocks of {report['packing_steps']} steps each)"
    )
    print(f"{'trials':>6} {'img/s (sum)':>11} {'vs 1':>5} {'img/s (span)':>12}  per trial")
    for r in report["packing"]:
        per_trial = ", ".join(f"{rate:.0f}" for rate in r["per_trial"])
        print(
            f"{r['trials']:>6} {r['aggregate_images_per_s']:>11.0f} {r['vs_one']:>5.2f} {r['images_over_span_per_s']:>12.0f}  {per_trial}"
        )


def print_orchestration(report: dict[str, Any]) -> None:
    """Part 5 as a table, with every epoch's seconds outside training and in training."""
    print(
        f"\n5. time outside training in the Tune iterations of a LeNet-A trial ({report['tune_train_images']} train / "
        f"{report['tune_test_images']} test images, 6 epochs; overhead over epochs 1-5)"
    )
    print(f"{'budget':>6} {'evaluated':>9} {'overhead':>8} {'trial s':>7}  per epoch: outside training / training (s)")
    for r in report["orchestration"]:
        epochs = "  ".join(f"{o:.2f}/{t:.2f}" for o, t in zip(r["outside_training_seconds"], r["train_seconds"]))
        print(
            f"{r['overhead_budget']:>6g} {r['epochs_evaluated']:>4}/{r['epochs']:<4} {r['overhead_fraction']:>8.1%} "
            f"{r['trial_wall_seconds']:>7.1f}  {epochs}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, help="training steps per timed block of a WRN (LeNets: 5x; default 10 on CUDA, 1 on a CPU)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one timed block in place of three, fewer packing steps, a smaller Tune data set",
    )
    args = parser.parse_args()
    device = device_for(None)  # outside Ray: the first GPU torch can use, else the CPU
    steps = args.steps or (10 if device.type == "cuda" else 1)
    blocks = 1 if args.quick else 3
    began = time.perf_counter()
    report: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "steps": steps,
        "blocks": blocks,
        "load_average_before": os.getloadavg()[0],
    }
    print(f"{report['device']}, torch {report['torch']}", flush=True)

    print("1-3. throughput, FLOPs, push-pull overhead", flush=True)
    report["throughput"] = [row for pair in PAIRS for row in measure_pair(pair, device, steps, blocks)]
    report["pushpull_overhead"] = overhead_ratios(report["throughput"])

    print("4. LeNet packing", flush=True)
    lenet = build_sweep("lenet")[0].model
    report["packing_precision"] = default_precision(lenet, gpus=device.type == "cuda")[0]  # what sweep.run picks
    report["packing_steps"] = 100 * steps
    report["packing"] = packing(device, report["packing_precision"], report["packing_steps"], blocks)

    print("5. orchestration overhead", flush=True)
    if importlib.util.find_spec("ray") is None:  # a GPU image with torch alone: parts 1-4 need nothing else
        print("  skipped: Ray is not installed here", flush=True)
        report["orchestration"] = []
    # MNIST's 6:1 of training to test images, so that evaluating weighs on an epoch as it does on MNIST.
    report["tune_train_images"], report["tune_test_images"] = (6000, 1000) if args.quick else (12000, 2000)
    if "orchestration" not in report:
        report["orchestration"] = orchestration(device, report["tune_train_images"], report["tune_test_images"])

    report["wall_seconds"] = time.perf_counter() - began
    report["load_average_after"] = os.getloadavg()[0]
    print(
        f"\n{report['device']}, torch {report['torch']}, --steps {steps}{' --quick' if args.quick else ''}; load average "
        f"(1 min: processes wanting a core) {report['load_average_before']:.1f} before, {report['load_average_after']:.1f} after"
    )
    for part in (print_throughput, print_pushpull, print_packing, print_orchestration):
        part(report)
    print(f"\n{report['wall_seconds']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"results in {args.json}")


if __name__ == "__main__":
    main()
