"""Study files (sweep.study): the built-in ones give the paper's trials exactly as the code before study files
did; a user's file expands its grid axes in the documented order; a malformed file stops ``sweep.run`` with
one line and exit status 2, having created nothing; ``--list`` counts each built-in study's trials; a study
that searches push-pull's h and alpha plans its plain twins, the base of its searched trials, and says so
in a dry run. No Ray starts."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from sweep import run
from sweep.catalog import STUDIES, build_sweep
from sweep.specs import parse_override
from sweep.study import StudyError, load_study
from tests.datasets import write_mnist

PINNED = Path(__file__).with_name("data") / "paper_trial_keys.json"
PAPER_TRIAL_KEYS: dict[str, list[str]] = json.loads(PINNED.read_text())


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def write_study(folder: Path, text: str, name: str = "my_study") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def parse_label(label: str) -> tuple[str, str, int, list[str]]:
    """``NAME --profile P --seeds N [--set KEY=VALUE ...]`` -> (name, profile, seeds, the --set texts)."""
    name, *words = shlex.split(label)
    options: dict[str, list[str]] = {}
    for option, value in zip(words[::2], words[1::2], strict=True):
        options.setdefault(option, []).append(value)
    assert set(options) <= {"--profile", "--seeds", "--set"}, label
    return name, options["--profile"][0], int(options["--seeds"][0]), options.get("--set", [])


# 1. The built-in studies: the trial keys the code before study files made, in its order.


@pytest.mark.parametrize("label", list(PAPER_TRIAL_KEYS))
def test_each_built_in_study_gives_the_pinned_trial_keys_in_order(label):
    name, profile, seeds, sets = parse_label(label)
    overrides = [parse_override(text) for text in sets]
    keys = [spec.key for spec in build_sweep(name, profile=profile, seeds=seeds, overrides=overrides)]
    assert keys == PAPER_TRIAL_KEYS[label]


def test_the_pinned_keys_cover_every_built_in_study():
    assert {parse_label(label)[0] for label in PAPER_TRIAL_KEYS} == set(STUDIES)


# 2. A user's study: grids, data sets, recipe scopes, seeds, includes.


def test_grid_axes_give_their_cross_product_in_the_documented_order(tmp_path):
    path = write_study(
        tmp_path,
        """
        description = "two LeNets, plain and push-pull, at two learning rates"
        datasets = ["mnist"]
        seeds = 2

        [[models]]
        arch = "lenet"
        variant = ["A", "B"]
        pushpull = [false, true]

        [recipe]
        lr = [0.01, 0.05]
        """,
    )
    study = load_study(str(path))
    assert (study.name, study.description, study.seeds) == (
        "my_study",
        "two LeNets, plain and push-pull, at two learning rates",
        2,
    )
    trials = study.trials()
    # Per seed, then the model's axes (variant outermost, as written), then the recipe's.
    assert [(s.model.name, s.recipe.lr, s.seed) for s in trials] == [
        ("A", 0.01, 0), ("A", 0.05, 0), ("PA", 0.01, 0), ("PA", 0.05, 0),
        ("B", 0.01, 0), ("B", 0.05, 0), ("PB", 0.01, 0), ("PB", 0.05, 0),
        ("A", 0.01, 1), ("A", 0.05, 1), ("PA", 0.01, 1), ("PA", 0.05, 1),
        ("B", 0.01, 1), ("B", 0.05, 1), ("PB", 0.01, 1), ("PB", 0.05, 1),
    ]  # fmt: skip
    assert len({s.key for s in trials}) == 16
    assert {s.dataset for s in trials} == {"mnist"}
    assert {(s.model.h, s.model.alpha) for s in trials if s.model.pushpull} == {(2.0, 1.0)}
    # The rest of the recipe is the profile's.
    assert {(s.recipe.epochs, s.recipe.milestones) for s in trials} == {(90, (30, 60))}
    assert {(s.recipe.epochs, s.recipe.max_train_batches) for s in study.trials("smoke")} == {(1, 100)}


@pytest.mark.parametrize(("dataset", "channels", "classes"), [("mnist", 1, 10), ("cifar100", 3, 100)])
def test_a_resnet_takes_the_channels_and_classes_of_its_data_set(tmp_path, dataset, channels, classes):
    path = write_study(tmp_path, f'datasets = ["{dataset}"]\n[[models]]\narch = "resnet"\ndepth = 18\n')
    (spec,) = load_study(str(path)).trials()
    assert (spec.dataset, spec.model.name) == (dataset, "ResNet-18")
    assert (spec.model.in_channels, spec.model.num_classes, spec.model.stem) == (channels, classes, "cifar")


def test_a_model_tables_own_data_sets_override_the_studys(tmp_path):
    path = write_study(
        tmp_path,
        """
        datasets = ["mnist", "fashionmnist"]
        [[models]]
        arch = "lenet"
        variant = "A"
        [[models]]
        arch = "lenet"
        variant = "B"
        datasets = ["kmnist"]
        """,
    )
    trials = load_study(str(path)).trials()
    assert [(s.model.name, s.dataset) for s in trials] == [("A", "mnist"), ("A", "fashionmnist"), ("B", "kmnist")]


def test_a_recipe_scoped_to_an_architecture_applies_to_it_alone(tmp_path):
    path = write_study(
        tmp_path,
        """
        datasets = ["mnist"]
        [[models]]
        arch = "lenet"
        variant = "A"
        [[models]]
        arch = "resnet"
        depth = 18
        [recipe]
        epochs = 15
        [recipe.resnet]
        lr = 0.05
        """,
    )
    trials = load_study(str(path)).trials()
    assert [(s.model.name, s.recipe.epochs, s.recipe.lr) for s in trials] == [("A", 15, 0.01), ("ResNet-18", 15, 0.05)]


@pytest.mark.parametrize(
    ("written", "milestones"),
    [("[[5, 10], [8]]", [(5, 10), (8,)]), ("[5, 10]", [(5, 10)]), ('"none"', [()])],
    ids=["list-of-lists-is-an-axis", "a-list-is-one-value", "none"],
)
def test_milestones_are_an_axis_only_as_a_list_of_lists(tmp_path, written, milestones):
    path = write_study(tmp_path, f'datasets = ["mnist"]\n[[models]]\narch = "lenet"\nvariant = "A"\n[recipe]\n'
                       f"milestones = {written}\n")  # fmt: skip
    assert [s.recipe.milestones for s in load_study(str(path)).trials()] == milestones


def test_seeds_given_to_trials_override_the_files(tmp_path):
    path = write_study(tmp_path, 'seeds = 2\ndatasets = ["mnist"]\n[[models]]\narch = "lenet"\nvariant = "A"\n')
    study = load_study(str(path))
    assert [s.seed for s in study.trials()] == [0, 1]
    assert [s.seed for s in study.trials(seeds=3)] == [0, 1, 2]
    assert [s.seed for s in build_sweep(str(path), seeds=1)] == [0]


def test_an_include_adds_the_built_in_studys_models_first_and_duplicates_merge(tmp_path):
    path = write_study(
        tmp_path,
        """
        include = ["lenet"]
        datasets = ["mnist"]
        [[models]]
        arch = "lenet"
        variant = ["A", "D"]
        pushpull = true
        [[models]]
        arch = "resnet"
        depth = 18
        """,
    )
    trials = load_study(str(path)).trials()
    lenet = [s.key for s in build_sweep("lenet")]
    assert [s.key for s in trials][:8] == lenet  # PA and PD, already there, are merged
    assert [s.model.name for s in trials] == ["A", "B", "C", "D", "PA", "PB", "PC", "PD", "ResNet-18"]


def test_trials_that_come_out_equal_are_merged(tmp_path):
    path = write_study(
        tmp_path,
        """
        datasets = ["mnist", "mnist"]
        [[models]]
        arch = "lenet"
        variant = ["A", "A"]
        pushpull = [true, true]
        h = [2, 2.0]
        [recipe]
        lr = [0.01, 0.01]
        """,
    )
    trials = load_study(str(path)).trials()
    assert [(s.model.name, s.model.h, s.recipe.lr) for s in trials] == [("PA", 2.0, 0.01)]


# 3. A malformed study: one line, exit status 2, nothing created.

LENET_A = '[[models]]\narch = "lenet"\nvariant = "A"\n'
SEARCHED_PA = (
    'datasets = ["mnist"]\n[[models]]\narch = "lenet"\nvariant = "A"\npushpull = [false, true]\n[search]\nsamples = 4\n'
)
RECIPE_FIELDS = (
    "epochs, lr, milestones, lr_decay, momentum, nesterov, weight_decay, batch_size, augment, normalize, "
    "warmup_epochs, grad_clip, max_train_batches, max_test_images, eval_batch_size, precision, compile"
)
DATASET_NAMES = "mnist, fashionmnist, kmnist, cifar10, cifar100, svhn"
MALFORMED = [
    pytest.param(
        'datsets = ["mnist"]\n' + LENET_A,
        "{file}: unknown key 'datsets': expected one of description, datasets, seeds, suites, include, models, "
        "recipe, search",
        id="unknown-top-level-key",
    ),
    pytest.param(
        'datasets = ["mnist"]\n[[models]]\narch = "vgg"\n',
        "{file}: models[0]: arch: unknown 'vgg': expected one of lenet, wrn, resnet",
        id="unknown-arch",
    ),
    pytest.param(
        'datasets = ["mnist"]\n[[models]]\nvariant = "A"\n',
        "{file}: models[0]: arch: missing: expected one of lenet, wrn, resnet",
        id="no-arch",
    ),
    pytest.param(
        'datasets = ["mnist"]\n[[models]]\narch = "resnet"\ndepth = ["18"]\n',
        "{file}: models[0]: depth: expected an integer or a list of them, got '18'",
        id="model-field-of-the-wrong-type",
    ),
    pytest.param(
        'datasets = ["mnist"]\n[[models]]\narch = "lenet"\nvariant = "A"\nwidth = 4\n',
        "{file}: models[0]: width: not a field of a lenet model: expected one of arch, datasets, pushpull, h, "
        "alpha, variant",
        id="field-of-another-arch",
    ),
    pytest.param(
        'datasets = ["mnist"]\n[[models]]\narch = "resnet"\ndepth = [18, 19]\n',
        "{file}: models (arch='resnet', depth=19) on mnist: ResNet depth must be one of 18, 34, 50, got 19",
        id="a-model-that-does-not-build",
    ),
    pytest.param(
        'datasets = ["imagenet"]\n' + LENET_A,
        f"{{file}}: datasets: unknown 'imagenet': expected one of {DATASET_NAMES}",
        id="unknown-dataset",
    ),
    pytest.param(
        'datasets = [["mnist"]]\n' + LENET_A,
        f"{{file}}: datasets: unknown ['mnist']: expected one of {DATASET_NAMES}",
        id="dataset-list-of-lists",
    ),
    pytest.param(
        'datasets = ["cifar10"]\n' + LENET_A,
        "{file}: models (arch='lenet', variant='A') on cifar10: a lenet takes 1x28x28 images, cifar10 has 3x32x32",
        id="lenet-on-cifar10",
    ),
    pytest.param(
        SEARCHED_PA + "h = [1.0]\nalpha = [0.0, 2.0]\n",
        "{file}: search.h: expected a range [low, high] of two numbers, got [1.0]",
        id="search-range-without-bounds",
    ),
    pytest.param(
        SEARCHED_PA + "h = [3.0, 1.0]\nalpha = [0.0, 2.0]\n",
        "{file}: search.h: expected 1 <= low < high, got [3, 1]",
        id="search-range-low-above-high",
    ),
    pytest.param(
        SEARCHED_PA + 'metric = "accuracy"\nh = [1.0, 3.0]\nalpha = [0.0, 2.0]\n',
        "{file}: search.metric: unknown search metric 'accuracy': expected one of clean, noise, noise/gaussian, "
        "noise/speckle, noise/poisson",
        id="unknown-search-metric",
    ),
    pytest.param(
        SEARCHED_PA.replace('variant = "A"', 'variant = ["A", "B"]') + "h = [1.0, 3.0]\nalpha = [0.0, 2.0]\n",
        "{file}: search: expected exactly one push-pull model to search (pushpull = [false, true] of one model on "
        "one data set), got 2",
        id="search-over-two-push-pull-models",
    ),
    pytest.param(
        SEARCHED_PA.replace("pushpull = [false, true]", "pushpull = [false, true]\nh = 1.5")
        + "h = [1.0, 3.0]\nalpha = [0.0, 2.0]\n",
        "{file}: models: h is searched ([search]): leave it out of [[models]]",
        id="searched-h-in-a-model",
    ),
    pytest.param(
        'datasets = ["mnist"]\n' + LENET_A + '[recipe]\nlr = "fast"\n',
        "{file}: recipe.lr: expected a number, got 'fast'",
        id="recipe-field-of-the-wrong-type",
    ),
    pytest.param(
        'datasets = ["mnist"]\n' + LENET_A + "[recipe.lenet]\nlearning_rate = 0.1\n",
        f"{{file}}: recipe.lenet.learning_rate: unknown recipe field: expected one of {RECIPE_FIELDS}",
        id="unknown-recipe-field",
    ),
    pytest.param(
        'datasets = ["mnist"]\n' + LENET_A + "[recipe]\nepochs = 0\n",
        "{file}: [recipe] for lenet: epochs must be an integer >= 1, got 0",
        id="recipe-value-out-of-range",
    ),
    pytest.param(
        'datasets = ["mnist"]\n' + LENET_A + "[recipe]\nmilestones = [[5, 10], 8]\n",
        "{file}: recipe.milestones: expected a list of whole numbers (e.g. [5, 10]), or a list of such lists "
        "(a grid axis), got [[5, 10], 8]",
        id="milestones-mixed",
    ),
    pytest.param(
        'datasets = ["mnist"\n' + LENET_A,
        "{file}: not TOML: Unclosed array (at line 2, column 1)",
        id="not-toml",
    ),
    pytest.param(
        'datasets = ["mnist"]\n[[models]]\narch = "lenet"\nvariant = []\n',
        "{file}: models[0]: variant: an empty list: expected at least one value",
        id="empty-model-axis",
    ),
    pytest.param(
        'datasets = ["mnist"]\n' + LENET_A + "[recipe]\nlr = []\n",
        "{file}: recipe.lr: an empty list: expected at least one value",
        id="empty-recipe-axis",
    ),
    pytest.param(
        LENET_A,
        "{file}: models[0]: datasets: expected data sets to train on (the study's or the model's own)",
        id="no-dataset",
    ),
    pytest.param(
        'datasets = ["mnist"]\n',
        "{file}: models: expected at least one [[models]] table (or an include)",
        id="no-model",
    ),
    pytest.param(
        'seeds = 0\ndatasets = ["mnist"]\n' + LENET_A,
        "{file}: seeds: expected an integer >= 1, got 0",
        id="no-seed",
    ),
    pytest.param(
        'include = ["lenets"]\n',
        "{file}: include: unknown 'lenets': expected one of lenet, wrn_width, wrn_depth, cifar100, sensitivity, "
        "paper_full",
        id="unknown-include",
    ),
]


def fails_with_one_line(capsys, monkeypatch, tmp_path: Path, target: str, message: str) -> None:
    """``python -m sweep.run TARGET --dry-run`` (run from a folder of tmp_path, with a storage in it) exits 2
    with exactly ``message`` on stderr and nothing on stdout, and creates nothing."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    storage = tmp_path / "runs"
    before = listing(tmp_path)
    assert run.main([target, "--dry-run", "--storage", str(storage)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"sweep.run: error: {message}"]
    assert captured.out == ""
    assert not storage.exists()
    assert listing(tmp_path) == before


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_a_malformed_study_stops_with_one_line(tmp_path, capsys, monkeypatch, text, message):
    path = write_study(tmp_path, text)
    fails_with_one_line(capsys, monkeypatch, tmp_path, str(path), message.format(file=path))


def test_a_study_file_that_does_not_exist_stops_with_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "absent.toml"
    fails_with_one_line(capsys, monkeypatch, tmp_path, str(path), f"no study file {path}")


def test_a_study_file_that_is_not_utf8_stops_with_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'description = "caf\xe9"\n')
    message = f"{path}: not TOML: 'utf-8' codec can't decode byte 0xe9 in position 18: invalid continuation byte"
    fails_with_one_line(capsys, monkeypatch, tmp_path, str(path), message)


