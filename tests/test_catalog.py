import dataclasses
import subprocess
import sys

import pytest
import torch

from models import ModelSpec
from sweep.catalog import build_sweep
from sweep.specs import Recipe, TrialSpec, apply_overrides, default_recipe, describe_recipe, parse_override
from sweep.training import augment


@pytest.mark.parametrize(
    ("sweep", "count"),
    [("lenet", 8), ("wrn_width", 8), ("wrn_depth", 8), ("cifar100", 2), ("sensitivity", 10), ("paper_full", 32)],
)
def test_sweep_sizes(sweep, count):
    assert len(build_sweep(sweep)) == count
    assert len(build_sweep(sweep, seeds=3)) == 3 * count
    assert {s.seed for s in build_sweep(sweep, seeds=3)} == {0, 1, 2}


def test_paper_full_is_the_union_of_the_other_sweeps_with_shared_trials_merged():
    union = {
        s.key for name in ("lenet", "wrn_width", "wrn_depth", "cifar100", "sensitivity") for s in build_sweep(name)
    }
    assert {s.key for s in build_sweep("paper_full")} == union
    names = sorted(s.model.name for s in build_sweep("paper_full"))
    assert names.count("WRN-28-10") == 2  # CIFAR-10 (width and depth sweeps merged) and CIFAR-100
    assert names.count("WRN-16-10-PP") == 9  # h=2, alpha=1 shared by the depth and sensitivity sweeps


def test_push_pull_is_h2_alpha1_outside_the_sensitivity_sweep():
    for name in ("lenet", "wrn_width", "wrn_depth", "cifar100"):
        for spec in build_sweep(name):
            assert (spec.model.h, spec.model.alpha) == ((2.0, 1.0) if spec.model.pushpull else (None, None))
    grid = {(s.model.h, s.model.alpha) for s in build_sweep("sensitivity") if s.model.pushpull}
    assert grid == {(h, a) for h in (1.0, 1.5, 2.0) for a in (0.5, 1.0, 1.5)}


def test_paper_recipes():
    lenet, wrn = default_recipe("lenet", "paper"), default_recipe("wrn", "paper")
    assert (lenet.epochs, lenet.lr, lenet.milestones, lenet.lr_decay, lenet.batch_size) == (
        90,
        0.01,
        (30, 60),
        0.1,
        128,
    )
    assert (wrn.epochs, wrn.lr, wrn.milestones, wrn.lr_decay, wrn.augment) == (200, 0.1, (60, 120, 160), 0.2, True)
    for recipe in (lenet, wrn):
        assert (recipe.momentum, recipe.nesterov, recipe.weight_decay) == (0.9, True, 5e-4)
    smoke = default_recipe("wrn", "smoke")
    assert smoke.max_train_batches is not None and smoke.max_test_images is not None


def test_trial_keys_are_stable_across_processes_and_change_with_any_field():
    spec = build_sweep("lenet")[4]
    code = "from sweep.catalog import build_sweep; print(build_sweep('lenet')[4].key)"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == spec.key
    assert spec.key.startswith("mnist-PA-s0-")
    assert TrialSpec.from_dict(spec.to_dict()) == spec
    changed = apply_overrides(spec, [(None, "lr", 0.05)])
    assert changed.key != spec.key and changed.recipe.lr == 0.05


def test_milestones_none_is_a_constant_rate_and_is_logged_as_none():
    assert parse_override("lenet.milestones=none") == ("lenet", "milestones", ())
    assert parse_override("milestones=None") == (None, "milestones", ())
    (spec,) = build_sweep("lenet", overrides=[parse_override("milestones=none")])[:1]
    assert spec.recipe.milestones == () and spec.params()["milestones"] == "none"


def test_overrides_can_be_scoped_to_an_architecture():
    overrides = [parse_override("lenet.lr=0.05"), parse_override("wrn.epochs=3"), parse_override("milestones=2,4")]
    for spec in build_sweep("paper_full", overrides=overrides):
        assert spec.recipe.milestones == (2, 4)
        if spec.model.arch == "lenet":
            assert (spec.recipe.lr, spec.recipe.epochs) == (0.05, 90)
        else:
            assert (spec.recipe.lr, spec.recipe.epochs) == (0.1, 3)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("lr=0.05", (None, "lr", 0.05)),
        ("max_test_images=none", (None, "max_test_images", None)),
        ("augment=false", (None, "augment", False)),
        ("wrn.batch_size=64", ("wrn", "batch_size", 64)),
    ],
)
def test_parse_override(text, parsed):
    assert parse_override(text) == parsed


