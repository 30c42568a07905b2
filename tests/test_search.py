"""A study's search of push-pull's (h, alpha) (sweep.search): the searcher that hands out the plain twins first
and each point once per seed, ASHA that lets the twins train through, a searched trial's spec, and real
searches under Ray Tune (one to its end, one interrupted and resumed) on tiny MNIST (tests/datasets.py)."""

import math
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import mlflow
import pandas as pd
import pytest
import ray.cloudpickle as cloudpickle
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from sweep.aggregate import main as aggregate_main
from sweep.catalog import build_sweep
from sweep.metrics import noise_metric
from sweep.run import main
from sweep.search import SEARCH_STEP, StudySearcher, TwinsTrainThrough, result_metric, search_setup, searched_specs
from sweep.specs import TrialSpec
from sweep.storage import SweepStorage
from sweep.study import Search, load_study
from tests.datasets import write_mnist
from tests.processes import driver_running, wait_for

PROJECT = Path(__file__).resolve().parents[1]
BASE = build_sweep("lenet", profile="smoke")[4]  # PA: LeNet A with push-pull, the paper's h = 2 and alpha = 1
assert BASE.model.pushpull and BASE.model.name == "PA"
METRIC = result_metric("noise/gaussian")
CLEAN = result_metric("clean")


class FakeSearcher(Searcher):
    """An inner searcher that suggests ``points`` ((h, alpha) each) in order, then FINISHED, and records what
    it was asked and told."""

    def __init__(self, points, metric=METRIC, mode="max"):
        super().__init__(metric=metric, mode=mode)
        self.points = list(points)
        self.asked: list[str] = []
        self.told: list[tuple[str, dict | None, bool]] = []

    def suggest(self, trial_id):
        self.asked.append(trial_id)
        if not self.points:
            return Searcher.FINISHED
        h, alpha = self.points.pop(0)
        return {"searched": {"h": h, "alpha": alpha}}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append((trial_id, result, error))


def twin_config(seed: int) -> dict:
    return {"spec": build_sweep("lenet", profile="smoke", seeds=seed + 1)[8 * seed].to_dict(), "searched": None}


TWINS = [twin_config(0), twin_config(1)]


def searched(h: float, alpha: float, seed: int) -> dict:
    return {"searched": {"h": h, "alpha": alpha, "seed": seed}}


# --- StudySearcher ----------------------------------------------------------------------------------


def test_the_twins_come_first_unchanged_then_each_point_once_per_seed():
    inner = FakeSearcher([(1.5, 0.5), (2.25, 1.75)])
    searcher = StudySearcher(inner, TWINS, seeds=3)
    suggested = [searcher.suggest(f"t{i}") for i in range(8)]
    assert suggested[:2] == TWINS
    assert suggested[2:] == [
        searched(1.5, 0.5, 0),
        searched(1.5, 0.5, 1),
        searched(1.5, 0.5, 2),
        searched(2.25, 1.75, 0),
        searched(2.25, 1.75, 1),
        searched(2.25, 1.75, 2),
    ]
    assert inner.asked == ["point-0", "point-1"]  # asked once per point, not once per trial
    assert searcher.suggest("t8") == Searcher.FINISHED
    assert suggested[2]["searched"] is not suggested[3]["searched"]  # each trial its own config


def test_an_inner_searcher_with_nothing_to_suggest_yet_makes_no_point():
    inner = FakeSearcher([(1.5, 0.5)])
    inner.suggest = lambda trial_id: None  # e.g. its own concurrency limit
    searcher = StudySearcher(inner, [], seeds=2)
    assert searcher.suggest("t0") is None
    assert searcher.points == 0 and searcher.open_point is None and searcher.point_of == {}


def test_a_point_is_told_once_after_all_its_seeds_ended_with_the_mean_over_seeds():
    inner = FakeSearcher([(1.5, 0.5), (2.25, 1.75)])
    searcher = StudySearcher(inner, TWINS[:1], seeds=3)
    for i in range(7):
        searcher.suggest(f"t{i}")  # t0 the twin; t1-t3 point-0; t4-t6 point-1
    searcher.on_trial_complete("t0", {METRIC: 99.0})
    searcher.on_trial_complete("t3", {METRIC: 60.0, "epoch": 2})
    searcher.on_trial_complete("t4", {METRIC: 30.0})
    searcher.on_trial_complete("t1", {METRIC: 10.0})
    assert inner.told == []  # the twin is no point; point-0 has a seed running
    searcher.on_trial_complete("t2", {METRIC: 20.0})
    assert inner.told == [("point-0", {METRIC: 30.0}, False)]
    searcher.on_trial_complete("t6", {METRIC: 40.0})
    searcher.on_trial_complete("t5", {METRIC: 20.0})
    assert inner.told == [("point-0", {METRIC: 30.0}, False), ("point-1", {METRIC: 30.0}, False)]


