"""The public formats a sweep's store depends on, pinned as literals: MLflow metric, param and tag names,
trial keys, the sweep's record and its storage layout. Existing stores are read by these names: a change
here orphans them, so it must be deliberate (and migrate them)."""

import json
import re

import mlflow

from models import plain_name

# The paper suite's levels on MNIST, as MLflow metric names: acc/<noise>/<level as Python prints a float>.
MNIST_LEVELS = ["0.0", "0.001", "0.01", "0.1", "0.2", "0.3", "0.4", "0.5"]
POISSON_LEVELS = ["0.2", "0.3", "0.4", "0.5", "1.0", "1.5", "2.0", "2.5"]
FINISHED_RUN_METRICS = sorted(
    [f"acc/gaussian/{v}" for v in MNIST_LEVELS]
    + [f"acc/speckle/{v}" for v in MNIST_LEVELS]
    + [f"acc/poisson/{v}" for v in POISSON_LEVELS]
    + ["curve/gaussian", "curve/poisson", "curve/speckle"]
    + ["level/gaussian", "level/poisson", "level/speckle"]
    + ["epoch", "epoch_seconds", "images_per_second", "lr", "test_acc", "train_acc", "train_loss"]
)
PLAIN_PARAMS = sorted(
    [
        "arch",
        "augment",
        "batch_size",
        "compile",
        "curve_levels/gaussian",
        "curve_levels/poisson",
        "curve_levels/speckle",
        "dataset",
        "dropout",
        "epochs",
        "eval_batch_size",
        "lr",
        "lr_decay",
        "max_test_images",
        "max_train_batches",
        "milestones",
        "model",
        "momentum",
        "nesterov",
        "normalize",
        "precision",
        "pushpull",
        "seed",
        "variant",
        "warmup_epochs",
        "weight_decay",
    ]
)
TAGS = [
    "git_commit",
    "health",
    "launch",
    "mlflow.runColor",
    "mlflow.runName",
    "model",
    "project_version",
    "ray_node_id",
    "sweep",
    "trial_key",
]
# What MLflow's UI reads: a run's colour (plain models orange, push-pull ones blue, twins in one shade) and
# the experiment's kind (Machine learning, not GenAI).
RUN_COLORS = {
    "A": "#a33b00",
    "B": "#d9541a",
    "C": "#f08a3c",
    "D": "#f7b877",
    "PA": "#1f4e9c",
    "PB": "#2f6fd0",
    "PC": "#5b95e6",
    "PD": "#93bdf2",
}
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
TRIAL_KEY = re.compile(r"mnist-P?[A-D]-s0-[0-9a-f]{10}")
RECORD_KEYS = ["artifact_root", "gpu_capability", "gpus", "launch", "sweep", "tracking_uri", "trial_keys"]


def finished_runs(storage) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lenet")
    assert experiment.tags == EXPERIMENT_TAGS
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 8 and {run.info.status for run in runs} == {"FINISHED"}
    return runs


def test_a_sweeps_runs_have_these_metric_param_and_tag_names(piped_smoke_sweep):
    storage, _, _ = piped_smoke_sweep
    for run in finished_runs(storage):
        pushpull = run.data.params["pushpull"] == "True"
        assert sorted(run.data.metrics) == FINISHED_RUN_METRICS
        assert sorted(run.data.params) == sorted(PLAIN_PARAMS + (["alpha", "h"] if pushpull else []))
        assert sorted(run.data.tags) == TAGS
        assert run.data.params["curve_levels/gaussian"] == ",".join(MNIST_LEVELS)
        assert run.data.params["curve_levels/poisson"] == ",".join(POISSON_LEVELS)
        assert run.data.metrics["level/gaussian"] == 0.5 and run.data.metrics["level/poisson"] == 2.5  # the last
        assert run.data.tags["mlflow.runColor"] == RUN_COLORS[run.data.params["model"]]
        assert TRIAL_KEY.fullmatch(run.data.tags["trial_key"]), run.data.tags["trial_key"]
        assert run.data.tags["sweep"] == "lenet" and run.data.params["dataset"] == "mnist"


def test_a_sweeps_storage_holds_its_record_trials_checkpoints_and_artifacts_at_these_paths(piped_smoke_sweep):
    storage, _, _ = piped_smoke_sweep
    record = json.loads((storage / "lenet.sweep.json").read_text())
    assert sorted(record) == RECORD_KEYS
    assert record["sweep"] == "lenet" and record["tracking_uri"] == "sqlite:///{storage}/mlflow.db"
    assert record["artifact_root"] == "file://{storage}/mlartifacts"
    assert len(record["trial_keys"]) == 8 and all(TRIAL_KEY.fullmatch(key) for key in record["trial_keys"])
    for key in record["trial_keys"]:
        trial = storage / "lenet" / key
        assert (trial / "result.json").is_file() and (trial / "params.json").is_file()
        checkpoints = sorted(p.name for p in trial.glob("checkpoint_*"))
        assert checkpoints == ["checkpoint_000000"]  # one epoch: one checkpoint
        assert sorted(p.name for p in (trial / checkpoints[0]).iterdir()) == ["reported.jsonl", "trial.pt"]
    for run in finished_runs(storage):
        artifacts = storage / "mlartifacts" / run.info.run_id / "artifacts"
        assert sorted(p.name for p in artifacts.iterdir()) == ["results.json"]
        results = json.loads((artifacts / "results.json").read_text())
        assert sorted(results) == ["clean_accuracy", "rows", "trial_key"]
        assert len(results["rows"]) == 24 and sorted(results["rows"][0]) == ["accuracy", "level", "noise"]
    assert not (storage / "lenet.lease.json").exists()  # the driver ended and let its lease go


def test_every_paper_run_is_orange_when_plain_and_blue_with_push_pull_in_its_twins_shade():
    from sweep.catalog import build_sweep
    from sweep.tracking import run_color

    plain, pushpull = ["#a33b00", "#d9541a", "#f08a3c", "#f7b877"], ["#1f4e9c", "#2f6fd0", "#5b95e6", "#93bdf2"]
    specs = build_sweep("paper_full")
    twins = {spec.model.name: spec for spec in specs if not spec.model.pushpull}
    for spec in specs:
        color = run_color(spec)
        assert color in (pushpull if spec.model.pushpull else plain), (spec.model.name, color)
        if spec.model.pushpull and plain_name(spec.model.name) in twins:
            shade = plain.index(run_color(twins[plain_name(spec.model.name)]))
            assert pushpull.index(color) == shade, spec.model.name
    assert {run_color(spec) for spec in build_sweep("lenet")} == set(RUN_COLORS.values())
