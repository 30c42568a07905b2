import numpy as np
import pytest
import torch
from skimage.util import random_noise

from perturb import (
    Perturbation,
    change_contrast,
    gaussian_noise,
    noise_seed,
    noise_suite,
    perturb,
    perturb_test_set,
    poisson_noise,
    speckle_noise,
)

INTENSITIES = np.array([0.0, 0.1, 0.25, 0.4, 0.5, 0.65, 0.8, 1.0])


def striped_image(repeats: int = 6000) -> np.ndarray:
    """A 1-channel image holding each of INTENSITIES in `repeats` pixels, shape (1, 8 * repeats // 60, 60)."""
    return np.repeat(INTENSITIES, repeats).reshape(1, -1, 60)


def residual_moments(image: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """(mean, variance) of noisy - image for each distinct value of image, shape (n_values, 2)."""
    residual = noisy - image
    return np.array([[residual[image == v].mean(), residual[image == v].var()] for v in np.unique(image)])


def ours(image: np.ndarray, noise: str, level: float, seed: int = 0) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    batch = torch.from_numpy(image).float().unsqueeze(0)
    return perturb(batch, Perturbation(noise, level), generator=generator)[0].double().numpy()


def assert_same_distribution(ours_moments: np.ndarray, reference_moments: np.ndarray, n: int) -> None:
    variance = np.maximum(reference_moments[:, 1], 1e-12)
    # Means agree within 5 standard errors of a difference of two sample means.
    np.testing.assert_array_less(np.abs(ours_moments[:, 0] - reference_moments[:, 0]), 5 * np.sqrt(2 * variance / n) + 1e-6)
    # Variances agree within 10 % (a sample variance over n = 6000 has a relative error of about 2 %).
    np.testing.assert_allclose(ours_moments[:, 1], reference_moments[:, 1], rtol=0.1, atol=1e-9)


@pytest.mark.parametrize(("noise", "level"), [("gaussian", 0.01), ("gaussian", 0.3), ("speckle", 0.02), ("speckle", 0.5)])
def test_gaussian_and_speckle_match_skimage_in_distribution(noise, level):
    image = striped_image()
    reference = random_noise(image, mode=noise, var=level, clip=False, rng=0)
    ours_moments = residual_moments(image, ours(image, noise, level))
    reference_moments = residual_moments(image, reference)
    assert_same_distribution(ours_moments, reference_moments, n=6000)
    expected_variance = level * (np.unique(image) ** 2 if noise == "speckle" else 1)
    np.testing.assert_allclose(ours_moments[:, 1], expected_variance, rtol=0.1, atol=1e-9)


@pytest.mark.parametrize("contrast", [0.2, 0.5, 1.0, 2.0, 2.5])
def test_poisson_after_contrast_change_matches_skimage_in_distribution(contrast):
    image = striped_image()
    contrasted = (image - 0.5) * contrast + 0.5
    reference = random_noise(contrasted, mode="poisson", clip=False, rng=0)
    ours_noisy = ours(image, "poisson", contrast)
    assert_same_distribution(
        residual_moments(contrasted, ours_noisy), residual_moments(contrasted, reference), n=6000
    )
    # Fewer distinct values than 8 round up to a scale of 8 photons per unit intensity (2^ceil(log2 8)).
    if contrasted.min() >= 0:
        np.testing.assert_allclose(residual_moments(contrasted, ours_noisy)[:, 1], np.unique(contrasted) / 8, rtol=0.1, atol=1e-9)


def test_poisson_scale_is_the_next_power_of_two_of_the_distinct_values_per_image():
    three_values = torch.tensor([0.2, 0.5, 0.9, 0.2] * 16).view(1, 1, 8, 8)
    five_values = torch.tensor([0.1, 0.3, 0.5, 0.7] * 15 + [0.9] * 4).view(1, 1, 8, 8)
    noisy = poisson_noise(torch.cat([three_values, five_values]), generator=torch.Generator().manual_seed(0))
    # skimage multiplies by 4 (3 distinct values) and 8 (5 distinct values) before drawing counts.
    counts_3, counts_5 = noisy[0] * 4, noisy[1] * 8
    assert torch.equal(counts_3, counts_3.round()) and torch.equal(counts_5, counts_5.round())
    assert not torch.equal(counts_5 / 2, (counts_5 / 2).round())


def test_poisson_signed_path_maps_to_non_negative_rates_and_back():
    # C = 2.5 takes 0 to -0.75: skimage draws Poisson((I + 1) / (max + 1) * s) and maps back.
    image = change_contrast(torch.tensor([0.0, 0.4, 1.0, 1.0]).view(1, 1, 2, 2), 2.5)
    assert image.min() < 0
    noisy = poisson_noise(image, generator=torch.Generator().manual_seed(0))
    old_max = image.max()
    counts = (noisy + 1) / (old_max + 1) * 4  # 3 distinct values -> scale 4
    assert torch.allclose(counts, counts.round(), atol=1e-5)


def test_poisson_rejects_images_below_minus_one():
    with pytest.raises(ValueError, match="values >= -1"):
        poisson_noise(torch.tensor([-2.0, 0.5, 0.5, 1.0]).view(1, 1, 2, 2))


def test_no_clipping_by_default_and_clip_true_clips_like_skimage():
    image = torch.full((2, 1, 16, 16), 0.95)
    image[1] = 0.02
    generator = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    raw = gaussian_noise(image, 0.1, generator=generator())
    assert raw.max() > 1 and raw.min() < 0
    clipped = gaussian_noise(image, 0.1, generator=generator(), clip=True)
    assert torch.equal(clipped, raw.clamp(0, 1))

    signed = change_contrast(image, 2.5)  # the second image goes below 0: skimage clips it to [-1, 1]
    noisy = poisson_noise(signed, generator=generator())
    clipped = poisson_noise(signed, generator=generator(), clip=True)
    assert torch.equal(clipped[1], noisy[1].clamp(-1, 1))
    assert torch.equal(clipped[0], noisy[0].clamp(0, 1))


def test_zero_variance_leaves_images_unchanged():
    image = torch.rand(3, 3, 8, 8)
    assert torch.equal(gaussian_noise(image, 0.0), image)
    assert torch.equal(speckle_noise(image, 0.0), image)
    # ... and the settings that say so are exactly those, whatever the data set.
    for dataset in ("mnist", "cifar10"):
        identities = [s for s in noise_suite(dataset) if s.is_identity]
        assert identities == [Perturbation("gaussian", 0.0), Perturbation("speckle", 0.0)]
        assert all(torch.equal(perturb_test_set(image, dataset, s), image) for s in identities)


def test_same_seed_gives_bit_identical_noise_and_other_levels_differ():
    images = torch.rand(20, 3, 32, 32)
    for setting in noise_suite("cifar10"):
        first = perturb_test_set(images, "cifar10", setting)
        second = perturb_test_set(images.clone(), "cifar10", setting)
        assert torch.equal(first, second), setting
    gaussian = perturb_test_set(images, "cifar10", Perturbation("gaussian", 0.01))
    assert not torch.equal(gaussian, perturb_test_set(images, "cifar10", Perturbation("gaussian", 0.02)))
    assert not torch.equal(gaussian, perturb_test_set(images, "cifar100", Perturbation("gaussian", 0.01)))


def test_noise_seed_depends_only_on_dataset_noise_and_level():
    # A change here changes every noisy test set: results before and after would not be comparable.
    assert noise_seed("mnist", Perturbation("gaussian", 0.1)) == noise_seed("mnist", Perturbation("gaussian", 1e-1))
    assert noise_seed("mnist", Perturbation("poisson", 2)) == noise_seed("mnist", Perturbation("poisson", 2.0))
    seeds = {noise_seed(d, p) for d in ("mnist", "cifar10", "cifar100") for p in noise_suite(d)}
    assert len(seeds) == 24 + 22 + 22
    assert all(0 <= s < 2**63 for s in seeds)
    assert noise_seed("mnist", Perturbation("gaussian", 0.1)) == 7109846312102026262


def test_the_noise_is_drawn_on_the_generators_device_and_returned_on_the_batch_device():
    images = torch.rand(4, 1, 8, 8)
    cpu = perturb(images, Perturbation("speckle", 0.1), generator=torch.Generator().manual_seed(1))
    assert cpu.device == images.device
    if torch.cuda.is_available():
        gpu = perturb(images.cuda(), Perturbation("speckle", 0.1), generator=torch.Generator().manual_seed(1))
        assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu)


