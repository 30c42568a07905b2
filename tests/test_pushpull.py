import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from models import PushPull2d, pull_kernel_size


def bilinear_resize_align_corners(kernel: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a square 2-D array with corner pixels aligned, written out by hand."""
    k = kernel.shape[0]
    out = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            y, x = i * (k - 1) / (size - 1), j * (k - 1) / (size - 1)
            y0, x0 = math.floor(y), math.floor(x)
            y1, x1 = min(y0 + 1, k - 1), min(x0 + 1, k - 1)
            wy, wx = y - y0, x - x0
            out[i, j] = (
                (1 - wy) * (1 - wx) * kernel[y0, x0]
                + (1 - wy) * wx * kernel[y0, x1]
                + wy * (1 - wx) * kernel[y1, x0]
                + wy * wx * kernel[y1, x1]
            )
    return out


def correlate(image: np.ndarray, kernel: np.ndarray, padding: int) -> np.ndarray:
    """2-D cross-correlation (what a conv layer computes) of one channel, zero padding, stride 1."""
    padded = np.pad(image, padding)
    k = kernel.shape[0]
    size = padded.shape[0] - k + 1
    return np.array([[np.sum(padded[i : i + k, j : j + k] * kernel) for j in range(size)] for i in range(size)])


@pytest.mark.parametrize(
    ("push", "h", "pull"), [(5, 2, 11), (3, 2, 7), (3, 1.5, 5), (3, 1, 3), (5, 1, 5), (5, 1.5, 7), (3, 2.5, 7)]
)
def test_pull_kernel_size_is_floor_of_k_times_h_made_odd(push, h, pull):
    assert pull_kernel_size(push, h) == pull
    layer = PushPull2d(1, 2, push, h=h)
    assert layer.pull_weight.shape == (2, 1, pull, pull)


def test_pull_kernel_of_a_linear_ramp_is_the_ramp_sampled_at_the_new_grid():
    layer = PushPull2d(1, 1, 3, h=2)
    with torch.no_grad():
        # k[i, j] = 3i + 3j; bilinear interpolation of a plane is exact: at 7x7 the ramp becomes i + j.
        layer.push.weight.copy_(torch.tensor([[0.0, 3, 6], [3, 6, 9], [6, 9, 12]]).view(1, 1, 3, 3))
    expected = torch.arange(7.0).view(7, 1) + torch.arange(7.0).view(1, 7)
    assert torch.allclose(layer.pull_weight[0, 0], expected, atol=1e-5)


@pytest.mark.parametrize(("k", "h"), [(3, 2), (5, 2), (3, 1.5), (5, 1.5)])
def test_pull_kernel_equals_hand_computed_bilinear_resize(k, h):
    torch.manual_seed(0)
    layer = PushPull2d(2, 3, k, h=h)
    push = layer.push.weight.detach().numpy()
    pull = layer.pull_weight.detach().numpy()
    size = pull_kernel_size(k, h)
    for o in range(3):
        for i in range(2):
            np.testing.assert_allclose(pull[o, i], bilinear_resize_align_corners(push[o, i], size), atol=1e-6)


def test_h_one_keeps_the_push_kernel_as_pull_kernel():
    layer = PushPull2d(1, 4, 5, h=1)
    assert layer.pull_weight is layer.push.weight
    assert layer.pull_padding == 0


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 1.5])
def test_output_equals_the_formula_on_a_small_input(bias, alpha):
    torch.manual_seed(1)
    layer = PushPull2d(1, 1, 3, padding=1, bias=bias, h=2, alpha=alpha)
    image = torch.rand(1, 1, 6, 6) - 0.3
    out = layer(image).detach().numpy()[0, 0]

    k = layer.push.weight.detach().numpy()[0, 0]
    k_up = bilinear_resize_align_corners(k, 7)
    b = layer.push.bias.item() if bias else 0.0
    img = image.numpy()[0, 0]
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    # P(I) = ReLU(k * I + b) - alpha * ReLU(-k_up * I - b); the 7x7 pull kernel needs padding 3 to align.
    expected = relu(correlate(img, k, 1) + b) - alpha * relu(-correlate(img, k_up, 3) - b)
    assert out.shape == (6, 6)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert layer.pull_padding == 3


def test_gradients_reach_the_push_weights_through_both_branches():
    torch.manual_seed(2)
    layer = PushPull2d(2, 4, 3, padding=1, h=2, alpha=1)
    image = torch.randn(3, 2, 8, 8)
    weight = layer.push.weight

    push_only = torch.relu(layer.push(image)).sum()
    (grad_push,) = torch.autograd.grad(push_only, weight)
    pull_only = torch.relu(nn.functional.conv2d(image, -layer.pull_weight, None, 1, layer.pull_padding)).sum()
    (grad_pull,) = torch.autograd.grad(pull_only, weight)
    (grad_total,) = torch.autograd.grad(layer(image).sum(), weight)

    assert grad_pull.abs().sum() > 0, "the pull kernel must not be detached from the push weights"
    assert torch.allclose(grad_total, grad_push - grad_pull, atol=1e-4)
    assert not torch.allclose(grad_total, grad_push, atol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
def test_fixed_alpha_adds_no_parameters_over_the_conv_it_replaces(bias):
    layer = PushPull2d(3, 16, 3, padding=1, bias=bias)
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=bias)
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in conv.parameters())


def test_state_dict_keys_match_the_reference_implementation():
    assert list(PushPull2d(3, 8, 3).state_dict()) == ["push.weight"]
    assert list(PushPull2d(3, 8, 3, bias=True).state_dict()) == ["push.weight", "push.bias"]
    assert set(PushPull2d(3, 8, 3, train_alpha=True).state_dict()) == {"push.weight", "alpha"}


def test_trained_alpha_is_per_channel_and_kept_non_negative():
    torch.manual_seed(3)
    layer = PushPull2d(1, 3, 3, padding=1, alpha=0.7, train_alpha=True)
    assert isinstance(layer.alpha, nn.Parameter)
    assert layer.alpha.shape == (1, 3, 1, 1)
    assert torch.equal(layer.alpha.detach(), torch.full((1, 3, 1, 1), 0.7))
    assert sum(p.numel() for p in layer.parameters()) == 3 * 9 + 3

    image = torch.randn(2, 1, 5, 5)
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([-1.0, 0.0, 2.0]).view(1, 3, 1, 1))
    out = layer(image)
    push = torch.relu(layer.push(image))
    pull = torch.relu(nn.functional.conv2d(image, -layer.pull_weight, None, 1, layer.pull_padding))
    assert torch.allclose(out[:, 0], push[:, 0])  # a negative alpha acts as 0
    assert torch.allclose(out[:, 2], push[:, 2] - 2 * pull[:, 2])
    out.sum().backward()
    assert layer.alpha.grad is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stride=2, padding=1),
        dict(stride=1, padding=2, dilation=2),
        dict(stride=2, padding=0, groups=2),
        dict(stride=1, padding=1, h=1.5),
    ],
)
def test_output_shape_matches_the_conv_it_replaces(kwargs):
    image = torch.randn(2, 4, 13, 13)
    conv_kwargs = {key: value for key, value in kwargs.items() if key != "h"}
    conv = nn.Conv2d(4, 6, 3, **conv_kwargs)
    layer = PushPull2d(4, 6, 3, **kwargs)
    assert layer(image).shape == conv(image).shape


def test_extra_repr_names_the_push_pull_settings():
    text = repr(PushPull2d(1, 6, 5, h=2, alpha=1))
    assert "h=2, alpha=1, pull_kernel_size=11, pull_padding=3" in text
    assert "(push): Conv2d(1, 6, kernel_size=(5, 5)" in text
    assert "alpha=trained" in repr(PushPull2d(1, 6, 5, train_alpha=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(h=0.5), "h >= 1"),
        (dict(alpha=-0.1), "alpha >= 0"),
        (dict(kernel_size=(3, 5)), "square kernel"),
        (dict(padding="same"), "integer padding"),
    ],
)
def test_invalid_arguments_raise_a_clear_error(kwargs, message):
    args = dict(in_channels=1, out_channels=2, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=message):
        PushPull2d(**args)


@pytest.mark.parametrize(("kernel_size", "h"), [(4, 2), (2, 1.5), ((6, 6), 2)])
def test_an_even_kernel_with_h_above_1_is_rejected_in_the_constructor(kernel_size, h):
    # Its pull kernel is odd: the pull map would be one pixel smaller than the push map.
    side = kernel_size[0] if isinstance(kernel_size, tuple) else kernel_size
    with pytest.raises(ValueError) as caught:
        PushPull2d(1, 2, kernel_size, h=h)
    assert str(caught.value) == (
        f"PushPull2d needs an odd kernel_size when h > 1 (push and pull kernels share a centre), got kernel_size={side}"
    )


def test_an_even_kernel_with_h_1_is_its_own_pull_kernel_and_keeps_the_conv_shape():
    image = torch.randn(2, 4, 13, 13)
    layer = PushPull2d(4, 6, 4, padding=1, h=1)
    assert layer.pull_weight is layer.push.weight
    assert layer(image).shape == nn.Conv2d(4, 6, 4, padding=1)(image).shape == (2, 6, 12, 12)


@pytest.mark.parametrize("train_alpha", [False, True])
def test_scripts_compiles_and_exports_to_the_same_function(train_alpha):
    torch.manual_seed(4)
    layer = PushPull2d(3, 8, 3, padding=1, bias=True, train_alpha=train_alpha)
    image = torch.randn(2, 3, 9, 9)
    expected = layer(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still used
        assert torch.allclose(torch.jit.script(layer)(image), expected, atol=1e-5)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert torch.allclose(compiled(image), expected, atol=1e-5)
    exported = torch.export.export(layer, (image,))
    assert torch.allclose(exported.module()(image), expected, atol=1e-5)


def test_under_bf16_autocast_the_output_is_close_and_the_gradients_finite():
    torch.manual_seed(0)
    layer = PushPull2d(3, 8, kernel_size=5, padding=2, h=2, alpha=1)
    x = torch.rand(4, 3, 32, 32)
    fp32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # The pull kernel is resized from the fp32 push weights, in fp32 (a few hundred numbers, exact);
        # only the two convolutions run in bf16.
        assert layer.pull_weight.dtype == torch.float32
        bf16 = layer(x)
    assert bf16.dtype == torch.bfloat16
    assert ((bf16.float() - fp32).norm() / fp32.norm()).item() < 0.01
    bf16.float().square().mean().backward()
    assert layer.push.weight.grad.dtype == torch.float32
    assert torch.isfinite(layer.push.weight.grad).all() and layer.push.weight.grad.abs().sum() > 0
