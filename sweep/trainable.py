"""The Ray Tune function trainable: one trial = one model trained, evaluated and checkpointed at the epochs
its overhead budget allows (the first and the last always), then scored.

It reports to Tune only (``ray.tune.report``); tracking happens on the driver (see sweep.tracking), so
trials need no access to the MLflow store.
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
from sweep.checkpoints import CHECKPOINT_FILE
from sweep.data import MEAN_STD, DatasetTensors
from sweep.defaults import DEFAULT_OVERHEAD_BUDGET
from sweep.health import HealthMonitor
from sweep.metrics import epoch_metrics, noise_metric
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

__all__ = ["restore_trial_state", "save_trial_state", "train_trial"]


def _save_checkpoint(directory: str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a reader never sees a half-written file."""
    target = Path(directory) / CHECKPOINT_FILE
    partial = target.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, target)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore the RNG states of ``_rng_state``. They must be CPU ByteTensors, whatever the trial's device:
    ``torch.set_rng_state`` and ``Generator.set_state`` refuse any other tensor."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU of the saving process; a node that shows this process fewer GPUs restores those.
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


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
            "rng": _rng_state(generator),
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
    state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])  # copies into the parameters, on their device
    optimizer.load_state_dict(state["optimizer"])  # casts each state tensor to its parameter's device
    _restore_rng(state["rng"], generator)
    return HealthMonitor(**state["health"]), state["epoch"], state["final_metrics"]


def _report_diverged(reason: str, healthy_epochs: int, node_id: str) -> None:
    """End the trial as diverged: a normal return, so that Ray does not retry a collapse that would only
    repeat, and no new checkpoint, so that the last one kept is from a healthy epoch."""
    tune.report({"node_id": node_id, "health": "diverged", "health_reason": reason, "epoch": healthy_epochs})


def train_trial(config: dict[str, Any], data: dict[str, DatasetTensors]) -> None:
    """Train and score the trial in ``config["spec"]`` (a TrialSpec dict) on ``data[spec.dataset]``.

    Every epoch reports its training metrics; the epochs :class:`OverheadBudget` picks (with
    ``config["overhead_budget"]``, the first and the last always) also report ``test_acc`` and a checkpoint.
    Resumes from ``tune.get_checkpoint()`` when Tune restarts the trial (worker lost, sweep resumed).
    """
    spec = TrialSpec.from_config(config)
    recipe = spec.recipe
    # A trial without a GPU gets CUDA_VISIBLE_DEVICES="" from Ray, so this is its share of the node.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))

    tensors = data[spec.dataset]
    train_images, train_labels = tensors.train_images.to(device), tensors.train_labels.to(device)
    test_images, test_labels = capped_test_set(tensors.test_images.to(device), tensors.test_labels.to(device), recipe)
    # channels-last lets cuDNN use its fastest (NHWC, tensor-core) kernels for the WRN's convolutions.
    channels_last = device.type == "cuda" and spec.model.arch == "wrn"
    normalize = Normalizer(
        *MEAN_STD[spec.dataset], device=device, enabled=recipe.normalize, channels_last=channels_last
    )

    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    model = build_model(spec.model).to(
        device, memory_format=torch.channels_last if channels_last else torch.preserve_format
    )
    optimizer = make_optimizer(model, recipe)
    network = torch.compile(model) if recipe.compile else model  # shares the parameters; checkpoints save ``model``
    monitor = HealthMonitor(spec.model.num_classes)

    start_epoch, final_metrics = 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            monitor, start_epoch, final_metrics = restore_trial_state(directory, model, optimizer, generator)

    if final_metrics is not None:
        tune.report(final_metrics)  # finished before the restart: report the scores again, nothing to train
        return

    node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran the trial
    budget = OverheadBudget(config.get("overhead_budget", DEFAULT_OVERHEAD_BUDGET))
    for epoch in range(start_epoch, recipe.epochs):
        try:
            stats = train_epoch(network, optimizer, train_images, train_labels, recipe, normalize, generator, epoch)
        except NonFiniteLoss as error:
            _report_diverged(f"loss is {error.value} at epoch {epoch + 1} step {error.step + 1}", epoch, node_id)
            return
        overhead_start = time.perf_counter()
        last = epoch + 1 == recipe.epochs
        due = budget.due(first=epoch == start_epoch, last=last, train_seconds=stats.seconds)
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
        if last:
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
            final_metrics = metrics
        if not due:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                save_trial_state(directory, model, optimizer, monitor, generator, epoch + 1, final_metrics)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        budget.spend(time.perf_counter() - overhead_start, evaluated=due)