def test_an_unknown_built_in_study_stops_with_one_line(tmp_path, capsys, monkeypatch):
    message = (
        "unknown sweep 'lenets': expected one of lenet, wrn_width, wrn_depth, cifar100, sensitivity, paper_full, "
        "or a study file (.toml)"
    )
    fails_with_one_line(capsys, monkeypatch, tmp_path, "lenets", message)


def test_a_malformed_study_raises_a_study_error(tmp_path):
    path = write_study(tmp_path, 'datasets = ["imagenet"]\n' + LENET_A)
    with pytest.raises(StudyError, match=r"datasets: unknown 'imagenet'"):
        load_study(str(path))


# 4. --list


def test_list_names_the_built_in_studies_with_their_trial_counts(capsys):
    assert run.main(["--list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines() == [
        "lenet          8 trials  LeNet-5 A-D and PA-PD on MNIST (paper Table 1, Figs. 4-5)",
        "wrn_width      8 trials  WRN-28-{1,4,8,10} with and without push-pull on CIFAR-10 (Figs. 6, 8)",
        "wrn_depth      8 trials  WRN-{16,22,28,40}-10 with and without push-pull on CIFAR-10 (Figs. 7, 9)",
        "cifar100       2 trials  WRN-28-10 with and without push-pull on CIFAR-100 (Table 2)",
        "sensitivity   10 trials  WRN-16-10 and WRN-16-10-PP for h in {1, 1.5, 2} x alpha in {0.5, 1, 1.5} (Table 3)",
        "paper_full    32 trials  every trial of the paper, identical ones merged",
    ]


# 5. A study that searches push-pull's h and alpha.

SEARCH_STUDY = """
description = "h and alpha of LeNet PA, searched"
datasets = ["mnist"]

[[models]]
arch = "lenet"
variant = "A"
pushpull = [false, true]

[search]
samples = 12
metric = "noise/gaussian"
h = [1.0, 3.0]
alpha = [0.0, 2.0]
"""


def test_a_search_study_plans_the_plain_twins_and_the_base_of_its_searched_trials(tmp_path):
    study = load_study(str(write_study(tmp_path, SEARCH_STUDY)))
    search = study.search
    assert (search.algorithm, search.samples, search.metrics, search.modes, search.scheduler) == (
        "optuna",
        12,
        ("noise/gaussian",),
        ("max",),
        "none",
    )
    assert search.ranges == {"h": (1.0, 3.0), "alpha": (0.0, 2.0)}
    assert [(s.model.name, s.seed) for s in study.trials()] == [("A", 0)]
    assert [(s.model.name, s.seed) for s in study.trials(seeds=3)] == [("A", 0), ("A", 1), ("A", 2)]
    base = study.search_base()
    assert (base.dataset, base.model.name, base.model.h, base.model.alpha, base.seed) == ("mnist", "PA", 2.0, 1.0, 0)
    assert base.recipe == study.trials()[0].recipe
    assert load_study("lenet").search_base() is None


@pytest.mark.parametrize(
    ("extra", "options", "line"),
    [
        pytest.param(
            "",
            [],
            "then 12 searched trials: PA on mnist, 12 points (h in [1, 3], alpha in [0, 2]) x 1 seeds, optuna: "
            "max noise/gaussian",
            id="one-seed",
        ),
        pytest.param(
            'scheduler = "asha"\n',
            ["--seeds", "2"],
            "then 24 searched trials: PA on mnist, 12 points (h in [1, 3], alpha in [0, 2]) x 2 seeds, optuna: "
            "max noise/gaussian, ASHA stops the worst early",
            id="two-seeds-asha",
        ),
    ],
)
def test_the_dry_run_of_a_search_study_says_what_it_searches(tmp_path, capsys, monkeypatch, extra, options, line):
    path = write_study(tmp_path, SEARCH_STUDY + extra)
    write_mnist(tmp_path / "data", n_train=20, n_test=10)
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "runs"
    before = listing(tmp_path)
    args = [str(path), "--profile", "smoke", "--storage", str(storage), "--data-root", str(tmp_path / "data")]
    assert run.main([*args, *options, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    twins = load_study(str(path)).trials("smoke", seeds=2 if options else None)
    count = lines.index(f"{len(twins)} trials")
    assert [row.split()[0] for row in lines[1:count]] == [spec.key for spec in twins]
    assert lines[count + 1] == line
    assert not storage.exists() and listing(tmp_path) == before


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_toml_blocks() -> list[str]:
    text = README.read_text()
    return [block.split("```", 1)[0] for block in text.split("```toml\n")[1:]]


def test_the_readmes_study_files_run_as_it_says(tmp_path):
    first, search = readme_toml_blocks()
    study = load_study(str(write_study(tmp_path, first, "resnet_mnist")))
    names = [(spec.model.name, spec.seed) for spec in study.trials(profile="smoke")]
    assert names == [
        ("A", 0),
        ("PA", 0),
        ("ResNet-18", 0),
        ("ResNet-18-PP", 0),
        ("A", 1),
        ("PA", 1),
        ("ResNet-18", 1),
        ("ResNet-18-PP", 1),
    ]
    resnet = study.trials()[2].model
    assert (resnet.depth, resnet.in_channels, resnet.stem, resnet.num_classes) == (18, 1, "cifar", 10)
    searched = load_study(str(write_study(tmp_path, search, "pa_search")))
    assert [spec.model.name for spec in searched.trials()] == ["A"]
    assert searched.search_base().model.name == "PA"
    assert (searched.search.samples, searched.search.metrics, searched.search.scheduler) == (
        12,
        ("noise/gaussian",),
        "asha",
    )
    assert searched.search.ranges == {"h": (1.0, 3.0), "alpha": (0.0, 2.0)}