def test_an_errored_seed_is_left_out_of_the_mean_and_a_point_without_a_result_is_an_error():
    inner = FakeSearcher([(1.5, 0.5), (2.0, 1.0), (3.0, 2.0)])
    searcher = StudySearcher(inner, [], seeds=3)
    for i in range(9):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {METRIC: 10.0})
    searcher.on_trial_complete("t1", {METRIC: 95.0}, error=True)  # its last result before the error
    searcher.on_trial_complete("t2", {METRIC: 30.0})
    # A seed that errored, one that diverged (its last report has no metric), one that reported nothing.
    searcher.on_trial_complete("t3", {METRIC: 50.0}, error=True)
    searcher.on_trial_complete("t4", {"health": "diverged", "epoch": 1})
    searcher.on_trial_complete("t5", None)
    # One seed with the metric is enough.
    searcher.on_trial_complete("t6", None, error=True)
    searcher.on_trial_complete("t7", {METRIC: None})
    searcher.on_trial_complete("t8", {METRIC: 42.5})
    assert inner.told == [
        ("point-0", {METRIC: 20.0}, False),
        ("point-1", None, True),
        ("point-2", {METRIC: 42.5}, False),
    ]


def test_the_twins_completions_never_reach_the_inner_searcher():
    inner = FakeSearcher([(1.5, 0.5)])
    searcher = StudySearcher(inner, TWINS, seeds=1)
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {METRIC: 50.0})
    searcher.on_trial_complete("t1", None, error=True)
    searcher.on_trial_result("t0", {METRIC: 50.0})
    assert inner.told == []
    assert searcher.twin_ids == {"t0", "t1"}
    searcher.on_trial_complete("t2", {METRIC: 70.0})
    assert inner.told == [("point-0", {METRIC: 70.0}, False)]


def test_two_metrics_are_each_the_mean_over_seeds():
    inner = FakeSearcher([(1.5, 0.5)], metric=[METRIC, CLEAN], mode=["max", "max"])
    searcher = StudySearcher(inner, [], seeds=2)
    assert (searcher.metric, searcher.mode, searcher.metrics) == (METRIC, "max", [METRIC, CLEAN])
    searcher.suggest("t0")
    searcher.suggest("t1")
    searcher.on_trial_complete("t0", {METRIC: 40.0, CLEAN: 99.0})
    searcher.on_trial_complete("t1", {METRIC: 50.0, CLEAN: 97.0})
    assert inner.told == [("point-0", {METRIC: 45.0, CLEAN: 98.0}, False)]


def test_a_point_missing_one_of_two_metrics_on_every_seed_is_an_error():
    inner = FakeSearcher([(1.5, 0.5)], metric=[METRIC, CLEAN], mode=["max", "max"])
    searcher = StudySearcher(inner, [], seeds=2)
    searcher.suggest("t0")
    searcher.suggest("t1")
    searcher.on_trial_complete("t0", {METRIC: 40.0})
    searcher.on_trial_complete("t1", {METRIC: 50.0})
    assert inner.told == [("point-0", None, True)]


def test_a_restored_searcher_goes_on_with_the_open_points_next_seed():
    inner = FakeSearcher([(1.5, 0.5), (2.25, 1.75)])
    searcher = StudySearcher(inner, TWINS, seeds=3)
    for i in range(4):
        searcher.suggest(f"t{i}")  # both twins, then point-0's seeds 0 and 1
    searcher.on_trial_complete("t2", {METRIC: 10.0})
    state = searcher.get_state()
    assert "searcher" not in state  # Tune saves the inner searcher on its own
    restored_state = pickle.loads(cloudpickle.dumps(state))  # as Tune keeps it (search_gen_state-*.json)

    # A new driver: the searcher made afresh (twins and all), then given the saved state.
    fresh_inner = FakeSearcher([(2.25, 1.75)])  # the inner searcher restored on its own: point-0 was drawn
    fresh = StudySearcher(fresh_inner, TWINS, seeds=3)
    fresh.set_state(restored_state)
    assert fresh.searcher is fresh_inner
    assert fresh.suggest("t4") == searched(1.5, 0.5, 2)  # no twin again, no new point
    assert fresh_inner.asked == []
    assert fresh.suggest("t5") == searched(2.25, 1.75, 0)
    assert fresh_inner.asked == ["point-1"]  # numbered on from the saved count
    fresh.on_trial_complete("t3", {METRIC: 20.0})
    fresh.on_trial_complete("t0", {METRIC: 99.0})  # a twin that ended after the restart
    assert fresh_inner.told == []
    fresh.on_trial_complete("t4", {METRIC: 60.0})
    assert fresh_inner.told == [("point-0", {METRIC: 30.0}, False)]


