"""Trial specs: what one trial trains and how, validated once, hashed into a stable trial key.

A :class:`TrialSpec` is (dataset, model, recipe, seed). Everything downstream (the Ray trainable, the
MLflow callback, the aggregator) receives specs that already passed validation here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from models import ModelSpec
from sweep.datasets import DATASETS
from sweep.defaults import PROFILES

__all__ = [
    "ARCHS",
    "PRECISIONS",
    "PROFILES",
    "Recipe",
    "TRIAL_RESOURCES",
    "TrialSpec",
    "apply_overrides",
    "default_recipe",
    "describe_recipe",
    "parse_override",
    "recipe_field_value",
]


PRECISIONS = ("fp32", "bf16")
# Fields added after trial keys and recipe ids were first published: they enter the hashes only when they
# differ from these values, so that every key and id made before them stays what it was.
_HASHED_UNLESS = {"precision": "fp32", "compile": False}
# Ray resources of one trial on a GPU cluster: LeNets pack four to a GPU, a WRN or a ResNet takes a whole
# one. Without GPUs a trial takes the CPUs alone and uses that many torch threads.
TRIAL_RESOURCES: dict[str, dict[str, float]] = {
    "lenet": {"cpu": 1, "gpu": 0.25},
    "wrn": {"cpu": 2, "gpu": 1},
    "resnet": {"cpu": 2, "gpu": 1},
}


@dataclass(frozen=True)
class Recipe:
    """How a model is trained and tested.

    Attributes:
        epochs: passes over the training set.
        lr: initial learning rate of SGD.
        milestones: epochs at which the learning rate is multiplied by ``lr_decay``.
        lr_decay: that factor.
        momentum, nesterov, weight_decay: SGD settings.
        batch_size: training images per step.
        augment: random crop of the 4-pixel zero-padded image at its own size, and a random horizontal flip
            where the data set's labels survive one (sweep.datasets.DatasetInfo.flips).
        normalize: subtract the data set's mean and divide by its std (after the test-time noise).
        warmup_epochs: linear warm-up of the learning rate over this many epochs, step by step (0: none).
        grad_clip: clip the gradient norm to this value before each step (None: no clipping).
        max_train_batches: stop each epoch after this many batches (None: the whole training set).
        max_test_images: score on the first this many test images (None: the whole test set).
        eval_batch_size: images per forward pass at test time.
        precision: ``fp32``, or ``bf16``: forward pass and loss under ``torch.autocast`` in bfloat16 (the
            weights, gradients and optimizer state stay fp32), in training and in scoring. ``sweep.run``
            gives GPU trials the precision measured faster for their model (sweep.precision), unless
            ``--set precision=`` says otherwise.
        compile: train and score through ``torch.compile(model)``.
    """

    epochs: int
    lr: float
    milestones: tuple[int, ...]
    lr_decay: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = False
    normalize: bool = True
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    max_train_batches: int | None = None
    max_test_images: int | None = None
    eval_batch_size: int = 1000
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        _positive_int(self, "epochs")
        _positive_int(self, "batch_size")
        _positive_int(self, "eval_batch_size")
        for name in ("max_train_batches", "max_test_images"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        for name in ("lr", "lr_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a number > 0 or none, got {self.grad_clip!r}")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        milestones = tuple(self.milestones)
        if any(not isinstance(m, int) or m <= 0 for m in milestones) or list(milestones) != sorted(set(milestones)):
            raise ValueError(f"milestones must be increasing positive epochs, got {self.milestones!r}")
        object.__setattr__(self, "milestones", milestones)
        for name in ("lr", "lr_decay", "momentum", "weight_decay", "warmup_epochs"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.grad_clip is not None:
            object.__setattr__(self, "grad_clip", float(self.grad_clip))

    @property
    def id(self) -> str:
        """Short stable id of every field (8 hex digits): equal recipes, equal ids, in any process."""
        canonical = json.dumps(self.hashed_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:8]

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that identify the recipe: all of them, less later ones at their first value."""
        return {k: v for k, v in dataclasses.asdict(self).items() if _HASHED_UNLESS.get(k, object()) != v}

    def params(self) -> dict[str, Any]:
        """The fields as MLflow params, less those that are None (their default: no clipping, no cap), so
        that no param reads "None"; :meth:`from_params` reads them back."""
        params = {name: value for name, value in dataclasses.asdict(self).items() if value is not None}
        # No milestones reads "none", not an empty param (which MLflow's UI shows as nothing at all).
        params["milestones"] = ",".join(str(m) for m in self.milestones) or "none"
        return params

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Recipe:
        """The recipe of an MLflow run from its params (the strings :meth:`params` logged); fields a run
        does not carry take their defaults. Raises ValueError when a required field is missing or invalid."""
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in params:
                values[field.name] = _parse_field(field.name, params[field.name], field.type)
            elif field.default is dataclasses.MISSING:
                raise ValueError(f"the run has no param {field.name!r}")
        return cls(**values)


