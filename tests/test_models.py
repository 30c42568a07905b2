import pytest
import torch
from torch import nn

from models import LENET_VARIANTS, ModelSpec, PushPull2d, build_model
from sweep.catalog import build_sweep


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lenet_params(conv1: int, conv2: int, fc1: int, fc2: int, classes: int = 10) -> int:
    """Weights and biases of LeNet-5 on 28x28 input, counted layer by layer."""
    return (
        (1 * 25 + 1) * conv1
        + (conv1 * 25 + 1) * conv2
        + (conv2 * 4 * 4 + 1) * fc1
        + (fc1 + 1) * fc2
        + (fc2 + 1) * classes
    )


def wrn_params(depth: int, width: int, classes: int = 10) -> int:
    """Parameters of WRN-depth-width as defined by Zagoruyko & Komodakis, counted block by block."""
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]
    total = 3 * 16 * 9  # stem, no bias
    for g in range(3):
        i, o = widths[g], widths[g + 1]
        # first block: BN(i), conv i->o, BN(o), conv o->o, 1x1 projection when the shape changes
        total += 2 * i + 9 * i * o + 2 * o + 9 * o * o + (i * o if i != o or g > 0 else 0)
        total += (n - 1) * (2 * o + 9 * o * o + 2 * o + 9 * o * o)
    return total + 2 * widths[3] + widths[3] * classes + classes


@pytest.mark.parametrize(
    ("variant", "sizes", "expected"),
    [
        ("A", (6, 16, 128, 64), 44374),
        ("B", (6, 8, 64, 32), 12030),
        ("C", (4, 16, 128, 64), 43522),
        ("D", (4, 8, 64, 32), 11578),
    ],
)
@pytest.mark.parametrize("pushpull", [False, True])
def test_lenet_parameter_counts(variant, sizes, expected, pushpull):
    model = build_model(ModelSpec(arch="lenet", variant=variant, pushpull=pushpull))
    assert lenet_params(*sizes) == expected
    assert n_params(model) == expected
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(("depth", "width"), [(16, 10), (22, 10), (28, 10), (40, 10), (28, 1), (28, 4), (28, 8)])
@pytest.mark.parametrize("pushpull", [False, True])
def test_wrn_parameter_counts(depth, width, pushpull):
    # Built on the meta device: WRN-40-10 has 56M parameters, no need to allocate them.
    with torch.device("meta"):
        model = build_model(ModelSpec(arch="wrn", depth=depth, width=width, pushpull=pushpull))
    assert n_params(model) == wrn_params(depth, width)


def test_wrn_parameter_counts_match_the_wrn_paper():
    with torch.device("meta"):
        wrn_28_10 = n_params(build_model(ModelSpec(arch="wrn", depth=28, width=10, pushpull=True)))
        wrn_28_1 = n_params(build_model(ModelSpec(arch="wrn", depth=28, width=1)))
    assert wrn_28_10 == 36_479_194  # "36.5M"
    assert wrn_28_1 == 369_498  # "0.37M"
    with torch.device("meta"):
        cifar100 = n_params(build_model(ModelSpec(arch="wrn", depth=28, width=10, num_classes=100)))
    assert cifar100 == wrn_28_10 + 90 * 640 + 90


def test_wrn_forward_and_push_pull_stem():
    torch.manual_seed(0)
    spec = ModelSpec(arch="wrn", depth=10, width=1, pushpull=True, h=1.5, alpha=0.5, num_classes=100)
    model = build_model(spec)
    assert isinstance(model.stem, PushPull2d)
    assert (model.stem.h, model.stem.alpha, model.stem.pull_size) == (1.5, 0.5, 5)
    assert model.stem.push.bias is None
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 100)
    plain = build_model(ModelSpec(arch="wrn", depth=10, width=1))
    assert type(plain.stem) is nn.Conv2d


def test_wrn_dropout_sits_between_the_two_convolutions():
    model = build_model(ModelSpec(arch="wrn", depth=10, width=1, dropout=0.3))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.3 for d in dropouts)


