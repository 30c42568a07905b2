"""Records tests/data/loss_traces.json: per-step training losses of LeNet trials on real MNIST.

    python tests/data/record_loss_traces.py --data-root /work/shared/data   # about 2 minutes on 2 CPU cores

Each trace is one trial's judged window trained as ``sweep.trainable.train_trial`` trains it (seeds for torch,
Python and the data generator, one torch thread, ``train_epoch``), with the smoke (100 steps, batch 64) or
paper (first epoch: 469 steps, batch 128) LeNet recipe at the given lr; losses rounded to 3 decimals, the
clean test accuracy after it as the trial scores it. A trace that turns NaN (lr 50) is recorded step by step
(train_epoch stops at the first non-finite loss and keeps no losses) up to that step, NaN written as null.
Not a test: the tests read the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from models import ModelSpec, build_model
from sweep.data import load_dataset
from sweep.datasets import DATASETS
from sweep.specs import default_recipe
from sweep.training import (
    Normalizer,
    capped_test_set,
    evaluate,
    learning_rate,
    make_optimizer,
    steps_per_epoch,
    train_epoch,
)

# name -> (model, seed, profile, lr, what it shows)
TRACES = {
    "slow-D-s1": ("D", 1, "smoke", 0.01, "slow starter, judged diverged by the whole-window mean (2.111)"),
    "slow-PD-s1": ("PD", 1, "smoke", 0.01, "slow starter, judged diverged by the whole-window mean (2.117)"),
    "slow-PB-s17": ("PB", 17, "smoke", 0.01, "slowest of 160 lr 0.01 trials: late loss above 0.9 ln 10, still falling"),
    "collapse-PA-s2-lr0.1": ("PA", 2, "smoke", 0.1, "collapse to ln 10, one class"),
    "collapse-PB-s3-lr0.1": ("PB", 3, "smoke", 0.1, "collapse to ln 10, one class"),
    "collapse-PB-s6-lr0.1": ("PB", 6, "smoke", 0.1, "learned, then collapsed to ln 10"),
    "collapse-PB-s8-lr0.1": ("PB", 8, "smoke", 0.1, "learned early, then collapsed to ln 10"),
    "collapse-PA-s4-lr0.1-paper": ("PA", 4, "paper", 0.1, "collapse in the paper recipe's first epoch (469 steps)"),
    "spike-collapse-PA-s1-lr0.5": ("PA", 1, "smoke", 0.5, "loss spikes, then falls back only to ln 10"),
    "nan-PA-s0-lr50": ("PA", 0, "smoke", 50.0, "blows up, NaN at step 22"),
}


def setup(name: str, seed: int, profile: str, lr: float):
    recipe = dataclasses.replace(default_recipe("lenet", profile), lr=lr, epochs=1)
    torch.manual_seed(seed)
    random.seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(ModelSpec(arch="lenet", variant=name[-1], pushpull=name.startswith("P")))
    return recipe, generator, model, make_optimizer(model, recipe)


def until_non_finite(data, normalize, name: str, seed: int, profile: str, lr: float) -> list[float]:
    """train_epoch's loop (no augmentation, no clipping: the LeNet recipes), reading the loss every step."""
    recipe, generator, model, optimizer = setup(name, seed, profile, lr)
    model.train()
    order = torch.randperm(len(data.train_images), generator=generator)
    batches = order.split(recipe.batch_size)[: steps_per_epoch(recipe, len(data.train_images))]
    losses = []
    for step, index in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(recipe, 0, step, len(batches))
        loss = F.cross_entropy(model(normalize(data.train_images[index].float().div_(255))), data.train_labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", default=str(Path(__file__).with_name("loss_traces.json")))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a LeNet trial gets one CPU
    data = load_dataset("mnist", args.data_root)
    normalize = Normalizer(DATASETS["mnist"].mean, DATASETS["mnist"].std, torch.device("cpu"), enabled=True)
    traces = {}
    for key, (name, seed, profile, lr, shows) in TRACES.items():
        recipe, generator, model, optimizer = setup(name, seed, profile, lr)
        entry = {"model": name, "seed": seed, "profile": profile, "lr": lr, "shows": shows}
        if lr < 50:
            stats = train_epoch(
                model, optimizer, data.train_images, data.train_labels, recipe, normalize, generator, 0, flip=False
            )
            # the loop above must be train_epoch's: same losses where both run
            assert key != "slow-D-s1" or list(stats.step_losses) == until_non_finite(
                data, normalize, name, seed, profile, lr
            )
            test_images, test_labels = capped_test_set(data.test_images, data.test_labels, recipe)
            entry["test_acc"] = round(evaluate(model, test_images, test_labels, normalize, recipe.eval_batch_size), 2)
            losses = stats.step_losses
        else:
            losses = until_non_finite(data, normalize, name, seed, profile, lr)
        entry["losses"] = [round(x, 3) if math.isfinite(x) else None for x in losses]
        traces[key] = entry
        print(key, len(losses), entry.get("test_acc"), flush=True)
    note = (
        "Per-step training losses (rounded to 3 decimals; null = NaN) of LeNet trials on the full official MNIST, "
        "recorded by tests/data/record_loss_traces.py as sweep.trainable trains them; smoke: the first 100 steps "
        "(batch 64), paper: the first epoch (469 steps, batch 128); SGD Nesterov 0.9, weight decay 5e-4. "
        "test_acc: clean test accuracy in percent after those steps (smoke: first 500 test images)."
    )
    lines = [f"  {json.dumps(key)}: {json.dumps(entry)}" for key, entry in traces.items()]  # one trace a line
    Path(args.out).write_text(f'{{\n "note": {json.dumps(note)},\n "traces": {{\n' + ",\n".join(lines) + "\n }\n}\n")


if __name__ == "__main__":
    main()
