import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from models import ModelSpec, PushPull2d, build_model, plain_name

# Blocks per stage (He et al. 2016, Table 1).
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet_params(depth: int, in_channels: int, stem_kernel: int, classes: int) -> int:
    """Parameters of ResNet-depth (He et al. 2016, torchvision's v1.5 layout), counted block by block:
    convolutions without bias, BatchNorm 2 per channel, a 1x1 projection (and its BN) on the first block
    of a stage whose shape changes."""
    bottleneck = depth >= 50
    total = in_channels * 64 * stem_kernel**2 + 2 * 64  # conv1, bn1
    planes_in = 64
    for stage, blocks in enumerate(BLOCKS[depth]):
        width = 64 * 2**stage
        out = 4 * width if bottleneck else width
        for block in range(blocks):
            i = planes_in if block == 0 else out
            if bottleneck:  # 1x1 i->w, 3x3 w->w, 1x1 w->4w
                total += i * width + 2 * width + 9 * width * width + 2 * width + width * out + 2 * out
            else:  # 3x3 i->w, 3x3 w->w
                total += 9 * i * out + 2 * out + 9 * out * out + 2 * out
            if block == 0 and (i != out or stage > 0):
                total += i * out + 2 * out
        planes_in = out
    return total + planes_in * classes + classes


@pytest.mark.parametrize(
    ("depth", "expected"),
    # torchvision's documented sizes of resnet18/34/50: 11.7M, 21.8M, 25.6M
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)],
)
def test_imagenet_stem_resnets_have_torchvisions_parameters(depth, expected):
    with torch.device("meta"):
        model = build_model(ModelSpec(arch="resnet", depth=depth, in_channels=3, stem="imagenet", num_classes=1000))
        reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert resnet_params(depth, 3, 7, 1000) == expected
    assert n_params(reference) == expected
    assert n_params(model) == expected
    assert type(model.conv1) is nn.Conv2d and isinstance(model.maxpool, nn.MaxPool2d)


def test_cifar_stem_resnet18_parameters_plain_and_push_pull():
    # ResNet-18 on 1-channel images, 10 classes: torchvision's resnet18(num_classes=10) has 11,181,642;
    # its conv1 (3 -> 64, 7x7) 64*3*7*7 = 9,408 weights, the cifar stem's (1 -> 64, 3x3) 64*1*3*3 = 576.
    expected = 11_181_642 - 9_408 + 576
    assert expected == 11_172_810 == resnet_params(18, 1, 3, 10)
    with torch.device("meta"):
        assert n_params(torchvision.models.resnet18(weights=None, num_classes=10)) == 11_181_642
        plain = build_model(ModelSpec(arch="resnet", depth=18, in_channels=1, num_classes=10))
        pushpull = build_model(ModelSpec(arch="resnet", depth=18, in_channels=1, num_classes=10, pushpull=True))
    assert n_params(plain) == 11_172_810
    # PushPull2d with a fixed alpha learns only its push kernel (the pull kernel is resized from it, alpha
    # is a float): the push-pull stem adds 0 parameters to the plain one.
    assert n_params(pushpull) == 11_172_810 + 0
    assert [name for name, _ in pushpull.conv1.named_parameters()] == ["push.weight"]


@pytest.mark.parametrize(("depth", "stem", "channels", "classes"), [(34, "cifar", 3, 100), (50, "cifar", 1, 10)])
def test_other_cifar_stem_resnets_match_the_block_by_block_count(depth, stem, channels, classes):
    with torch.device("meta"):
        model = build_model(ModelSpec(arch="resnet", depth=depth, in_channels=channels, stem=stem, num_classes=classes))
    assert n_params(model) == resnet_params(depth, channels, 3, classes)


