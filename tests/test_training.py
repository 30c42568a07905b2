import dataclasses

import pytest
import torch
from torch import nn

from models import ModelSpec, build_model
from perturb import noise_suite
from sweep.data import MEAN_STD
from sweep.health import HealthMonitor
from sweep.specs import default_recipe
from sweep.training import (
    NonFiniteLoss,
    Normalizer,
    capped_test_set,
    evaluate,
    evaluate_suite,
    learning_rate,
    make_optimizer,
    train_epoch,
)


class ConstantClass(nn.Module):
    """Predicts class 3 for every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 3] = 1
        return logits


def identity() -> Normalizer:
    return Normalizer((0.0,), (1.0,), torch.device("cpu"), enabled=False)


def test_evaluate_is_the_percentage_of_correct_predictions_whatever_the_batch_size():
    labels = torch.tensor([3, 3, 1, 3, 0, 3, 3, 2])
    images = torch.rand(8, 1, 28, 28)
    for batch_size in (1, 3, 8):
        assert evaluate(ConstantClass(), images, labels, identity(), batch_size) == 62.5


def test_evaluate_suite_scores_every_setting_in_suite_order():
    images, labels = torch.rand(6, 1, 28, 28), torch.tensor([3, 3, 3, 1, 1, 1])
    scores = evaluate_suite(ConstantClass(), "mnist", images, labels, identity(), 4)
    assert [setting for setting, _ in scores] == list(noise_suite("mnist"))
    assert all(accuracy == 50.0 for _, accuracy in scores)


def test_evaluate_suite_gives_the_callers_clean_accuracy_to_the_settings_that_leave_images_unchanged():
    images, labels = torch.rand(6, 1, 28, 28), torch.tensor([3, 3, 3, 1, 1, 1])
    scores = evaluate_suite(ConstantClass(), "mnist", images, labels, identity(), 4, clean_accuracy=12.5)
    assert [(s.noise, s.level) for s, accuracy in scores if accuracy == 12.5] == [("gaussian", 0.0), ("speckle", 0.0)]
    assert sum(accuracy == 50.0 for _, accuracy in scores) == len(scores) - 2


def test_normalizer_uses_the_datasets_mean_and_std():
    normalize = Normalizer(*MEAN_STD["cifar10"], torch.device("cpu"), enabled=True)
    out = normalize(torch.full((1, 3, 2, 2), 0.5))
    expected = [(0.5 - m) / s for m, s in zip(*MEAN_STD["cifar10"])]
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(expected))


def test_train_epoch_honours_the_batch_cap_and_lowers_the_loss():
    torch.manual_seed(0)
    recipe = dataclasses.replace(default_recipe("lenet", "smoke"), lr=0.01, max_train_batches=4)
    images = torch.zeros(512, 1, 28, 28, dtype=torch.uint8)
    labels = torch.arange(512) % 2
    images[labels == 1, :, 10:18, :] = 255  # class 1 has a bright bar
    model = build_model(ModelSpec(arch="lenet", variant="D"))
    optimizer = make_optimizer(model, recipe)
    normalize = Normalizer(*MEAN_STD["mnist"], torch.device("cpu"), enabled=True)
    generator = torch.Generator().manual_seed(0)
    epochs = [train_epoch(model, optimizer, images, labels, recipe, normalize, generator, epoch) for epoch in range(6)]
    assert all(epoch.images == 4 * recipe.batch_size for epoch in epochs)
    assert epochs[-1].loss < 0.5 * epochs[0].loss
    test_images, test_labels = capped_test_set(images, labels, recipe)
    assert len(test_images) == len(test_labels) == min(recipe.max_test_images, 512)
    assert test_images.dtype == torch.float32 and test_images.max() == 1.0


def test_warmup_rates_follow_the_formula_then_the_base_rate_and_its_milestones():
    recipe = dataclasses.replace(default_recipe("lenet", "paper"), lr=0.1, warmup_epochs=0.5, milestones=(2,), lr_decay=0.1)
    steps = 10  # warm-up: 0.5 epochs x 10 steps = 5 steps, rate 0.1 x (s + 1) / 5
    rates = [learning_rate(recipe, 0, step, steps) for step in range(steps)]
    assert rates[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert rates[5:] == [0.1] * 5
    assert learning_rate(recipe, 1, 3, steps) == 0.1
    assert learning_rate(recipe, 2, 0, steps) == pytest.approx(0.01)
    plain = dataclasses.replace(recipe, warmup_epochs=0.0)
    assert learning_rate(plain, 0, 0, steps) == 0.1


def test_train_epoch_applies_the_per_step_rates_and_clips_gradients():
    torch.manual_seed(0)
    recipe = dataclasses.replace(default_recipe("lenet", "smoke"), lr=0.1, warmup_epochs=1.0, max_train_batches=4, batch_size=8, grad_clip=1e-6)
    model = build_model(ModelSpec(arch="lenet", variant="D"))
    optimizer = make_optimizer(model, recipe)
    seen = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (seen.append((optimizer.param_groups[0]["lr"], torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())), step(*a, **k))[1]
    images, labels = torch.randint(0, 255, (64, 1, 28, 28), dtype=torch.uint8), torch.arange(64) % 10
    train_epoch(model, optimizer, images, labels, recipe, identity(), torch.Generator().manual_seed(0), 0)
    assert [rate for rate, _ in seen] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(norm <= 1.01e-6 for _, norm in seen)


def test_a_non_finite_loss_stops_the_epoch_with_the_step_it_happened():
    recipe = dataclasses.replace(default_recipe("lenet", "smoke"), lr=1e6, max_train_batches=None, batch_size=8)
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="lenet", variant="A"))
    images, labels = torch.randint(0, 255, (800, 1, 28, 28), dtype=torch.uint8), torch.arange(800) % 10
    with pytest.raises(NonFiniteLoss) as caught:
        train_epoch(model, make_optimizer(model, recipe), images, labels, recipe, identity(), torch.Generator().manual_seed(0), 0)
    assert caught.value.step < 20 and str(caught.value).startswith("loss is ")


def test_health_monitor_judges_learning_once_enough_steps_were_taken():
    monitor = HealthMonitor(num_classes=10)
    assert monitor.check_epoch(1, loss=2.30, accuracy=11.35, steps=60) is None  # 60 steps: too early to judge
    assert monitor.check_epoch(2, loss=2.30, accuracy=11.35, steps=60) == "training loss 2.300 after epoch 2 is not clearly below ln(10) = 2.303"
    assert HealthMonitor(10).check_epoch(1, loss=1.9, accuracy=14.0, steps=469) == "clean test accuracy 14.00 % after epoch 1 is at chance (10 %)"
    healthy = HealthMonitor(100)
    assert healthy.check_epoch(1, loss=3.8, accuracy=9.0, steps=391) is None
    assert healthy.check_epoch(2, loss=3.0, accuracy=20.0, steps=391) is None
    assert healthy.check_epoch(3, loss=9.0, accuracy=1.2, steps=391) == "clean test accuracy fell back to chance: 1.20 % at epoch 3"
    assert HealthMonitor(10, steps=5).check_epoch(1, loss=0.01, accuracy=3.0, steps=5) is None  # smoke WRN: never judged
