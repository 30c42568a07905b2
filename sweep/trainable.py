"""The Ray Tune function trainable: one trial = one model trained, evaluated and checkpointed at the epochs
its overhead budget allows (the first and the last always), then scored.

It reports to Tune only (``ray.tune.report``); tracking happens on the driver (see sweep.tracking), so
trials need no access to the MLflow store. A trial computes on the GPU Ray assigned to it, else on the CPU
(sweep.devices); one that holds a GPU torch cannot use fails in its first second, without retries
(:class:`NoRetryOnDeviceError`).
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from models import build_model
from sweep.checkpoints import CHECKPOINT_FILE, read_reported, write_reported
from sweep.data import fetch_dataset
from sweep.datasets import DATASETS
from sweep.defaults import DEFAULT_OVERHEAD_BUDGET
from sweep.devices import DEVICE_ERROR, DeviceUnusable, assigned_gpu_ids, check_precision, device_for
from sweep.health import HealthMonitor
from sweep.metrics import epoch_metrics, noise_metric
from sweep.objectives import metric_value
from sweep.search import result_metric
from sweep.specs import TrialSpec
from sweep.training import (
    NonFiniteLoss,
    Normalizer,
    OverheadBudget,
    capped_test_set,
    evaluate,
    evaluate_suite,
    make_optimizer,
    train_epoch,
)

__all__ = ["NoRetryOnDeviceError", "restore_trial_state", "save_trial_state", "train_trial"]


def _save_checkpoint(directory: str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a reader never sees a half-written file."""
    target = Path(directory) / CHECKPOINT_FILE
    partial = target.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, target)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every RNG state a trial on ``device`` draws from; CUDA's only on a GPU (a CPU trial never calls CUDA)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "data": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Restore the RNG states of ``_rng_state`` for a trial on ``device``. They must be CPU ByteTensors,
    whatever the trial's device: ``torch.set_rng_state`` and ``Generator.set_state`` refuse any other tensor."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    generator.set_state(state["data"])
    if "cuda" in state and device.type == "cuda":
        # One state per GPU of the saving process; a node that shows this process fewer GPUs restores those.
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def save_trial_state(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    monitor: HealthMonitor,
    generator: torch.Generator,
    epoch: int,
    final_metrics: dict[str, Any] | None,
) -> None:
    """Write the state of a trial after ``epoch`` (1-based) epochs to ``directory/CHECKPOINT_FILE``, atomically:
    weights, optimizer state, health state, every RNG state (torch CPU, Python, the data generator, CUDA) and
    the final metrics (None until the last epoch). Needs no Ray: see :func:`restore_trial_state`."""
    _save_checkpoint(
        str(directory),
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "health": dataclasses.asdict(monitor),
            "rng": _rng_state(generator, _device_of(model)),
            "epoch": epoch,
            "final_metrics": final_metrics,
        },
    )


def restore_trial_state(
    directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[HealthMonitor, int, dict[str, Any] | None]:
    """Restore what :func:`save_trial_state` wrote to ``directory``: (health monitor, epochs done, final metrics).

    The weights go into ``model`` and the optimizer state into ``optimizer`` (onto the device of each
    parameter), every RNG state back into torch, Python, ``generator`` (a CPU generator) and CUDA. The file
    is loaded on the CPU whatever the device of ``model``: loading it onto a GPU would turn the RNG states
    into CUDA tensors, which ``torch.set_rng_state`` and ``Generator.set_state`` refuse (TypeError).
    """
    # weights_only: a checkpoint on shared storage is data, never code to run (it holds tensors and plain values).
    state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])  # copies into the parameters, on their device
    optimizer.load_state_dict(state["optimizer"])  # casts each state tensor to its parameter's device
    _restore_rng(state["rng"], generator, _device_of(model))
    return HealthMonitor(**state["health"]), state["epoch"], state["final_metrics"]


def _report_diverged(reason: str, healthy_epochs: int, node_id: str) -> None:
    """End the trial as diverged: a normal return, so that Ray does not retry a collapse that would only
    repeat, and no new checkpoint, so that the last one kept is from a healthy epoch."""
    tune.report({"node_id": node_id, "health": "diverged", "health_reason": reason, "epoch": healthy_epochs})


def _trial_device(spec: TrialSpec) -> torch.device:
    """The device Ray assigned to the trial (sweep.devices), fit for its recipe's precision. A trial whose
    GPU torch cannot use reports ``DEVICE_ERROR`` (the one line) and raises: see :class:`NoRetryOnDeviceError`."""
    try:
        device = device_for(assigned_gpu_ids())
        check_precision(device, spec.recipe.precision)
    except DeviceUnusable as error:
        tune.report({DEVICE_ERROR: str(error)})
        raise DeviceUnusable(f"trial {spec.key}: {error}") from None
    return device


