import dataclasses

import torch
from torch import nn

from models import ModelSpec, build_model
from perturb import noise_suite
from sweep.data import MEAN_STD
from sweep.specs import default_recipe
from sweep.training import Normalizer, capped_test_set, evaluate, evaluate_suite, make_optimizer, train_epoch


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
    optimizer, _ = make_optimizer(model, recipe)
    normalize = Normalizer(*MEAN_STD["mnist"], torch.device("cpu"), enabled=True)
    generator = torch.Generator().manual_seed(0)
    epochs = [train_epoch(model, optimizer, images, labels, recipe, normalize, generator) for _ in range(6)]
    assert all(epoch.images == 4 * recipe.batch_size for epoch in epochs)
    assert epochs[-1].loss < 0.5 * epochs[0].loss
    test_images, test_labels = capped_test_set(images, labels, recipe)
    assert len(test_images) == len(test_labels) == min(recipe.max_test_images, 512)
    assert test_images.dtype == torch.float32 and test_images.max() == 1.0