def test_search_setup_makes_optuna_draw_on_the_grid_behind_the_twins_and_a_concurrency_limit():
    search = Search("optuna", 3, ("noise/gaussian",), ("max",), "asha", {"h": (1.0, 3.0), "alpha": (0.0, 2.0)})
    twins = [TrialSpec.from_config(twin) for twin in TWINS]
    space, searcher, scheduler, trials = search_setup(search, BASE, twins, seeds=2, slots=3)
    assert trials == 2 + 3 * 2
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 3
    assert isinstance(scheduler, TwinsTrainThrough)
    assert (scheduler._metric, scheduler._mode, scheduler._max_t) == (METRIC, "max", BASE.recipe.epochs)
    assert set(space["searched"]) == {"h", "alpha"}
    assert searcher.set_search_properties(None, None, {**space, "spec": BASE.to_dict()})
    assert [searcher.suggest(f"t{i}") for i in range(2)] == TWINS
    first = searcher.suggest("t2")
    assert searcher.suggest("t3") is None  # three live trials: the limit
    searcher.on_trial_complete("t0", {METRIC: 50.0})
    second = searcher.suggest("t3")
    assert second["searched"] == {**first["searched"], "seed": 1}
    h, alpha = first["searched"]["h"], first["searched"]["alpha"]
    assert 1.0 <= h <= 3.0 and 0.0 <= alpha <= 2.0
    assert on_grid(h) and on_grid(alpha)

    no_asha = search_setup(Search("optuna", 3, ("noise/gaussian",), ("max",), "none", search.ranges), BASE, twins, 1, 0)
    assert no_asha[2] is None and no_asha[3] == 2 + 3 and no_asha[1].max_concurrent == 1


def test_optuna_is_told_each_points_mean_over_seeds_and_a_point_whose_seeds_all_failed_as_failed():
    import optuna

    search = Search("optuna", 3, ("noise/gaussian",), ("max",), "none", {"h": (1.0, 3.0), "alpha": (0.0, 2.0)})
    twins = [TrialSpec.from_config(TWINS[0])]
    space, limiter, _, _ = search_setup(search, BASE, twins, seeds=2, slots=8)
    limiter.set_search_properties(None, None, {**space, "spec": BASE.to_dict()})
    suggested = [limiter.suggest(f"t{i}") for i in range(7)]
    assert suggested[0] == TWINS[0] and suggested[-1] is not None
    for trial_id, result, error in [
        ("t0", {METRIC: 99.0}, False),  # the twin
        ("t1", {METRIC: 40.0}, False),
        ("t2", {METRIC: 50.0}, False),
        ("t3", None, True),
        ("t4", {"health": "diverged", "epoch": 1}, False),
        ("t6", {METRIC: 70.0}, False),
        ("t5", {METRIC: 60.0}, False),
    ]:
        limiter.on_trial_complete(trial_id, result, error=error)
    study = limiter.searcher.searcher._ot_study
    states = [(trial.state, trial.value) for trial in study.trials]
    assert states == [
        (optuna.trial.TrialState.COMPLETE, 45.0),
        (optuna.trial.TrialState.FAIL, None),
        (optuna.trial.TrialState.COMPLETE, 65.0),
    ]
    assert [trial.params for trial in study.trials] == [
        {
            "searched/alpha": suggested[2 * i + 1]["searched"]["alpha"],
            "searched/h": suggested[2 * i + 1]["searched"]["h"],
        }
        for i in range(3)
    ]


def on_grid(value: float) -> bool:
    return math.isclose(value / SEARCH_STEP, round(value / SEARCH_STEP), abs_tol=1e-6)


