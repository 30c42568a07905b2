import hashlib
from functools import partial

import numpy as np
import pytest
import torch
from skimage.util import random_noise

from perturb import (
    NOISE_FAMILIES,
    PAPER_SUITE,
    SUITES,
    Noise,
    Perturbation,
    apply_perturbation,
    change_contrast,
    gaussian_noise,
    noise_seed,
    noise_suite,
    perturb_test_set,
    poisson_noise,
    shot_noise,
    speckle_noise,
    suite_settings,
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
    return apply_perturbation(batch, Perturbation(noise, level), generator=generator)[0].double().numpy()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same_distribution(ours_moments: np.ndarray, reference_moments: np.ndarray, n: int) -> None:
    variance = np.maximum(reference_moments[:, 1], 1e-12)
    # Means agree within 5 standard errors of a difference of two sample means.
    np.testing.assert_array_less(
        np.abs(ours_moments[:, 0] - reference_moments[:, 0]), 5 * np.sqrt(2 * variance / n) + 1e-6
    )
    # Variances agree within 10 % (a sample variance over n = 6000 has a relative error of about 2 %).
    np.testing.assert_allclose(ours_moments[:, 1], reference_moments[:, 1], rtol=0.1, atol=1e-9)


@pytest.mark.parametrize(
    ("noise", "level"), [("gaussian", 0.01), ("gaussian", 0.3), ("speckle", 0.02), ("speckle", 0.5)]
)
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
    assert_same_distribution(residual_moments(contrasted, ours_noisy), residual_moments(contrasted, reference), n=6000)
    # Fewer distinct values than 8 round up to a scale of 8 photons per unit intensity (2^ceil(log2 8)).
    if contrasted.min() >= 0:
        np.testing.assert_allclose(
            residual_moments(contrasted, ours_noisy)[:, 1], np.unique(contrasted) / 8, rtol=0.1, atol=1e-9
        )


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


@pytest.mark.parametrize("peak", [60, 12, 3])
def test_shot_noise_matches_numpys_poisson_draws_and_the_formulas_in_distribution(peak):
    image = striped_image()
    ours_noisy = shot_noise(torch.from_numpy(image).float(), peak, generator=seeded(0)).double().numpy()
    reference = np.random.default_rng(0).poisson(image * peak) / peak
    ours_moments, reference_moments = residual_moments(image, ours_noisy), residual_moments(image, reference)
    # Standard errors over n = 6000 draws of Poisson(rate) / peak: of the sample mean sqrt(rate / n) / peak,
    # of the sample variance sqrt((mu4 - sigma^4) / n) / peak^2 = sqrt((rate + 2 rate^2) / n) / peak^2.
    rate, n = INTENSITIES * peak, 6000
    standard_errors = np.stack([np.sqrt(rate / n) / peak, np.sqrt((rate + 2 * rate**2) / n) / peak**2], axis=1)
    # Against numpy's draws: within 5 standard errors of a difference of two independent estimates ...
    np.testing.assert_array_less(np.abs(ours_moments - reference_moments), 5 * np.sqrt(2) * standard_errors + 1e-9)
    # ... and against the exact moments, mean x (residual 0) and variance x / peak, within 5 standard errors.
    exact = np.stack([np.zeros_like(INTENSITIES), INTENSITIES / peak], axis=1)
    np.testing.assert_array_less(np.abs(ours_moments - exact), 5 * standard_errors + 1e-9)


def test_shot_noise_is_zero_at_negative_intensities():
    images = change_contrast(torch.tensor([0.0, 0.2, 0.45, 0.5, 0.8, 1.0]).repeat(20).view(2, 1, 6, 10), 2.5)
    noisy = shot_noise(images, 1000, generator=seeded(0))  # 500 photons expected at 0.5: never 0 there
    assert torch.equal(noisy[images <= 0], torch.zeros(int((images <= 0).sum())))
    assert bool((noisy[images > 0] > 0).all())


def test_no_clipping_by_default_and_clip_true_clips_like_skimage():
    image = torch.full((2, 1, 16, 16), 0.95)
    image[1] = 0.02
    raw = gaussian_noise(image, 0.1, generator=seeded(5))
    assert raw.max() > 1 and raw.min() < 0
    clipped = gaussian_noise(image, 0.1, generator=seeded(5), clip=True)
    assert torch.equal(clipped, raw.clamp(0, 1))

    signed = change_contrast(image, 2.5)  # the second image goes below 0: skimage clips it to [-1, 1]
    noisy = poisson_noise(signed, generator=seeded(5))
    clipped = poisson_noise(signed, generator=seeded(5), clip=True)
    assert torch.equal(clipped[1], noisy[1].clamp(-1, 1))
    assert torch.equal(clipped[0], noisy[0].clamp(0, 1))

    shot = shot_noise(image, 3, generator=seeded(5))  # 2.85 photons expected at 0.95: 4 or more reads 4/3
    assert shot.max() > 1
    assert torch.equal(shot_noise(image, 3, generator=seeded(5), clip=True), shot.clamp(0, 1))


@pytest.mark.parametrize("contrast", [0.2, 1.0, 2.5])
def test_the_contrast_family_is_the_contrast_change_alone_and_its_clip_the_clamp(contrast):
    images = torch.rand(4, 3, 8, 8)
    contrasted = change_contrast(images, contrast)
    assert torch.equal(apply_perturbation(images, Perturbation("contrast", contrast)), contrasted)
    assert torch.equal(apply_perturbation(images, Perturbation("contrast-clip", contrast)), contrasted.clamp(0, 1))


@pytest.mark.parametrize("peak", [60, 12, 3, 2.5])
def test_shot_and_contrast_shot_are_shot_noise_after_the_contrast_change(peak):
    images = torch.rand(4, 3, 8, 8)
    shot = apply_perturbation(images, Perturbation("shot", peak), generator=seeded(3))
    assert torch.equal(shot, shot_noise(images, peak, generator=seeded(3)))
    for contrast in (0.2, 1.0, 2.5):
        ours_noisy = apply_perturbation(images, Perturbation(f"contrast-shot-p{peak:g}", contrast), generator=seeded(3))
        assert torch.equal(ours_noisy, shot_noise(change_contrast(images, contrast), peak, generator=seeded(3)))


@pytest.mark.parametrize("contrast", [0.2, 0.5, 1.0, 1.5, 2.5])
def test_poisson_c1clean_is_the_clean_images_at_c1_and_the_poisson_test_set_elsewhere(contrast):
    images = torch.rand(4, 1, 8, 8)
    c1clean = perturb_test_set(images, "mnist", Perturbation("poisson-c1clean", contrast))
    poisson = perturb_test_set(images, "mnist", Perturbation("poisson", contrast))
    if contrast == 1:
        assert torch.equal(c1clean, images) and not torch.equal(poisson, images)
    else:
        assert torch.equal(c1clean, poisson)


# Per family, a noise name and a level that take some pixels of images in [0, 1] outside [0, 1].
OUT_OF_RANGE = {
    "gaussian": ("gaussian", 0.1),
    "speckle": ("speckle", 0.5),
    "poisson": ("poisson", 2.5),
    "poisson-c1clean": ("poisson-c1clean", 2.5),
    "contrast": ("contrast", 2.5),
    "shot": ("shot", 3),
    "contrast-shot": ("contrast-shot-p12", 2.5),
}


@pytest.mark.parametrize("family", NOISE_FAMILIES)
def test_the_clip_variant_of_every_family_clamps_the_same_draw_to_0_1(family):
    noise, level = OUT_OF_RANGE[family]
    images = torch.rand(4, 3, 8, 8)
    unclipped = perturb_test_set(images, "cifar10", Perturbation(noise, level))
    clipped = perturb_test_set(images, "cifar10", Perturbation(f"{noise}-clip", level))
    assert bool((unclipped < 0).any() or (unclipped > 1).any())
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert torch.equal(clipped, unclipped.clamp(0, 1))


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


def test_the_paper_settings_keep_the_seeds_they_had_before_noise_names():
    for dataset in ("mnist", "cifar10", "cifar100"):
        for setting in noise_suite(dataset):
            key = f"{dataset}/{setting.noise}/{setting.level!r}".encode()
            assert noise_seed(dataset, setting) == int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


@pytest.mark.parametrize(
    ("noise", "level", "twin"),
    [
        ("poisson-c1clean", 0.5, "poisson"),
        ("poisson-c1clean-clip", 0.5, "poisson"),
        ("gaussian-clip", 0.1, "gaussian"),
        ("poisson-clip", 2, "poisson"),
        ("contrast-shot-p12-clip", 0.5, "contrast-shot-p12"),
        ("shot-clip", 3, "shot"),
    ],
)
def test_a_clipped_or_c1clean_setting_draws_with_the_seed_of_its_twin(noise, level, twin):
    for dataset in ("mnist", "cifar10"):
        assert noise_seed(dataset, Perturbation(noise, level)) == noise_seed(dataset, Perturbation(twin, level))


@pytest.mark.parametrize(("dataset", "paper_noisy", "paper_contrasts"), [("mnist", 22, 8), ("cifar10", 20, 6)])
def test_settings_with_different_images_have_different_seeds(dataset, paper_noisy, paper_contrasts):
    variants = {p.same_images() for p in suite_settings("poisson-variants", dataset)} - {None}
    assert len({noise_seed(dataset, p) for p in variants}) == len(variants)
    # Over every suite: the paper's noisy sets, the variants beside the paper's poisson ones, the 5 shot-noise sets.
    every = {p.same_images() for suite in SUITES for p in suite_settings(suite, dataset)} - {None}
    assert len(every) == paper_noisy + 39 - paper_contrasts + 5
    assert len({noise_seed(dataset, p) for p in every}) == len(every)


NOISE_OPS = [
    pytest.param(partial(gaussian_noise, variance=0.1), id="gaussian"),
    pytest.param(partial(speckle_noise, variance=0.1), id="speckle"),
    pytest.param(poisson_noise, id="poisson"),
    pytest.param(partial(shot_noise, peak=12.0), id="shot"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", NOISE_OPS)
def test_every_noise_op_returns_the_batchs_device_dtype_and_shape(op, dtype):
    images = torch.rand(4, 1, 8, 8, dtype=dtype)
    noisy = op(images, generator=seeded(1))
    assert (noisy.device, noisy.dtype, noisy.shape) == (images.device, dtype, images.shape)
    assert not torch.equal(noisy, images)
    assert torch.equal(op(images, generator=seeded(1)), noisy)  # the generator alone decides the draws


def test_the_noise_is_the_generators_own_draws_and_the_global_rng_without_one():
    images = torch.rand(4, 1, 8, 8)
    normal = torch.randn(images.shape, generator=seeded(1))
    assert torch.equal(gaussian_noise(images, 0.25, generator=seeded(1)), images + normal * 0.5)
    assert torch.equal(speckle_noise(images, 0.25, generator=seeded(1)), images + images * normal * 0.5)
    counts = torch.poisson(images * 12.0, generator=seeded(1))
    assert torch.equal(shot_noise(images, 12.0, generator=seeded(1)), counts / 12.0)
    # generator=None: drawn from the global generator of the batch's device (here the CPU's)
    torch.manual_seed(1)
    assert torch.equal(gaussian_noise(images, 0.25), images + normal * 0.5)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: checks that a CPU generator gives a GPU batch the CPU's noise, on the GPU, "
    "and that a CUDA generator draws on the GPU for a CPU batch",
)
def test_the_noise_is_drawn_on_the_generators_device_and_returned_on_the_batch_device():
    images = torch.rand(4, 1, 8, 8)
    for setting in (Perturbation("speckle", 0.1), Perturbation("poisson", 2), Perturbation("shot", 12)):
        cpu = apply_perturbation(images, setting, generator=seeded(1))
        gpu = apply_perturbation(images.cuda(), setting, generator=seeded(1))
        assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu), setting
    cuda_normal = torch.randn(images.shape, generator=torch.Generator("cuda").manual_seed(1), device="cuda")
    on_gpu = gaussian_noise(images.cuda(), 0.25, generator=torch.Generator("cuda").manual_seed(1))
    assert torch.equal(on_gpu, images.cuda() + cuda_normal * 0.5)
    on_cpu = gaussian_noise(images, 0.25, generator=torch.Generator("cuda").manual_seed(1))
    assert on_cpu.device.type == "cpu" and torch.equal(on_cpu, images + cuda_normal.cpu() * 0.5)


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
    with pytest.raises(ValueError, match="no noise suite for dataset 'imagenet': expected one of mnist, "):
        noise_suite("imagenet")


# The paper's levels, written out: MNIST's for every grey 28x28 data set, CIFAR's for every colour 32x32 one.
MNIST_LEVELS = {
    "gaussian": [0, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5],
    "speckle": [0, 0.001, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5],
    "poisson": [0.2, 0.3, 0.4, 0.5, 1, 1.5, 2, 2.5],
}
CIFAR_LEVELS = {
    "gaussian": [0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 2e-2, 3e-2],
    "speckle": [0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 2e-2, 3e-2],
    "poisson": [0.4, 0.5, 1, 1.5, 2, 2.5],
}


@pytest.mark.parametrize(
    ("dataset", "levels"),
    [
        ("mnist", MNIST_LEVELS),
        ("fashionmnist", MNIST_LEVELS),
        ("kmnist", MNIST_LEVELS),
        ("cifar10", CIFAR_LEVELS),
        ("cifar100", CIFAR_LEVELS),
        ("svhn", CIFAR_LEVELS),
    ],
)
def test_every_data_set_takes_the_levels_of_the_paper_set_it_looks_like(dataset, levels):
    expected = tuple(Perturbation(noise, level) for noise, values in levels.items() for level in values)
    assert noise_suite(dataset) == expected
    assert suite_settings("paper", dataset) == expected


def test_the_registered_suites():
    assert list(SUITES) == ["paper", "poisson-variants", "shot"] and PAPER_SUITE == "paper"
    assert all(suite.name == name for name, suite in SUITES.items())
    noises = ["poisson", "poisson-c1clean", "contrast", "contrast-shot-p60", "contrast-shot-p12", "contrast-shot-p3"]
    variants = tuple(Perturbation(noise, c) for noise in noises for c in [0.2, 0.3, 0.4, 0.5, 1, 1.5, 2, 2.5])
    assert len(variants) == 48
    for dataset in ("mnist", "fashionmnist", "kmnist", "cifar10", "cifar100", "svhn"):
        assert suite_settings("paper", dataset) == noise_suite(dataset)
        assert suite_settings("poisson-variants", dataset) == variants
        assert suite_settings("shot", dataset) == tuple(Perturbation("shot-clip", peak) for peak in [60, 25, 12, 5, 3])
    with pytest.raises(ValueError, match="unknown suite 'x': expected one of paper, poisson-variants, shot"):
        suite_settings("x", "mnist")


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_rejects_an_unknown_dataset(suite):
    with pytest.raises(ValueError, match="no noise suite for dataset 'imagenet'"):
        suite_settings(suite, "imagenet")


@pytest.mark.parametrize(
    ("noise", "level", "same"),
    [
        ("gaussian", 0, None),
        ("speckle-clip", 0, None),
        ("poisson-c1clean", 1, None),
        ("contrast", 1, None),
        ("contrast-clip", 1, None),
        ("poisson-c1clean", 0.5, ("poisson", 0.5)),
        ("poisson-c1clean-clip", 2, ("poisson-clip", 2)),
        ("contrast-clip", 0.5, ("contrast", 0.5)),
        ("contrast-clip", 2, ("contrast-clip", 2)),
        ("poisson", 1, ("poisson", 1)),
        ("contrast-shot-p12", 1, ("contrast-shot-p12", 1)),
        ("shot-clip", 3, ("shot-clip", 3)),
    ],
)
def test_same_images_names_a_setting_with_the_same_test_set(noise, level, same):
    setting = Perturbation(noise, level)
    expected = None if same is None else Perturbation(*same)
    assert setting.same_images() == expected and setting.is_identity == (expected is None)
    images = torch.rand(4, 1, 8, 8)
    twin = images if expected is None else perturb_test_set(images, "mnist", expected)
    assert torch.equal(perturb_test_set(images, "mnist", setting), twin)


@pytest.mark.parametrize(("dataset", "channels"), [("mnist", 1), ("cifar10", 3)])
def test_the_poisson_variants_hold_39_distinct_noisy_test_sets_and_the_clean_one(dataset, channels):
    settings = suite_settings("poisson-variants", dataset)
    distinct = {setting.same_images() for setting in settings}
    # poisson at 8 contrasts, contrast at 7 (C = 1 is the clean set), contrast-shot at 3 peaks x 8 contrasts.
    assert None in distinct and len(distinct - {None}) == 8 + 7 + 3 * 8 == 39
    images = torch.rand(4, channels, 8, 8)
    for setting in settings:
        same = setting.same_images()
        twin = images if same is None else perturb_test_set(images, dataset, same)
        assert torch.equal(perturb_test_set(images, dataset, setting), twin), setting


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
        ("poisson-p12", 1, "a peak \\(-p<PEAK>\\) goes with contrast-shot only, got 'poisson-p12'"),
        (
            "contrast-shot",
            1,
            "contrast-shot needs a peak: contrast-shot-p<PEAK>, e.g. contrast-shot-p12, got 'contrast-shot'",
        ),
        ("contrast-shot-p0", 1, "shot noise peak must be > 0"),
        ("shot", 0, "shot noise peak must be > 0"),
        ("shot-clip", -3, "shot noise peak must be > 0"),
        ("contrast", 0, "contrast factor C must be > 0"),
        ("contrast-shot-p12", 0, "contrast factor C must be > 0"),
        ("poisson-c1clean", 3.5, "contrast factor C must be in \\(0, 3\\]"),
    ],
)
def test_invalid_noise_parameters_raise_a_clear_error(noise, level, message):
    with pytest.raises(ValueError, match=message):
        Perturbation(noise, level)


