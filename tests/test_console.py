"""What a person sees of a sweep: the piped console, the summary, and the MLflow runs (curves by noise
level, params, names); and a store that can be moved."""

import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking._tracking_service.utils import _artifact_repos_cache as mlflow_artifact_repos_cache

from perturb import NOISES, noise_suite
from sweep.catalog import build_sweep
from sweep.cli import aggregate_command
from sweep.console import ConsoleProgress, next_commands, runs_view_url, summary_lines
from sweep.metrics import noise_curves, noise_metric, parse_noise_metric
from sweep.run import main
from sweep.tracking import TrialOutcome, log_suite_scores
from tests.stores import copy_store


@pytest.fixture(scope="module")
def piped_sweep(piped_smoke_sweep):
    """(storage, output lines) of the shared smoke sweep; the tests here only read its store."""
    storage, _, lines = piped_smoke_sweep
    return storage, lines


def client_of(storage: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")


def runs_of(storage: Path) -> list:
    client = client_of(storage)
    return client.search_runs([client.get_experiment_by_name("lenet").experiment_id])


def test_the_piped_output_of_8_trials_is_short_and_ends_with_the_summary_and_the_next_commands(piped_sweep):
    storage, lines = piped_sweep
    assert len(lines) < 120, "\n".join(lines)
    assert not any("\x1b[" in line for line in lines), "no terminal escapes in a file"
    assert not any("tensorboard" in line.lower() for line in lines)
    runs = runs_of(storage)
    experiment_id = runs[0].info.experiment_id
    tracking_uri = f"sqlite:///{storage / 'mlflow.db'}"
    expected_next = next_commands("lenet", str(storage), tracking_uri, experiment_id)
    assert lines[-len(expected_next) :] == expected_next
    assert expected_next == [
        "next:",
        f"  mlflow ui --backend-store-uri {tracking_uri}",
        f"  open http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning",
        "    (the runs; in their Chart view, search curve/: accuracy against noise level, step = level index)",
        f"  python -m sweep.aggregate --sweep lenet --storage {storage} --report",
    ]
    # The summary above them: one row per model, its numbers those of the runs.
    outcomes = [
        TrialOutcome(spec, "finished", run.data.metrics)
        for spec in build_sweep("lenet", profile="smoke")
        for run in runs
        if run.data.tags["trial_key"] == spec.key
    ]
    summary = summary_lines(outcomes)
    assert len(summary) == 9
    start = len(lines) - len(expected_next) - 1 - len(summary)
    assert lines[start - 1 : len(lines) - len(expected_next)] == ["", *summary, ""]


def test_the_piped_progress_has_a_line_per_trial_start_epoch_and_end(piped_sweep):
    _, lines = piped_sweep
    for spec in build_sweep("lenet", profile="smoke"):
        mine = [line for line in lines if f"] {spec.run_name} ({spec.model.name}, seed 0) " in line]
        assert [line.split(") ", 1)[1].split(":")[0] for line in mine] == ["started", "epoch 1/1", "finished"], mine


def test_summary_lines_give_clean_and_mean_noise_accuracy_per_model_over_seeds_and_how_trials_ended():
    specs = build_sweep("lenet", profile="smoke", seeds=2)
    a0, a1 = (next(s for s in specs if s.model.name == "A" and s.seed == seed) for seed in (0, 1))
    pa = next(s for s in specs if s.model.name == "PA")

    def scores(shift: float) -> dict:
        metrics = {"test_acc": 90.0 + shift}
        for p in noise_suite("mnist"):
            metrics[noise_metric(p.noise, p.level)] = {"gaussian": 80.0, "speckle": 70.0, "poisson": 60.0}[
                p.noise
            ] + shift
        return metrics

    outcomes = [
        TrialOutcome(a0, "finished", scores(0.0)),
        TrialOutcome(a1, "finished", scores(1.0)),
        TrialOutcome(pa, "diverged", {}, "loss is nan"),
    ]
    assert summary_lines(outcomes) == [
        "model                 trials  clean  gaussian (mean)  speckle (mean)  poisson (mean)  status",
        "mnist A               2       90.50  80.50            70.50           60.50           2 finished",
        "mnist PA h=2 alpha=1  1       -      -                -               -               1 diverged",
    ]


def test_on_a_terminal_the_progress_is_one_table_redrawn_in_place(capsys):
    specs = build_sweep("lenet", profile="smoke")[:2]
    trials = [
        SimpleNamespace(trial_id=f"t{i}", config={"spec": spec.to_dict()}, status="PENDING", last_result={})
        for i, spec in enumerate(specs)
    ]
    view = ConsoleProgress(interactive=True)
    trials[0].status = "RUNNING"
    view.on_trial_start(0, trials, trials[0])
    first = capsys.readouterr().out
    view.on_trial_result(0, trials, trials[0], {"epoch": 1, "train_loss": 1.5, "test_acc": 61.0})
    trials[0].last_result = {"epoch": 1, "health": "healthy"}
    view.on_trial_complete(0, trials, trials[0])
    last = capsys.readouterr().out
    assert first.splitlines() == [
        "trial                  model  seed  epoch  train loss  test acc %  status",
        f"{specs[0].run_name}  A      0     0/1    -           -           running",
        f"{specs[1].run_name}  B      0     0/1    -           -           pending",
    ]
    # Each redraw moves up over the 3 lines of the table and clears them first.
    assert last.count("\x1b[3F\x1b[J") == 1 + last.count("\n") // 3 - 1
    assert last.rsplit("\x1b[J", 1)[1].splitlines()[1].split() == [
        specs[0].run_name,
        "A",
        "0",
        "1/1",
        "1.5000",
        "61.00",
        "finished",
    ]


def test_a_resumed_sweep_works_out_its_console_afresh():
    """Tune pickles its callbacks with the experiment and Tuner.restore brings them back: a sweep started
    in a terminal and resumed with its output in a file (not a terminal, as under pytest) prints lines."""
    restored = pickle.loads(pickle.dumps(ConsoleProgress(interactive=True)))
    assert restored.interactive is False and restored.rows == {}


def test_runs_view_url_is_on_the_tracking_server_or_on_mlflow_ui():
    ml = "?workflowType=machine_learning"
    assert runs_view_url("http://tracker:5000/", "7") == f"http://tracker:5000/#/experiments/7/runs{ml}"
    assert runs_view_url("sqlite:////s/mlflow.db", "1") == f"http://127.0.0.1:5000/#/experiments/1/runs{ml}"


def test_every_run_holds_a_curve_per_noise_at_steps_0_to_7_equal_to_its_per_level_metrics(piped_sweep):
    storage, _ = piped_sweep
    client = client_of(storage)
    runs = runs_of(storage)
    assert len(runs) == 8
    for run in runs:
        for noise in NOISES:
            levels = sorted(
                level for n, level in (parse_noise_metric(m) or ("", 0) for m in run.data.metrics) if n == noise
            )
            assert len(levels) == 8
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"curve/{noise}"))
            assert history == [
                (step, run.data.metrics[noise_metric(noise, level)]) for step, level in enumerate(levels)
            ]
            assert run.data.params[f"curve_levels/{noise}"] == ",".join(repr(level) for level in levels)