# --- TwinsTrainThrough ------------------------------------------------------------------------------


def fake_trial(trial_id: str, config: dict) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config=config)


def asha() -> TwinsTrainThrough:
    return TwinsTrainThrough(time_attr="epoch", metric=METRIC, mode="max", max_t=9, grace_period=1, reduction_factor=3)


def test_the_twins_train_through_asha_and_never_enter_its_bookkeeping():
    scheduler = asha()
    twin = fake_trial("twin", TWINS[0])
    scheduler.on_trial_add(None, twin)
    assert scheduler._trial_info == {}
    for epoch, value in ((1, 0.0), (3, 0.0), (9, 0.0)):  # worse than anything, and at max_t
        assert scheduler.on_trial_result(None, twin, {"epoch": epoch, METRIC: value}) == TrialScheduler.CONTINUE
    scheduler.on_trial_complete(None, twin, {"epoch": 9, METRIC: 0.0})  # no KeyError
    scheduler.on_trial_remove(None, twin)
    assert scheduler._trial_info == {} and scheduler._num_stopped == 0


def test_searched_trials_go_through_asha():
    scheduler = asha()
    good, bad, late = (fake_trial(name, searched(1.5, 0.5, 0)) for name in ("good", "bad", "late"))
    for trial in (good, bad, late):
        scheduler.on_trial_add(None, trial)
    assert set(scheduler._trial_info) == {"good", "bad", "late"}
    assert scheduler.on_trial_result(None, good, {"epoch": 1, METRIC: 50.0}) == TrialScheduler.CONTINUE
    # At the first rung (epoch 1), below the cutoff of the results there: stopped early.
    assert scheduler.on_trial_result(None, bad, {"epoch": 1, METRIC: 10.0}) == TrialScheduler.STOP
    # A twin's worse result there counts for nothing: the late trial is still compared with "good" (and "bad").
    scheduler.on_trial_result(None, fake_trial("twin", TWINS[0]), {"epoch": 1, METRIC: 0.0})
    assert scheduler.on_trial_result(None, late, {"epoch": 1, METRIC: 60.0}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, good, {"epoch": 9, METRIC: 50.0}) == TrialScheduler.STOP  # max_t
    scheduler.on_trial_complete(None, good, {"epoch": 9, METRIC: 50.0})
    scheduler.on_trial_remove(None, bad)
    assert set(scheduler._trial_info) == {"late"}
    assert scheduler._num_stopped == 2


# --- a searched trial's spec ------------------------------------------------------------------------


def test_a_searched_config_makes_its_spec_rounded_as_drawn_with_its_seed():
    def spec(h, alpha, seed):
        return TrialSpec.from_config({"spec": BASE.to_dict(), "searched": {"h": h, "alpha": alpha, "seed": seed}})

    drawn = spec(1.7300000000000002, 0.5, 1)
    assert (drawn.model.h, drawn.model.alpha, drawn.seed) == (1.73, 0.5, 1)
    assert drawn.model.name == "PA" and drawn.dataset == BASE.dataset and drawn.recipe == BASE.recipe
    assert drawn == spec(1.73, 0.5, 1) and drawn.key == spec(1.73, 0.5, 1).key
    assert drawn.run_name.startswith("mnist-PA-h1.73-a0.5-s1-")
    assert drawn.run_name.endswith(drawn.key.rsplit("-", 1)[1])
    keys = {spec(*point).key for point in [(1.73, 0.5, 1), (1.73, 0.5, 0), (1.74, 0.5, 1), (1.73, 0.51, 1)]}
    assert len(keys) == 4
    assert BASE.key not in keys
    assert TrialSpec.from_config({"spec": BASE.to_dict(), "searched": None}) == BASE  # a twin's config


# --- real searches ----------------------------------------------------------------------------------

STUDY = """
description = "h and alpha of LeNet PA, searched"
datasets = ["mnist"]
seeds = 1

[[models]]
arch = "lenet"
variant = "A"
pushpull = [false, true]

[search]
samples = {samples}
metric = "noise/gaussian"
mode = "max"
scheduler = "{scheduler}"
h = [1.0, 3.0]
alpha = [0.0, 2.0]
"""
EPOCHS = 2


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=3200, n_test=100)
    return root


def write_study(folder: Path, samples: int, scheduler: str = "asha") -> Path:
    path = folder / "pa_search.toml"
    path.write_text(STUDY.format(samples=samples, scheduler=scheduler))
    return path


