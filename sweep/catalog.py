"""The paper's sweeps, as data: each a list of (dataset, model) pairs; recipes and seeds are added by
:func:`build_sweep`."""

from __future__ import annotations

from models import LENET_VARIANTS, ModelSpec
from sweep.specs import DATASETS, TrialSpec, apply_overrides, default_recipe

__all__ = ["SWEEPS", "build_sweep"]


def _wrn(
    depth: int, width: int, pushpull: bool, h: float | None = None, alpha: float | None = None, classes: int = 10
) -> ModelSpec:
    return ModelSpec(arch="wrn", depth=depth, width=width, pushpull=pushpull, h=h, alpha=alpha, num_classes=classes)


def _with_and_without_pushpull(dataset: str, models: list[tuple[int, int]]) -> list[tuple[str, ModelSpec]]:
    """Each WRN-depth-width without and with the paper's push-pull stem (h=2, alpha=1), for ``dataset``'s classes."""
    classes = DATASETS[dataset].num_classes
    return [(dataset, _wrn(d, w, pp, classes=classes)) for d, w in models for pp in (False, True)]


_SENSITIVITY = [("cifar10", _wrn(16, 10, False))] + [
    ("cifar10", _wrn(16, 10, True, h, alpha)) for h in (1.0, 1.5, 2.0) for alpha in (0.5, 1.0, 1.5)
]

# name -> (description, the (dataset, model) pairs of one seed)
SWEEPS: dict[str, tuple[str, list[tuple[str, ModelSpec]]]] = {
    "lenet": (
        "LeNet-5 A-D and PA-PD on MNIST (paper Table 1, Figs. 4-5)",
        [("mnist", ModelSpec(arch="lenet", variant=v, pushpull=pp)) for pp in (False, True) for v in LENET_VARIANTS],
    ),
    "wrn_width": (
        "WRN-28-{1,4,8,10} with and without push-pull on CIFAR-10 (Figs. 6, 8)",
        _with_and_without_pushpull("cifar10", [(28, 1), (28, 4), (28, 8), (28, 10)]),
    ),
    "wrn_depth": (
        "WRN-{16,22,28,40}-10 with and without push-pull on CIFAR-10 (Figs. 7, 9)",
        _with_and_without_pushpull("cifar10", [(16, 10), (22, 10), (28, 10), (40, 10)]),
    ),
    "cifar100": (
        "WRN-28-10 with and without push-pull on CIFAR-100 (Table 2)",
        _with_and_without_pushpull("cifar100", [(28, 10)]),
    ),
    "sensitivity": ("WRN-16-10 and WRN-16-10-PP for h in {1, 1.5, 2} x alpha in {0.5, 1, 1.5} (Table 3)", _SENSITIVITY),
}
SWEEPS["paper_full"] = (
    "every trial of the paper, identical ones merged",
    [pair for name in list(SWEEPS) for pair in SWEEPS[name][1]],
)


def build_sweep(
    name: str,
    *,
    profile: str = "paper",
    seeds: int = 1,
    overrides: list[tuple[str | None, str, object]] | None = None,
) -> list[TrialSpec]:
    """The trials of sweep ``name``, one per (model, seed), duplicates (same trial key) merged, in catalog order.

    Raises ValueError for an unknown sweep, profile or an override that makes a recipe invalid.
    """
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}: expected one of {', '.join(SWEEPS)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be an integer >= 1, got {seeds!r}")
    trials: dict[str, TrialSpec] = {}
    for seed in range(seeds):
        for dataset, model in SWEEPS[name][1]:
            arch = DATASETS[dataset].arch
            spec = TrialSpec(dataset, model, default_recipe(arch, profile), seed)
            spec = apply_overrides(spec, overrides or [])
            trials.setdefault(spec.key, spec)
    return list(trials.values())