@pytest.mark.parametrize(
    ("name", "noise"),
    [
        ("gaussian", Noise("gaussian")),
        ("speckle-clip", Noise("speckle", clip=True)),
        ("poisson-c1clean", Noise("poisson-c1clean")),
        ("contrast-shot-p12", Noise("contrast-shot", peak=12)),
        ("contrast-shot-p2.5-clip", Noise("contrast-shot", peak=2.5, clip=True)),
        ("shot-clip", Noise("shot", clip=True)),
    ],
)
def test_noise_names_parse_and_round_trip(name, noise):
    assert Noise.parse(name) == noise
    assert noise.name == name


def test_the_ops_reject_invalid_parameters_too():
    image = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="variance must be >= 0"):
        gaussian_noise(image, -1)
    with pytest.raises(ValueError, match="variance must be >= 0"):
        speckle_noise(image, -1)
    with pytest.raises(ValueError, match="contrast factor C must be > 0"):
        change_contrast(image, 0)
    for peak in (0, -3, float("nan")):
        with pytest.raises(ValueError, match="shot noise peak must be > 0"):
            shot_noise(image, peak)


def test_levels_sort_least_severe_first_by_each_noises_severity():
    def order(noise: str, levels: list[float]) -> list[float]:
        return sorted(levels, key=Noise.parse(noise).severity)

    assert order("gaussian", [0.5, 0.0, 0.1]) == [0.0, 0.1, 0.5]  # a variance grows with the noise
    assert order("shot-clip", [3.0, 60.0, 12.0]) == [60.0, 12.0, 3.0]  # fewer photons, more noise
    assert order("poisson", [2.5, 0.2, 1.0]) == [0.2, 1.0, 2.5]  # a contrast keeps its own order