def search_args(study: Path, storage: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        str(study),
        "--profile",
        "smoke",
        "--set",
        f"epochs={EPOCHS}",
        "--storage",
        str(storage),
        "--data-root",
        str(data_root),
        *extra,
    ]


def mlflow_runs(storage: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pa_search")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def assert_search_runs(storage: Path, samples: int) -> list:
    """The runs of a search of ``samples`` points on one seed: the twin and one per point, each trial once,
    all FINISHED, each epoch logged once."""
    runs = mlflow_runs(storage)
    keys = [run.data.tags["trial_key"] for run in runs]
    assert len(runs) == 1 + samples and len(set(keys)) == len(keys), keys
    assert {run.info.status for run in runs} == {"FINISHED"}
    twins = [run for run in runs if run.data.params["model"] == "A"]
    points = [run for run in runs if run.data.params["model"] == "PA"]
    assert len(twins) == 1 and len(points) == samples
    assert "h" not in twins[0].data.params
    drawn = {(float(run.data.params["h"]), float(run.data.params["alpha"])) for run in points}
    assert len(drawn) == samples
    for h, alpha in drawn:
        assert 1.0 <= h <= 3.0 and 0.0 <= alpha <= 2.0 and on_grid(h) and on_grid(alpha), (h, alpha)
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    epochs = {}
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == list(range(1, len(steps) + 1)), (run.info.run_name, steps)  # once each, none lost
        epochs[run.data.tags["trial_key"]] = len(steps)
    assert epochs[twins[0].data.tags["trial_key"]] == EPOCHS  # ASHA leaves the twin alone
    assert max(epochs[run.data.tags["trial_key"]] for run in points) == EPOCHS  # the first at a rung goes on
    return runs


def stale_results(runs: list) -> list[str]:
    """The runs whose results artifact (the rows the trial ended with) disagrees with the run's own latest
    noise scores: scores of an earlier epoch."""
    stale = []
    for run in runs:
        rows = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/results.json")["rows"]
        if not rows or any(run.data.metrics[noise_metric(r["noise"], r["level"])] != r["accuracy"] for r in rows):
            stale.append(run.info.run_name)
    return stale


def test_a_search_study_trains_the_twin_and_each_point_and_the_aggregator_ranks_them(
    ray_cluster, tmp_path, mnist_root, capsys
):
    study = write_study(tmp_path, samples=3)
    storage = tmp_path / "store"
    assert main(search_args(study, storage, mnist_root)) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("sweep pa_search: ")][0].startswith("sweep pa_search: 4 trials (")
    runs = assert_search_runs(storage, samples=3)
    assert stale_results(runs) == []
    twin = next(run for run in runs if run.data.params["model"] == "A")
    assert twin.data.tags["trial_key"] == load_study(str(study)).trials("smoke", overrides=[(None, "epochs", 2)])[0].key
    points = [run for run in runs if run.data.params["model"] == "PA"]
    specs = searched_specs(SweepStorage(str(storage)), "pa_search")
    assert sorted(spec.key for spec in specs) == sorted(run.data.tags["trial_key"] for run in points)
    # The console counts as stopped early the points ASHA stopped: those with fewer epochs in MLflow.
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    stopped = sum(len(client.get_metric_history(run.info.run_id, "train_loss")) < EPOCHS for run in points)
    early = f", {stopped} stopped early by the search's scheduler" if stopped else ""
    assert f"{4 - stopped} of 4 trials finished{early}" in out

    out_dir = tmp_path / "tables"
    assert aggregate_main(["--sweep", str(study), "--storage", str(storage), "--report", "--out", str(out_dir)]) == 0
    table = pd.read_parquet(out_dir / "search_points.parquet")
    assert len(table) == 3 and int(table["best"].sum()) == 1
    assert set(table["model"]) == {"PA"} and set(table["seeds"]) == {1}
    assert set(zip(table["h"], table["alpha"])) == {
        (float(run.data.params["h"]), float(run.data.params["alpha"])) for run in points
    }
    assert int(table.loc[table["best"], "epochs"].iloc[0]) == EPOCHS  # a point ASHA stopped is never the best
    assert (out_dir / "search.png").stat().st_size > 0


# --- interrupted and resumed ------------------------------------------------------------------------

ENDED, HELD = ".test-a-point-ended", ".test-a-point-held"  # beside the sweep in its storage


