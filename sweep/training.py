"""The training and scoring loop of one trial, on whole-data-set tensors (no Ray, no MLflow, no files).

Batches are cut from a uint8 tensor that lives on the trial's device and augmented as tensors, as in
airbench: no per-sample PIL pipeline, no DataLoader workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from perturb import Perturbation, noise_suite, perturb_test_set
from sweep.defaults import DEFAULT_OVERHEAD_BUDGET
from sweep.specs import Recipe

__all__ = [
    "EpochStats",
    "Normalizer",
    "augment",
    "autocast",
    "evaluate",
    "evaluate_suite",
    "NonFiniteLoss",
    "OverheadBudget",
    "learning_rate",
    "make_optimizer",
    "steps_per_epoch",
    "capped_test_set",
    "train_epoch",
]


class Normalizer:
    """The model's input from images: ``(x - mean) / std`` per channel, or the identity; x: (N, C, H, W) in
    [0, 1]. With ``channels_last`` the input is laid out NHWC in memory, as a channels-last model wants it."""

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        enabled: bool,
        channels_last: bool = False,
    ) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.enabled = enabled
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        normalized = (images - self.mean) / self.std if self.enabled else images
        return normalized.contiguous(memory_format=self.memory_format)


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context of a recipe's ``precision``: bfloat16 for ``bf16`` (on CPU too), off for ``fp32``.

    Under it the forward pass and the loss run in bf16 where autocast deems it safe; parameters, gradients
    and the optimizer state stay fp32, so no loss scaling is needed (bf16 has fp32's exponent range).
    """
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@dataclass(frozen=True)
class EpochStats:
    """One epoch of training: mean loss, accuracy in percent, images seen, wall-clock seconds, the loss
    of every step in order (``step_losses``, one float per optimizer step: what the health monitor judges;
    see ``sweep.health``) and the learning rate of its last step."""

    loss: float
    accuracy: float
    images: int
    seconds: float
    step_losses: tuple[float, ...]
    lr: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