def test_lenet_push_pull_replaces_conv1_only():
    model = build_model(ModelSpec(arch="lenet", variant="C", pushpull=True))
    assert isinstance(model.conv1, PushPull2d)
    assert model.conv1.push.out_channels == LENET_VARIANTS["C"].conv1
    assert model.conv1.pull_size == 11 and model.conv1.push.bias is not None
    assert type(model.conv2) is nn.Conv2d


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        (dict(arch="lenet", variant="A"), "A"),
        (dict(arch="lenet", variant="D", pushpull=True), "PD"),
        (dict(arch="wrn", depth=28, width=10), "WRN-28-10"),
        (dict(arch="wrn", depth=16, width=10, pushpull=True, h=1, alpha=1.5), "WRN-16-10-PP"),
    ],
)
def test_model_names_follow_the_paper(spec, name):
    assert ModelSpec(**spec).name == name


def test_push_pull_defaults_are_the_papers_and_plain_models_carry_none():
    spec = ModelSpec(arch="wrn", depth=28, width=10, pushpull=True)
    assert (spec.h, spec.alpha) == (2.0, 1.0)
    assert spec == ModelSpec(arch="wrn", depth=28, width=10, pushpull=True, h=2, alpha=1)
    assert hash(spec) == hash(ModelSpec(arch="wrn", depth=28, width=10, pushpull=True, h=2, alpha=1))
    plain = ModelSpec(arch="lenet", variant="B")
    assert (plain.h, plain.alpha) == (None, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(arch="wrn", depth=27, width=10), "depth must be 6n\\+4"),
        (dict(arch="wrn", depth=4, width=10), "depth must be 6n\\+4"),
        (dict(arch="wrn", depth=28, width=0), "width must be an integer >= 1"),
        (dict(arch="wrn", depth=28, width=10, pushpull=True, h=0.5), "h must be >= 1"),
        (dict(arch="wrn", depth=28, width=10, pushpull=True, alpha=-1), "alpha must be >= 0"),
        (dict(arch="wrn", depth=28, width=10, h=2), "h and alpha apply only with pushpull=True"),
        (dict(arch="wrn", depth=28, width=10, dropout=1.0), "dropout must be in"),
        (dict(arch="wrn", depth=28, width=10, variant="A"), "variant applies to arch='lenet' only"),
        (dict(arch="lenet", variant="E"), "unknown LeNet variant 'E': expected one of A, B, C, D"),
        (dict(arch="lenet", variant="PA"), "unknown LeNet variant 'PA'"),
        (dict(arch="lenet", variant="A", depth=28), "depth and width apply to arch='wrn' only"),
        (dict(arch="lenet", variant="A", num_classes=1), "num_classes must be an integer >= 2"),
        (dict(arch="resnet"), "ResNet depth must be one of 18, 34, 50, got None"),
        (dict(arch="vgg", depth=16), "unknown arch 'vgg': expected 'lenet', 'wrn' or 'resnet'"),
    ],
)
def test_invalid_specs_raise_a_clear_value_error(spec, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(**spec)


def test_models_train_a_step_with_gradients_in_the_push_pull_stem():
    torch.manual_seed(0)
    for spec in (
        ModelSpec(arch="lenet", variant="A", pushpull=True),
        ModelSpec(arch="wrn", depth=10, width=1, pushpull=True),
        ModelSpec(arch="resnet", depth=18, in_channels=1, pushpull=True),
    ):
        model = build_model(spec)
        images = torch.rand(4, *spec.input_shape)
        loss = nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        stem = model.stem if spec.arch == "wrn" else model.conv1
        assert stem.push.weight.grad is not None and stem.push.weight.grad.abs().sum() > 0


CATALOG_MODELS = sorted(
    {trial.model for name in ("paper_full", "sensitivity") for trial in build_sweep(name)}, key=repr
)


@pytest.mark.parametrize("spec", CATALOG_MODELS, ids=lambda s: f"{s.name}-h{s.h}-a{s.alpha}")
def test_every_models_bf16_forward_agrees_with_its_fp32_forward(spec):
    # bfloat16 keeps 8 bits of mantissa (a relative rounding error of 0.4 % per op); over every model of the
    # catalog the logits measured here differ from fp32 by at most 0.7 % of their norm. Tolerance: 2 %.
    torch.manual_seed(0)
    model = build_model(spec).eval()
    images = torch.rand(4, *spec.input_shape)
    with torch.no_grad():
        fp32 = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(images)
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert ((bf16.float() - fp32).norm() / fp32.norm()).item() < 0.02