def a_point_held_in_training(config, datasets):
    """sweep.trainable.train_trial, but the first attempt of the first searched trial that reports its first
    epoch once another searched trial trained to its end (the file ENDED in the storage) stays in its second
    epoch, its first reported and checkpointed, until its worker is killed (10 minutes at most); the file HELD
    says it is held, and that no other will be."""
    from sweep import trainable

    if not config.get("searched") or trainable.tune.get_checkpoint() is not None:
        return trainable.train_trial(config, datasets)
    storage = Path(trainable.tune.get_context().get_storage().storage_fs_path)
    report = trainable.tune.report

    def report_or_hold(metrics, **kwargs):
        report(metrics, **kwargs)
        if metrics.get("epoch") == EPOCHS:
            (storage / ENDED).touch()
        elif metrics.get("epoch") == 1 and (storage / ENDED).exists() and not (storage / HELD).exists():
            (storage / HELD).touch()
            time.sleep(600)  # the driver stops long before: its trials' workers go with it

    with mock.patch.object(trainable.tune, "report", report_or_hold):
        return trainable.train_trial(config, datasets)


# `python -m sweep.run` whose trials run a_point_held_in_training.
HOLDING_DRIVER = driver_running("tests.test_search:a_point_held_in_training")


def searched_folders(sweep: Path) -> list[Path]:
    """The folders of the searched trials Tune made in sweep folder ``sweep``."""
    return [
        params.parent for params in sorted(sweep.glob("*/params.json")) if '"searched": null' not in params.read_text()
    ]


def search_state(sweep: Path) -> dict:
    """The search's state Tune saved last (the wrappers'), with the number of points Optuna was asked for (its
    own state is in a file of its own)."""
    with open(max(sweep.glob("search_gen_state-*.json")), "rb") as file:
        state = cloudpickle.load(file)
    with open(max(sweep.glob("searcher-state-*.pkl")), "rb") as file:
        optuna = pickle.load(file)
    return {**state, "optuna_trials": len(optuna["_ot_study"].trials)}


def test_an_interrupted_search_resumes_without_losing_or_repeating_a_trial_or_a_point(
    ray_cluster, tmp_path, mnist_root, monkeypatch
):
    # One trial at a time: the twin, then the points in turn, the second held in training (not by a time it
    # takes) when the driver is stopped. Without ASHA, which could stop the held trial and go on.
    samples = 4
    study = write_study(tmp_path, samples=samples, scheduler="none")
    storage = tmp_path / "store"
    sweep = storage / "pa_search"
    args = search_args(study, storage, mnist_root, "--max-concurrent", "1")
    output = tmp_path / "driver.txt"
    with open(output, "w") as sink:
        driver = subprocess.Popen(
            [sys.executable, "-c", HOLDING_DRIVER, *args, "--address", ray_cluster],
            cwd=PROJECT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:

        def held() -> bool:
            assert driver.poll() is None, f"the search ended before a point was held:\n{output.read_text()[-3000:]}"
            return (storage / HELD).exists()

        wait_for(held, 120, "a searched trial held in training after one trained to its end")
        driver.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
        stopped = driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    print(f"interrupted driver: exit {stopped}\n{output.read_text()[-3000:]}")  # shown when the test fails
    interrupted = search_state(sweep)
    assert interrupted["name:StudySearcher"]["points"] == 2  # the first point ended, the second held
    finished_at_interrupt = sorted(run.info.run_name for run in mlflow_runs(storage) if run.info.status == "FINISHED")

    # Tune resumes a sweep with the trainable it began with; no trial is held again.
    monkeypatch.setattr("sweep.trainable.train_trial", a_point_held_in_training)
    assert main([*args, "--resume"]) == 0
    runs = assert_search_runs(storage, samples)
    assert len(searched_folders(sweep)) == samples
    state = search_state(sweep)
    assert state["name:StudySearcher"]["points"] == samples  # no point drawn twice, none more
    assert state["optuna_trials"] == samples
    # Without ASHA every trial trained every epoch, the one held too (on from its checkpoint of epoch 1).
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]

    # Every epoch of a search's trial carries noise scores: the replay at the end of the interrupted launch
    # must not take the held trial's epoch-1 scores for its end (its run stays open, and ends with epoch 2's).
    assert len(finished_at_interrupt) == 2, finished_at_interrupt  # the twin and the first point
    assert stale_results(runs) == []