def test_no_param_reads_none_and_push_pull_runs_are_named_with_h_and_alpha(piped_sweep):
    storage, _ = piped_sweep
    runs = runs_of(storage)
    assert all(value != "None" for run in runs for value in run.data.params.values())
    plain = [run for run in runs if run.data.params["pushpull"] == "False"]
    assert len(plain) == 4 and all("h" not in run.data.params and "alpha" not in run.data.params for run in plain)
    names = sorted(run.info.run_name for run in runs)
    specs = build_sweep("lenet", profile="smoke")
    assert names == sorted(spec.run_name for spec in specs)
    assert sorted(name.split("-s0-")[0] for name in names) == [
        "mnist-A",
        "mnist-B",
        "mnist-C",
        "mnist-D",
        "mnist-PA-h2-a1",
        "mnist-PB-h2-a1",
        "mnist-PC-h2-a1",
        "mnist-PD-h2-a1",
    ]


def test_log_suite_scores_adds_a_curve_per_noise_of_the_suite(piped_sweep, tmp_path):
    storage = tmp_path / "store"
    copy_store(piped_sweep[0], storage)
    client = client_of(storage)
    run = runs_of(storage)[0]
    scores = {p: 50.0 + p.level for p in noise_suite("mnist") if p.noise == "speckle"}
    assert log_suite_scores(client, run.info.run_id, "extra", 1, scores) == 8
    curve = noise_curves({noise_metric(p.noise, p.level, "extra"): a for p, a in scores.items()}, "extra")[0]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "curve/extra/speckle"))
    assert history == list(enumerate(curve.accuracies)) and curve.accuracies == tuple(sorted(curve.accuracies))
    assert log_suite_scores(client, run.info.run_id, "extra", 1, scores) == 0
    assert len(client.get_metric_history(run.info.run_id, "curve/extra/speckle")) == 8


def test_a_store_moved_elsewhere_keeps_its_artifacts_and_its_sweep_continues_there(piped_sweep, tmp_path, capsys):
    original, _ = piped_sweep
    copy = tmp_path / "elsewhere" / "store"
    shutil.copytree(original, copy)  # as a user moves it: its store still names the original's artifacts
    mlflow_artifact_repos_cache.clear()  # MLflow's, by run id: the copy has the original's run ids
    assert "{storage}" in (copy / "lenet.sweep.json").read_text()
    # --sync reads the record, reopens the store and finds everything delivered.
    data = original.parent / "data"  # beside the store, in the shared fixture
    assert main(["lenet", "--profile", "smoke", "--storage", str(copy), "--data-root", str(data), "--sync"]) == 0
    capsys.readouterr()
    client = client_of(copy)
    runs = runs_of(copy)
    assert len(runs) == 8
    for run in runs:
        assert run.info.artifact_uri.startswith((copy / "mlartifacts").as_uri() + "/")
        local = client.download_artifacts(run.info.run_id, "results.json", str(tmp_path))
        assert Path(local).read_text().startswith("{")
    assert client.get_experiment_by_name("lenet").artifact_location == (copy / "mlartifacts").as_uri()


def test_the_aggregate_command_names_the_tracking_store_unless_it_is_the_storages_own(tmp_path):
    own = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert next_commands("lenet", str(tmp_path), own, "1")[-1] == (
        f"  python -m sweep.aggregate --sweep lenet --storage {tmp_path} --report"
    )
    assert next_commands("lenet", "s3://bucket/sweeps", "http://mlflow:5000", "1")[-1] == (
        "  python -m sweep.aggregate --sweep lenet --storage s3://bucket/sweeps --tracking-uri http://mlflow:5000 --report"
    )
    assert aggregate_command("lenet", str(tmp_path), "sqlite:////elsewhere/mlflow.db", "shot") == (
        f"python -m sweep.aggregate --sweep lenet --suite shot --storage {tmp_path} "
        "--tracking-uri sqlite:////elsewhere/mlflow.db --report"
    )