@dataclass
class OverheadBudget:
    """At which epochs a trial evaluates on the clean test set and checkpoints (its per-epoch overhead).

    The first epoch it trains and the last always do; any other does when the overhead spent so far plus
    what the last one cost stays within ``fraction`` of the trial's time. A GPU epoch of a LeNet takes
    about as long as evaluating and checkpointing it, a CPU one ten times as long, a WRN's a hundred times:
    one rule keeps the overhead at ``fraction`` on each. ``fraction`` >= 1: every epoch.
    """

    fraction: float = DEFAULT_OVERHEAD_BUDGET
    spent: float = 0.0  # seconds of overhead so far
    elapsed: float = 0.0  # seconds of training and overhead so far
    last_cost: float = 0.0

    def due(self, first: bool, last: bool, train_seconds: float) -> bool:
        """Whether the epoch that just trained for ``train_seconds`` evaluates and checkpoints."""
        self.elapsed += train_seconds
        if first or last:
            return True
        projected = self.spent + self.last_cost
        return projected <= self.fraction * (self.elapsed + self.last_cost)

    def spend(self, seconds: float, evaluated: bool) -> None:
        """Count the ``seconds`` the epoch spent after training (evaluation, checkpoint, report)."""
        self.spent += seconds
        self.elapsed += seconds
        if evaluated:
            self.last_cost = seconds


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD with the recipe's momentum and weight decay; :func:`learning_rate` sets its rate every step."""
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def learning_rate(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The rate of step ``step`` (0-based) of epoch ``epoch`` (0-based).

    ``lr * lr_decay ** (number of milestones <= epoch)``, times ``(global step + 1) / warm-up steps`` during
    a linear warm-up of ``warmup_epochs`` epochs (``warmup_epochs * steps_per_epoch`` steps).
    """
    rate = recipe.lr * recipe.lr_decay ** sum(epoch >= m for m in recipe.milestones)
    warmup_steps = recipe.warmup_epochs * steps_per_epoch
    global_step = epoch * steps_per_epoch + step
    if global_step < warmup_steps:
        rate *= (global_step + 1) / warmup_steps
    return rate


def steps_per_epoch(recipe: Recipe, train_images: int) -> int:
    """Optimizer steps in one epoch over ``train_images`` images (capped by ``max_train_batches``)."""
    steps = -(-train_images // recipe.batch_size)
    return steps if recipe.max_train_batches is None else min(steps, recipe.max_train_batches)


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite at ``step`` (0-based) of the epoch."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss is {value} at step {step}")
        self.step, self.value = step, value


# How often (in steps) the loop looks at its non-finite flag: a host sync every step would slow small
# models on a GPU, and a NaN cannot heal, so finding it a few steps late only wastes those steps.
NAN_CHECK_EVERY = 8


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop (H x W, the images' own size) of the zero-padded batch and, with ``flip``, random horizontal
    flip, per image. ``flip`` only where a mirrored image keeps its label (``DatasetInfo.flips``: not digits).

    images: (N, C, H, W) float; returns the same shape. Draws come from ``generator`` (on the CPU); without
    ``flip`` it draws the crops only.
    """
    n, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator).to(images.device)
    rows = (offsets[0] + torch.arange(height, device=images.device)).view(n, 1, height, 1)
    cols = (offsets[1] + torch.arange(width, device=images.device)).view(n, 1, 1, width)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channels = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    cropped = padded[batch, channels, rows, cols]
    if not flip:
        return cropped
    flipped = (torch.rand(n, generator=generator) < 0.5).to(images.device).view(n, 1, 1, 1)
    return torch.where(flipped, cropped.flip(3), cropped)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    normalize: Normalizer,
    generator: torch.Generator,
    epoch: int,
    *,
    flip: bool,
) -> EpochStats:
    """One pass over (a shuffled, possibly capped part of) the training set.

    images: (N, C, H, W) uint8 on the model's device; labels: (N,) int64 on the same device; epoch:
    0-based, for the learning-rate schedule; flip: whether the recipe's augmentation may mirror an image
    (the data set's ``DatasetInfo.flips``). Raises NonFiniteLoss with the first step whose loss was NaN or
    infinite.
    """
    start = time.perf_counter()
    model.train()
    order = torch.randperm(len(images), generator=generator).to(images.device)
    batches = order.split(recipe.batch_size)[: steps_per_epoch(recipe, len(images))]
    loss_sum = torch.zeros((), device=images.device)
    step_losses = torch.zeros(len(batches), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    first_bad_step = torch.full((), -1, device=images.device, dtype=torch.int64)
    seen = 0
    for step, index in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(recipe, epoch, step, len(batches))
        batch = images[index].float().div_(255)
        if recipe.augment:
            batch = augment(batch, generator, flip=flip)
        target = labels[index]
        with autocast(recipe.precision, images.device):
            logits = model(normalize(batch))
            loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        # Accumulated on the device: host syncs only every NAN_CHECK_EVERY steps and once per epoch.
        loss_sum += loss.detach() * len(index)
        step_losses[step] = loss.detach()
        correct += (logits.argmax(1) == target).sum()
        seen += len(index)
        bad = ~torch.isfinite(loss.detach())
        first_bad_step = torch.where(bad & (first_bad_step < 0), step, first_bad_step)
        if (step + 1) % NAN_CHECK_EVERY == 0 or step + 1 == len(batches):
            if first_bad_step.item() >= 0:
                raise NonFiniteLoss(int(first_bad_step.item()), float(loss.detach().item()))
    return EpochStats(
        loss=loss_sum.item() / seen,
        accuracy=100.0 * correct.item() / seen,
        images=seen,
        seconds=time.perf_counter() - start,
        step_losses=tuple(step_losses.tolist()),  # one device->host copy per epoch
        lr=optimizer.param_groups[0]["lr"],
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: Normalizer,
    batch_size: int,
    precision: str = "fp32",
) -> float:
    """Accuracy in percent. images: (N, C, H, W) float in [0, 1] (possibly noisy), labels: (N,) int64;
    precision: the recipe's (see :func:`autocast`)."""
    model.eval()
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    with autocast(precision, images.device):
        for batch, target in zip(images.split(batch_size), labels.split(batch_size)):
            correct += (model(normalize(batch)).argmax(1) == target).sum()
    return 100.0 * correct.item() / len(images)


def capped_test_set(images: torch.Tensor, labels: torch.Tensor, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """The (possibly capped) test set as floats in [0, 1] and its labels."""
    count = len(images) if recipe.max_test_images is None else min(recipe.max_test_images, len(images))
    return images[:count].float().div_(255), labels[:count]


def evaluate_suite(
    model: nn.Module,
    dataset: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: Normalizer,
    batch_size: int,
    clean_accuracy: float | None = None,
    precision: str = "fp32",
) -> list[tuple[Perturbation, float]]:
    """Accuracy in percent on every setting of ``noise_suite(dataset)``, in suite order.

    images: (N, C, H, W) float in [0, 1]. Every model sees the same noisy images (see perturb_test_set).
    clean_accuracy: the accuracy on ``images`` when the caller has just measured it (it is the score of
    every setting that leaves the images unchanged); measured here when None. precision: see :func:`evaluate`.
    """
    if clean_accuracy is None:
        clean_accuracy = evaluate(model, images, labels, normalize, batch_size, precision)
    results = []
    for setting in noise_suite(dataset):
        if setting.is_identity:
            results.append((setting, clean_accuracy))
            continue
        noisy = perturb_test_set(images, dataset, setting)
        results.append((setting, evaluate(model, noisy, labels, normalize, batch_size, precision)))
    return results