def train_trial(config: dict[str, Any], datasets: dict[str, Any]) -> None:
    """Train and score the trial in ``config["spec"]`` (a TrialSpec dict) on its data set, fetched from
    ``datasets`` (references of sweep.data.share_datasets, by data set name).

    Every epoch reports its training metrics; the epochs :class:`OverheadBudget` picks (with
    ``config["overhead_budget"]``, the first and the last always) also report ``test_acc`` and a checkpoint,
    which holds every report so far (sweep.checkpoints.REPORTED_FILE).
    Resumes from ``tune.get_checkpoint()`` when Tune restarts the trial (worker lost, sweep resumed).
    """
    spec = TrialSpec.from_config(config)
    recipe = spec.recipe
    device = _trial_device(spec)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))

    tensors = fetch_dataset(datasets[spec.dataset])
    train_images, train_labels = tensors.train_images.to(device), tensors.train_labels.to(device)
    test_images, test_labels = capped_test_set(tensors.test_images.to(device), tensors.test_labels.to(device), recipe)
    # channels-last lets cuDNN use its fastest (NHWC, tensor-core) kernels for the WRN's convolutions.
    channels_last = device.type == "cuda" and spec.model.arch == "wrn"
    info = DATASETS[spec.dataset]  # the data set: its mean, std and whether it flips
    normalize = Normalizer(info.mean, info.std, device=device, enabled=recipe.normalize, channels_last=channels_last)

    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    model = build_model(spec.model).to(
        device, memory_format=torch.channels_last if channels_last else torch.preserve_format
    )
    optimizer = make_optimizer(model, recipe)
    network = torch.compile(model) if recipe.compile else model  # shares the parameters; checkpoints save ``model``
    monitor = HealthMonitor(spec.model.num_classes)

    start_epoch, final_metrics, reported = 0, None, []  # reported: every epoch's report, saved with each checkpoint
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            monitor, start_epoch, final_metrics = restore_trial_state(directory, model, optimizer, generator)
            reported = read_reported(directory)

    if final_metrics is not None:
        tune.report(final_metrics)  # finished before the restart: report the scores again, nothing to train
        return

    node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran the trial
    budget = OverheadBudget(config.get("overhead_budget", DEFAULT_OVERHEAD_BUDGET))
    search_metrics = config.get("search_metrics") or []
    for epoch in range(start_epoch, recipe.epochs):
        try:
            stats = train_epoch(
                network, optimizer, train_images, train_labels, recipe, normalize, generator, epoch, flip=info.flips
            )
        except NonFiniteLoss as error:
            _report_diverged(f"loss is {error.value} at epoch {epoch + 1} step {error.step + 1}", epoch, node_id)
            return
        overhead_start = time.perf_counter()
        last = epoch + 1 == recipe.epochs
        # A study's search (sweep.search) reads its metric every epoch: each epoch is scored on the suite.
        scored = last or bool(search_metrics)
        due = scored or budget.due(first=epoch == start_epoch, last=last, train_seconds=stats.seconds)
        test_acc = (
            evaluate(network, test_images, test_labels, normalize, recipe.eval_batch_size, recipe.precision)
            if due
            else None
        )
        reason = monitor.check_epoch(epoch + 1, stats.step_losses, test_acc)
        if reason is not None:
            _report_diverged(reason, epoch, node_id)
            return
        metrics: dict[str, Any] = {"node_id": node_id, "health": "healthy", **epoch_metrics(epoch + 1, stats, test_acc)}
        if scored:
            scores = evaluate_suite(
                network,
                spec.dataset,
                test_images,
                test_labels,
                normalize,
                recipe.eval_batch_size,
                test_acc,
                recipe.precision,
            )
            metrics.update({noise_metric(s.noise, s.level): accuracy for s, accuracy in scores})
            accuracies = {(s.noise, s.level): accuracy for s, accuracy in scores}
            metrics.update({result_metric(m): metric_value(test_acc, accuracies, m) for m in search_metrics})
        if last:
            final_metrics = metrics
        reported.append(metrics)
        if not due:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                save_trial_state(directory, model, optimizer, monitor, generator, epoch + 1, final_metrics)
                write_reported(directory, reported)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        budget.spend(time.perf_counter() - overhead_start, evaluated=due)


class NoRetryOnDeviceError(tune.Callback):
    """Ends a trial whose GPU torch cannot use (its ``DEVICE_ERROR`` report) without Tune's retries, each of
    which would fail the same way in its first second; other failures are retried ``max_failures`` times.

    Tune has no retry policy per error, only a trial's ``max_failures``: the trial's is set to 0 between its
    report and the error that follows it, and back to ``max_failures`` whenever the trial starts, so that a
    resumed trial is retried as any other."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial.max_failures = self.max_failures

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if DEVICE_ERROR in result:
            trial.max_failures = 0