def test_specs_reject_inconsistent_combinations():
    with pytest.raises(ValueError, match="cifar100 has 100 classes, the model 10"):
        TrialSpec("cifar100", ModelSpec(arch="wrn", depth=28, width=10), default_recipe("wrn", "paper"))
    with pytest.raises(ValueError, match="a lenet takes 1x28x28 images, cifar10 has 3x32x32"):
        TrialSpec("cifar10", ModelSpec(arch="lenet", variant="A"), default_recipe("lenet", "paper"))
    with pytest.raises(ValueError, match="milestones must be increasing positive epochs"):
        Recipe(epochs=5, lr=0.1, milestones=(3, 2), lr_decay=0.1)


def test_augment_crops_a_window_of_the_padded_image_and_may_flip_it():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    generator = torch.Generator().manual_seed(0)
    out = augment(images, generator, padding=2)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for n in range(2):
        windows = [padded[n, :, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        windows += [w.flip(2) for w in windows]
        assert any(torch.equal(out[n], w) for w in windows)
    again = augment(images, torch.Generator().manual_seed(0), padding=2)
    assert torch.equal(out, again)


def test_a_recipe_id_is_stable_across_processes_and_names_every_field():
    code = "from sweep.specs import default_recipe; print(default_recipe('lenet', 'paper').id)"
    other_process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    paper = default_recipe("lenet", "paper")
    assert paper.id == other_process and len(paper.id) == 8
    ids = {
        dataclasses.replace(paper, **{name: value}).id
        for name, value in (("epochs", 15), ("grad_clip", 1.0), ("normalize", False), ("milestones", (5, 10)))
    }
    assert len(ids | {paper.id}) == 5


def test_a_recipe_reads_back_from_the_mlflow_params_it_logged():
    recipe = dataclasses.replace(default_recipe("lenet", "smoke"), grad_clip=1.0, milestones=(), warmup_epochs=0.5)
    params = {name: str(value) for name, value in recipe.params().items()}  # MLflow stores params as text
    assert params["milestones"] == "none" and params["max_test_images"] == "500"
    assert Recipe.from_params(params) == recipe
    assert Recipe.from_params({**params, "milestones": ""}) == recipe  # as runs logged before "none" hold it
    assert (
        Recipe.from_params({k: v for k, v in params.items() if k != "eval_batch_size"}).eval_batch_size == 1000
    )  # a field added later
    with pytest.raises(ValueError, match="the run has no param 'epochs'"):
        Recipe.from_params({k: v for k, v in params.items() if k != "epochs"})


@pytest.mark.parametrize(
    ("arch", "changes", "described"),
    [
        ("lenet", {}, ("paper", "")),
        ("lenet", {"epochs": 15, "milestones": (5, 10)}, ("paper", "epochs=15, milestones=5,10")),
        ("wrn", {"lr": 0.05}, ("paper", "lr=0.05")),
    ],
)
def test_a_recipe_is_described_by_its_closest_profile_and_what_differs(arch, changes, described):
    assert describe_recipe(arch, dataclasses.replace(default_recipe(arch, "paper"), **changes)) == described
    smoke = dataclasses.replace(default_recipe(arch, "smoke"), epochs=2)
    assert describe_recipe(arch, smoke) == ("smoke", "epochs=2")


def test_precision_and_compile_are_recipe_fields_in_the_key_the_id_and_the_params():
    fp32 = build_sweep("lenet")[4]
    bf16 = apply_overrides(fp32, [parse_override("precision=bf16")])
    compiled = apply_overrides(fp32, [parse_override("compile=true")])
    assert (fp32.recipe.precision, bf16.recipe.precision, compiled.recipe.compile) == ("fp32", "bf16", True)
    assert (
        len({fp32.key, bf16.key, compiled.key}) == 3 and len({fp32.recipe.id, bf16.recipe.id, compiled.recipe.id}) == 3
    )
    assert bf16.params()["precision"] == "bf16" and compiled.params()["compile"] is True
    assert Recipe.from_params({k: str(v) for k, v in bf16.params().items()}) == bf16.recipe
    # Added after keys were first published: at their first values they leave every earlier key and id as it was.
    assert "precision" not in fp32.recipe.hashed_fields() and "compile" not in fp32.recipe.hashed_fields()
    first = build_sweep("lenet")[0]
    assert (first.key, first.recipe.id) == ("mnist-A-s0-cb52cd1aa8", "0192aeed")  # as published before these fields
    assert bf16.recipe.hashed_fields()["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        apply_overrides(fp32, [parse_override("precision=fp16")])


def test_an_override_scoped_to_no_architecture_names_the_scopes():
    with pytest.raises(ValueError) as raised:
        parse_override("foo.lr=1")
    assert str(raised.value) == "--set 'foo.lr=1': a scope must be one of lenet., wrn., resnet., got 'foo'"