@pytest.mark.parametrize(
    ("spec", "images", "logits"),
    [
        (dict(depth=18, in_channels=1, num_classes=10, pushpull=True), (2, 1, 28, 28), (2, 10)),
        (dict(depth=18, in_channels=3, num_classes=100), (2, 3, 32, 32), (2, 100)),
        (dict(depth=18, in_channels=3, num_classes=10, stem="imagenet"), (2, 3, 64, 64), (2, 10)),
        (dict(depth=50, in_channels=1, num_classes=10, stem="imagenet", pushpull=True), (2, 1, 64, 64), (2, 10)),
    ],
)
def test_resnet_forward_shapes(spec, images, logits):
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="resnet", **spec)).eval()
    with torch.no_grad():
        assert model(torch.rand(*images)).shape == logits


def test_cifar_stem_is_a_3x3_stride_1_convolution_without_max_pooling():
    model = build_model(ModelSpec(arch="resnet", depth=18, in_channels=1))
    conv = model.conv1
    assert type(conv) is nn.Conv2d and isinstance(model.maxpool, nn.Identity)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (
        1,
        64,
        (3, 3),
        (1, 1),
        (1, 1),
    )
    assert conv.bias is None


def test_imagenet_stem_is_remade_for_other_channel_counts():
    model = build_model(ModelSpec(arch="resnet", depth=18, in_channels=1, stem="imagenet"))
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (
        1,
        64,
        (7, 7),
        (2, 2),
        (3, 3),
    )
    assert isinstance(model.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize(
    ("stem", "shape", "pull_size", "pull_padding"),
    # pull kernel: floor(3 * 1.5) = 4 -> 5, padding 5//2 - 3//2 + 1 = 2; floor(7 * 1.5) = 10 -> 11, 5 - 3 + 3 = 5
    [("cifar", (3, 1, 1), 5, 2), ("imagenet", (7, 2, 3), 11, 5)],
)
def test_push_pull_stem_is_a_push_pull_layer_of_the_stems_shape(stem, shape, pull_size, pull_padding):
    model = build_model(ModelSpec(arch="resnet", depth=18, in_channels=3, stem=stem, pushpull=True, h=1.5, alpha=0.5))
    conv1 = model.conv1
    assert isinstance(conv1, PushPull2d)
    assert (conv1.h, conv1.alpha, conv1.pull_size, conv1.pull_padding) == (1.5, 0.5, pull_size, pull_padding)
    push = conv1.push
    kernel, stride, padding = shape
    assert (push.in_channels, push.out_channels, push.kernel_size, push.stride, push.padding) == (
        3,
        64,
        (kernel, kernel),
        (stride, stride),
        (padding, padding),
    )
    assert push.bias is None


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        (dict(depth=18), "ResNet-18"),
        (dict(depth=34, stem="imagenet"), "ResNet-34"),
        (dict(depth=50, pushpull=True), "ResNet-50-PP"),
        (dict(depth=18, pushpull=True, h=1.5, alpha=0.5, stem="imagenet"), "ResNet-18-PP"),
    ],
)
def test_resnet_names_show_depth_and_push_pull_only(spec, name):
    model = ModelSpec(arch="resnet", in_channels=3, **spec)
    assert model.name == name
    assert plain_name(model.name) == f"ResNet-{spec['depth']}"
    assert plain_name(ModelSpec(arch="resnet", in_channels=3, depth=spec["depth"]).name) == f"ResNet-{spec['depth']}"


def test_resnet_spec_defaults_channels_and_input_shape():
    spec = ModelSpec(arch="resnet", depth=18, in_channels=1)
    assert spec.stem == "cifar"
    assert spec == ModelSpec(arch="resnet", depth=18, in_channels=1, stem="cifar")
    assert hash(spec) == hash(ModelSpec(arch="resnet", depth=18, in_channels=1, stem="cifar"))
    assert (spec.channels, spec.input_shape) == (1, (1, 32, 32))
    assert ModelSpec(arch="resnet", depth=50, in_channels=3, stem="imagenet").input_shape == (3, 32, 32)
    assert ModelSpec(arch="lenet", variant="A").channels == 1
    assert ModelSpec(arch="wrn", depth=28, width=10).channels == 3
    assert ModelSpec(arch="lenet", variant="A").input_shape == (1, 28, 28)
    assert ModelSpec(arch="wrn", depth=28, width=10).input_shape == (3, 32, 32)