def _positive_int(recipe: Recipe, name: str) -> None:
    value = getattr(recipe, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


# The paper's recipes (Sec. 4; WRN as in Zagoruyko & Komodakis), except the LeNet learning rate: at the
# paper's 0.1 the push-pull LeNets do not train (they collapse to one class, or turn NaN), at 0.01 all
# eight do, plain and push-pull alike (measured on real MNIST: see the README).
# A ResNet, which the paper did not train, takes the WRN's CIFAR recipe (as ResNets on CIFAR usually do).
_PAPER_RECIPES = {
    "lenet": Recipe(epochs=90, lr=0.01, milestones=(30, 60), lr_decay=0.1),
    "wrn": Recipe(epochs=200, lr=0.1, milestones=(60, 120, 160), lr_decay=0.2, augment=True),
    "resnet": Recipe(epochs=200, lr=0.1, milestones=(60, 120, 160), lr_decay=0.2, augment=True),
}
# The architectures a trial can train: each has its recipes.
ARCHS = tuple(_PAPER_RECIPES)
# Every architecture and the whole noise suite, on a sliver of the data: proves the pipeline, not the model.
_SMOKE_CAPS = {
    "lenet": dict(epochs=1, milestones=(), batch_size=64, max_train_batches=100, max_test_images=500),
    "wrn": dict(epochs=1, milestones=(), batch_size=8, max_train_batches=2, max_test_images=16, eval_batch_size=16),
    # A ResNet-18 on MNIST is at chance after the WRN's 2 batches of 8, and lr 0.1 throws its first steps
    # off; 40 batches of 32 at lr 0.05 reach about 66 % (measured; 10 s on 2 CPU cores, as long again for
    # its 100 test images under every noise).
    "resnet": dict(
        epochs=1, milestones=(), lr=0.05, batch_size=32, max_train_batches=40, max_test_images=100, eval_batch_size=100
    ),
}


def describe_recipe(arch: str, recipe: Recipe) -> tuple[str, str]:
    """(profile, changes): the profile whose recipe for ``arch`` differs from ``recipe`` in the fewest
    fields (the paper's on a tie), and those fields as ``KEY=VALUE, ...`` ("" when it is that profile's)."""

    def every_field(r: Recipe) -> dict[str, Any]:  # params() leaves out the fields that are None
        params = r.params()
        return {field.name: params.get(field.name) for field in dataclasses.fields(Recipe)}

    candidates = []
    for profile in PROFILES:
        base = every_field(default_recipe(arch, profile))
        changes = [f"{k}={v}" for k, v in every_field(recipe).items() if base[k] != v]
        candidates.append((len(changes), profile, ", ".join(changes)))
    _, profile, changes = min(candidates, key=lambda c: (c[0], PROFILES.index(c[1])))
    return profile, changes


def default_recipe(arch: str, profile: str) -> Recipe:
    """The recipe of ``arch`` (one of :data:`ARCHS`) under ``profile`` (``"paper"`` or ``"smoke"``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    recipe = _PAPER_RECIPES[arch]
    return dataclasses.replace(recipe, **_SMOKE_CAPS[arch]) if profile == "smoke" else recipe


@dataclass(frozen=True)
class TrialSpec:
    """One trial: train ``model`` on ``dataset`` with ``recipe`` from ``seed``, then score it on the noise suite."""

    dataset: str
    model: ModelSpec
    recipe: Recipe
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}: expected one of {', '.join(DATASETS)}")
        info = DATASETS[self.dataset]
        if self.model.num_classes != info.num_classes:
            raise ValueError(f"{self.dataset} has {info.num_classes} classes, the model {self.model.num_classes}")
        # A LeNet takes 28x28 grey images and a WRN 32x32 colour ones; a ResNet any size, in its channels.
        shape = (info.channels, info.size, info.size)
        taken = self.model.input_shape if self.model.arch != "resnet" else (self.model.channels, *shape[1:])
        if taken != shape:
            taken_words = f"{taken[0]}x{taken[1]}x{taken[2]}"
            raise ValueError(
                f"a {self.model.arch} takes {taken_words} images, {self.dataset} has {'x'.join(map(str, shape))}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` turns back into an equal spec."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        recipe = dict(data["recipe"], milestones=tuple(data["recipe"]["milestones"]))
        return cls(data["dataset"], ModelSpec(**data["model"]), Recipe(**recipe), data["seed"])

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrialSpec:
        """The spec of a Ray Tune trial, from its config: ``config["spec"]``, where ``sweep.run`` puts
        :meth:`to_dict`; for a searched trial (sweep.search) with the h, alpha and seed of
        ``config["searched"]``."""
        spec = cls.from_dict(config["spec"])
        searched = config.get("searched")
        if not searched:
            return spec
        # Rounded as drawn (sweep.search.SEARCH_STEP): a float's last bits do not make another trial.
        h, alpha = (round(float(searched[name]), 6) for name in ("h", "alpha"))
        model = dataclasses.replace(spec.model, h=h, alpha=alpha)
        return dataclasses.replace(spec, model=model, seed=int(searched["seed"]))

    @property
    def _digest(self) -> str:
        """A hash of every field: equal specs, equal digests, in any process."""
        canonical = json.dumps(
            {**self.to_dict(), "model": self.model.hashed_fields(), "recipe": self.recipe.hashed_fields()},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]

    @property
    def key(self) -> str:
        """Stable id: readable prefix plus a hash of every field. Equal specs, equal keys, in any process."""
        return f"{self.dataset}-{self.model.name}-s{self.seed}-{self._digest}"

    @property
    def run_name(self) -> str:
        """The MLflow run name: the key with h and alpha after a push-pull model's name
        (``cifar10-WRN-16-10-PP-h1.5-a0.5-s0-<hash>``), so that runs that differ in them read apart."""
        if not self.model.pushpull:
            return self.key
        return f"{self.dataset}-{self.model.name}-h{self.model.h:g}-a{self.model.alpha:g}-s{self.seed}-{self._digest}"

    def resources(self, gpus: bool, max_cpus: float) -> dict[str, float]:
        """Ray resources of this trial on a cluster with or without GPUs and ``max_cpus`` CPUs per node."""
        wanted = TRIAL_RESOURCES[self.model.arch]
        cpus = min(wanted["cpu"], max(1, max_cpus))
        return {"cpu": cpus, "gpu": wanted["gpu"]} if gpus else {"cpu": cpus}

    def params(self) -> dict[str, Any]:
        """The flattened spec, as MLflow params: model and recipe fields side by side, less the fields that
        do not apply (None: ``h`` and ``alpha`` of a plain model, ``depth`` of a LeNet...)."""
        model = {k: v for k, v in dataclasses.asdict(self.model).items() if k != "num_classes" and v is not None}
        return {"dataset": self.dataset, "model": self.model.name, "seed": self.seed, **model, **self.recipe.params()}


def parse_override(text: str) -> tuple[str | None, str, Any]:
    """``[ARCH.]KEY=VALUE`` -> (arch or None, key, typed value) for a :class:`Recipe` field.

    Raises ValueError with a one-line message for an unknown key or a value of the wrong type.
    """
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE")
    name, raw = (part.strip() for part in text.split("=", 1))
    arch, _, key = name.rpartition(".")
    if arch and arch not in ARCHS:
        raise ValueError(f"--set {text!r}: a scope must be one of {', '.join(a + '.' for a in ARCHS)}, got {arch!r}")
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    if key not in fields:
        raise ValueError(f"unknown --set key {key!r}: expected one of {', '.join(fields)}")
    try:
        return arch or None, key, _parse_field(key, raw, fields[key].type)
    except ValueError:
        raise ValueError(f"invalid value in --set {text}: {key} takes {_kind_of_value(fields[key].type)}") from None


# What a Recipe field's annotation asks of a --set value, in words.
_KINDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "a word",
    "tuple[int, ...]": "whole numbers separated by commas (e.g. 5,10) or none",
}


def _kind_of_value(annotation: str, toml: bool = False) -> str:
    """``float | None`` -> ``a number or none`` (``or "none"`` in a TOML file, which has no null)."""
    kind, none = annotation.removesuffix(" | None"), annotation.endswith(" | None")
    if toml and kind == "tuple[int, ...]":
        return "a list of whole numbers (e.g. [5, 10]), or a list of such lists (a grid axis)"
    return _KINDS[kind] + ((' or "none"' if toml else " or none") if none else "")


def _parse_field(key: str, raw: str, annotation: str) -> Any:
    """One Recipe field from text (``--set`` values and MLflow params alike); ValueError if it does not parse."""
    if key == "milestones":  # "none" (and "", as runs logged before "none" hold)
        return () if raw.strip().lower() == "none" else tuple(int(m) for m in raw.split(",") if m.strip())
    if annotation == "bool":
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{key}: not a bool: {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if raw.lower() == "none" and "None" in annotation:
        return None
    if annotation == "str":
        return raw
    return int(raw) if annotation.startswith("int") else float(raw)


def recipe_field_value(key: str, value: Any) -> Any:
    """A :class:`Recipe` field from a typed value (a study file's TOML): an int where a float is taken, a list
    of whole numbers for ``milestones``, ``"none"`` for a field that may be None. ValueError in words when
    ``key`` is no field or ``value`` is of the wrong type (the recipe checks its range)."""
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    if key not in fields:
        raise ValueError(f"unknown recipe field: expected one of {', '.join(fields)}")
    annotation = fields[key].type
    kind = annotation.removesuffix(" | None")
    if isinstance(value, str) and value.lower() == "none" and (annotation.endswith(" | None") or key == "milestones"):
        return () if key == "milestones" else None
    matches = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "tuple[int, ...]": isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
    }[kind]
    if not matches:
        raise ValueError(f"expected {_kind_of_value(annotation, toml=True)}, got {value!r}")
    return tuple(value) if key == "milestones" else value


def apply_overrides(spec: TrialSpec, overrides: list[tuple[str | None, str, Any]]) -> TrialSpec:
    """``spec`` with the recipe fields set by ``overrides`` (scoped ones only on their architecture)."""
    changes = {key: value for arch, key, value in overrides if arch in (None, spec.model.arch)}
    if not changes:
        return spec
    try:
        recipe = dataclasses.replace(spec.recipe, **changes)
    except ValueError as error:
        raise ValueError(f"invalid --set for {spec.model.name}: {error}") from None
    return dataclasses.replace(spec, recipe=recipe)