def test_paper_noise_suites():
    mnist = noise_suite("mnist")
    assert [p.level for p in mnist if p.noise == "gaussian"] == [0, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert [p.level for p in mnist if p.noise == "speckle"] == [0, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert [p.level for p in mnist if p.noise == "poisson"] == [0.2, 0.3, 0.4, 0.5, 1, 1.5, 2, 2.5]
    cifar = noise_suite("cifar10")
    assert [p.level for p in cifar if p.noise == "gaussian"] == [0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 2e-2, 3e-2]
    assert [p.level for p in cifar if p.noise == "speckle"] == [0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 2e-2, 3e-2]
    assert [p.level for p in cifar if p.noise == "poisson"] == [0.4, 0.5, 1, 1.5, 2, 2.5]
    assert noise_suite("cifar100") == cifar
    assert (len(mnist), len(cifar)) == (24, 22)
    with pytest.raises(ValueError, match="no noise suite for dataset 'svhn'"):
        noise_suite("svhn")


@pytest.mark.parametrize(
    ("noise", "level", "message"),
    [
        ("gaussian", -0.1, "gaussian noise variance must be >= 0"),
        ("speckle", -1e-4, "speckle noise variance must be >= 0"),
        ("poisson", 0, "contrast factor C must be in \\(0, 3\\]"),
        ("poisson", -1, "contrast factor C must be in \\(0, 3\\]"),
        ("poisson", 3.5, "contrast factor C must be in \\(0, 3\\]"),
        ("gaussian", float("nan"), "level must be finite"),
        ("salt", 0.1, "unknown noise 'salt': expected one of gaussian, speckle, poisson"),
    ],
)
def test_invalid_noise_parameters_raise_a_clear_error(noise, level, message):
    with pytest.raises(ValueError, match=message):
        Perturbation(noise, level)


def test_the_ops_reject_invalid_parameters_too():
    image = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="variance must be >= 0"):
        gaussian_noise(image, -1)
    with pytest.raises(ValueError, match="variance must be >= 0"):
        speckle_noise(image, -1)
    with pytest.raises(ValueError, match="contrast factor C must be > 0"):
        change_contrast(image, 0)