def test_positional_fields_keep_their_meaning():
    spec = ModelSpec("wrn", None, 28, 10, True, 1.5, 0.5, 100, 0.3)
    assert (spec.depth, spec.width, spec.h, spec.alpha, spec.num_classes, spec.dropout) == (28, 10, 1.5, 0.5, 100, 0.3)
    assert (spec.in_channels, spec.stem) == (None, None)


def test_hashed_fields_of_lenet_and_wrn_specs_leave_out_the_resnet_fields():
    wrn = ModelSpec(arch="wrn", depth=28, width=10, pushpull=True)
    assert wrn.hashed_fields() == {
        "arch": "wrn",
        "variant": None,
        "depth": 28,
        "width": 10,
        "pushpull": True,
        "h": 2.0,
        "alpha": 1.0,
        "num_classes": 10,
        "dropout": 0.0,
    }
    lenet = ModelSpec(arch="lenet", variant="B", num_classes=10)
    assert lenet.hashed_fields() == {
        k: v for k, v in dataclasses.asdict(lenet).items() if k not in ("in_channels", "stem")
    }
    assert "in_channels" in dataclasses.asdict(lenet)
    resnet = ModelSpec(arch="resnet", depth=18, in_channels=1)
    assert resnet.hashed_fields() == dataclasses.asdict(resnet)
    assert (resnet.hashed_fields()["in_channels"], resnet.hashed_fields()["stem"]) == (1, "cifar")
    imagenet = ModelSpec(arch="resnet", depth=18, in_channels=1, stem="imagenet")
    assert resnet.name == imagenet.name and resnet.hashed_fields() != imagenet.hashed_fields()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(arch="resnet", depth=20, in_channels=3), "ResNet depth must be one of 18, 34, 50, got 20"),
        (dict(arch="resnet", in_channels=3), "ResNet depth must be one of 18, 34, 50, got None"),
        (dict(arch="resnet", depth=18.0, in_channels=3), "ResNet depth must be one of 18, 34, 50"),
        (dict(arch="resnet", depth=18), "arch='resnet' needs in_channels"),
        (dict(arch="resnet", depth=18, in_channels=0), "in_channels must be an integer >= 1, got 0"),
        (dict(arch="resnet", depth=18, in_channels=True), "in_channels must be an integer >= 1, got True"),
        (
            dict(arch="resnet", depth=18, in_channels=3, stem="x"),
            "unknown ResNet stem 'x': expected one of cifar, imagenet",
        ),
        (dict(arch="resnet", depth=18, in_channels=3, width=2), "width applies to arch='wrn' only"),
        (dict(arch="resnet", depth=18, in_channels=3, variant="A"), "variant applies to arch='lenet' only"),
        (dict(arch="resnet", depth=18, in_channels=3, dropout=0.3), "dropout applies to arch='wrn' only"),
        (dict(arch="resnet", depth=18, in_channels=3, num_classes=1), "num_classes must be an integer >= 2"),
        (dict(arch="resnet", depth=18, in_channels=3, h=2), "h and alpha apply only with pushpull=True"),
        (dict(arch="lenet", variant="A", in_channels=1), "in_channels and stem apply to arch='resnet' only"),
        (dict(arch="lenet", variant="A", stem="cifar"), "in_channels and stem apply to arch='resnet' only"),
        (dict(arch="wrn", depth=28, width=10, in_channels=3), "in_channels and stem apply to arch='resnet' only"),
        (dict(arch="vgg"), "unknown arch 'vgg': expected 'lenet', 'wrn' or 'resnet'"),
    ],
)
def test_invalid_resnet_specs_raise_a_clear_value_error(spec, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(**spec)
