"""Real Ray Tune sweeps (smoke profile, tiny synthetic data sets in torchvision's formats) and the CLI."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.fs
import pytest
import torch

from sweep.aggregate import main as aggregate_main
from sweep.catalog import build_sweep
from sweep.checkpoints import CHECKPOINT_FILE, checkpoint_names
from sweep.metrics import EPOCH_METRICS, noise_metric, parse_noise_metric
from sweep.run import main
from tests.datasets import cifar_checksums_disabled, write_cifar, write_mnist
from tests.processes import (
    closed_port,
    driver_running,
    freeze_if_training,
    trial_worker,
    trials_held_in_training,
    wait_for,
)

PROJECT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.run", *args], cwd=PROJECT, capture_output=True, text=True, timeout=timeout
    )


def runs_of(storage: Path, sweep: str) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(sweep)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def smoke_args(storage: Path, data_root: Path, *extra: str, sweep: str = "lenet") -> list[str]:
    """The command line of a smoke-profile sweep: `SWEEP --profile smoke --storage S --data-root D EXTRA...`."""
    return [sweep, "--profile", "smoke", "--storage", str(storage), "--data-root", str(data_root), *extra]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=3200, n_test=100)
    return root


# --- bad input: one line, exit 2, nothing started -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["nope"],
            "sweep.run: error: unknown sweep 'nope': expected one of lenet, wrn_width, wrn_depth, cifar100, sensitivity, paper_full",
        ),
        (["lenet", "--set", "lrr=0.1"], "sweep.run: error: unknown --set key 'lrr': expected one of epochs, lr,"),
        (["lenet", "--set", "lr=fast"], "sweep.run: error: invalid value in --set lr=fast: lr takes a number"),
        (["lenet", "--set", "lr=-1"], "sweep.run: error: invalid --set for A: lr must be a number > 0, got -1.0"),
        (
            ["lenet", "--set", "epochs=0"],
            "sweep.run: error: invalid --set for A: epochs must be an integer >= 1, got 0",
        ),
        (["lenet", "--seeds", "0"], "sweep.run: error: --seeds must be an integer >= 1, got 0"),
        (["lenet", "--profile", "fast"], "sweep.run: error: argument --profile: invalid choice: 'fast'"),
        (
            [],
            "sweep.run: error: name a study: lenet, wrn_width, wrn_depth, cifar100, sensitivity, paper_full or a study file",
        ),
    ],
)
def test_bad_input_stops_with_one_line_and_exit_2_before_ray_starts(tmp_path, args, message):
    result = run_cli(*args, "--storage", str(tmp_path / "store"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert not (tmp_path / "store").exists()


def test_missing_data_stops_with_what_to_put_where(tmp_path):
    result = run_cli(*smoke_args(tmp_path / "store", tmp_path / "empty"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("sweep.run")]
    assert lines == [result.stderr.strip().splitlines()[-1]]
    assert f"the data root {tmp_path / 'empty'} does not exist" in lines[0]  # a typo: no download tried
    assert f"{tmp_path / 'empty'}/MNIST/raw" in lines[0]
    assert not (tmp_path / "store" / "lenet").exists()


def test_unreachable_tracking_server_stops_early(tmp_path, mnist_root):
    with closed_port() as port:
        uri = f"http://127.0.0.1:{port}"
        result = run_cli("lenet", "--storage", str(tmp_path), "--data-root", str(mnist_root), "--tracking-uri", uri)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"sweep.run: error: cannot reach the MLflow tracking server at {uri}")


def test_an_unreachable_ray_cluster_stops_with_one_line_and_records_no_sweep(tmp_path, mnist_root):
    with closed_port() as port:
        address = f"127.0.0.1:{port}"
        result = run_cli("lenet", "--storage", str(tmp_path), "--data-root", str(mnist_root), "--address", address)
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"sweep.run: error: cannot reach the Ray cluster at {address}: Connection refused"
    )
    assert not (tmp_path / "lenet.sweep.json").exists() and not (tmp_path / "lenet").exists()


@pytest.mark.parametrize(("seeds", "count"), [("1", 32), ("2", 64)])
def test_dry_run_lists_the_distinct_trials_of_paper_full(seeds, count, tmp_path, capsys):
    # A dry run loads every data set the trials need (in-process: the synthetic CIFARs fail the md5 sums).
    write_mnist(tmp_path, n_train=20, n_test=10)
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=10)
    write_cifar(tmp_path, "cifar100", n_train=10, n_test=10)
    with cifar_checksums_disabled():
        code = main(
            [
                "paper_full",
                "--dry-run",
                "--seeds",
                seeds,
                "--storage",
                str(tmp_path / "store"),
                "--data-root",
                str(tmp_path),
            ]
        )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3] == f"{count} trials"  # then where the plan comes from and the precision of the CPU trials
    keys = [line.split()[0] for line in lines[1:-3]]
    assert len(keys) == len(set(keys)) == count
    assert keys == [spec.key for spec in build_sweep("paper_full", seeds=int(seeds))]


def test_list_prints_every_sweep_with_its_trial_count():
    result = run_cli("--list")
    counts = {line.split()[0]: int(line.split()[1]) for line in result.stdout.strip().splitlines()}
    assert counts == {"lenet": 8, "wrn_width": 8, "wrn_depth": 8, "cifar100": 2, "sensitivity": 10, "paper_full": 32}


# --- real sweeps ----------------------------------------------------------------------------------


def assert_one_finished_run_per_trial(storage: Path, sweep: str, specs, noise_levels: int) -> list:
    runs = runs_of(storage, sweep)
    keys = sorted(run.data.tags["trial_key"] for run in runs)
    assert keys == sorted(spec.key for spec in specs)
    for run in runs:
        assert run.info.status == "FINISHED"
        noise = [name for name in run.data.metrics if parse_noise_metric(name)]
        assert len(noise) == noise_levels, run.data.tags["trial_key"]
        assert set(EPOCH_METRICS) <= set(run.data.metrics)
        rows = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/results.json")["rows"]
        assert len(rows) == noise_levels
        assert all(run.data.metrics[noise_metric(r["noise"], r["level"])] == r["accuracy"] for r in rows)
        assert run.data.tags["sweep"] == sweep and run.data.params["dataset"] == specs[0].dataset
    return runs


def test_lenet_smoke_sweep_with_4_concurrent_trials_loses_no_run(ray_cluster, tmp_path, mnist_root):
    epochs = 6
    # The four slots (4 Ray CPUs) used at once, by a condition, not by how long trials take here: each trial
    # is caught in training and held there (its worker stopped) until a fourth is; then all four go on.
    with trials_held_in_training(tmp_path / "lenet", epochs, trials=8, count=4) as held:
        code = main(smoke_args(tmp_path, mnist_root, "--max-concurrent", "4", "--set", f"epochs={epochs}"))
    assert code == 0
    assert len(held) == 4, f"only {sorted(held)} were caught in training at once"
    specs = build_sweep("lenet", profile="smoke", overrides=[(None, "epochs", epochs)])
    runs = assert_one_finished_run_per_trial(tmp_path, "lenet", specs, noise_levels=24)
    assert {run.data.params["model"] for run in runs} == {"A", "B", "C", "D", "PA", "PB", "PC", "PD"}

    again = main(smoke_args(tmp_path, mnist_root, "--set", f"epochs={epochs}"))
    assert again == 2  # an existing sweep is continued with --resume only
    assert len(runs_of(tmp_path, "lenet")) == 8

    # The aggregator reads what the sweep wrote.
    assert aggregate_main(["--storage", str(tmp_path), "--out", str(tmp_path / "tables")]) == 0
    results = pd.read_parquet(tmp_path / "tables" / "results.parquet")
    assert len(results) == 8 * (1 + 22) and set(results["epochs_trained"]) == {epochs}  # clean once, 22 noisy settings
    table = pd.read_parquet(tmp_path / "tables" / "supp_table1.parquet")
    assert list(table["model"]) == ["A", "PA", "B", "PB", "C", "PC", "D", "PD"]
    assert table.filter(like=" seeds").eq(1).all().all()
    clean = results[results["noise"] == "clean"].set_index("model")["accuracy"]
    assert (table.set_index("model")["clean 0"] == clean.reindex(table["model"])).all()


def test_cifar100_smoke_sweep_trains_wrn_28_10_twins(ray_cluster, tmp_path):
    data = tmp_path / "data"
    write_cifar(data, "cifar100", n_train=64, n_test=32)
    with cifar_checksums_disabled():
        code = main(smoke_args(tmp_path, data, "--set", "max_test_images=8", sweep="cifar100"))
    assert code == 0
    runs = assert_one_finished_run_per_trial(
        tmp_path, "cifar100", build_sweep("cifar100", profile="smoke", overrides=[(None, "max_test_images", 8)]), 22
    )
    assert {run.data.params["model"] for run in runs} == {"WRN-28-10", "WRN-28-10-PP"}
    # A plain model has no h param at all (no "None"); its push-pull twin the paper's h = 2.
    assert {run.data.params["model"]: run.data.params.get("h") for run in runs} == {
        "WRN-28-10": None,
        "WRN-28-10-PP": "2.0",
    }


def finished_runs(storage: Path) -> int:
    database = storage / "mlflow.db"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=1) as connection:
            return connection.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def test_interrupted_sweep_resumes_to_exactly_one_run_per_trial(ray_cluster, tmp_path, mnist_root):
    # --overhead-budget 1: every epoch evaluates, so that every epoch's test_acc can be checked below.
    args = smoke_args(tmp_path, mnist_root, "--max-concurrent", "1", "--set", "epochs=3", "--overhead-budget", "1")
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", *args, "--address", ray_cluster],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while finished_runs(tmp_path) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    interrupted_at = finished_runs(tmp_path)
    assert 2 <= interrupted_at < 8

    assert main([*args, "--resume"]) == 0
    specs = build_sweep("lenet", profile="smoke", overrides=[(None, "epochs", 3)])
    runs = assert_one_finished_run_per_trial(tmp_path, "lenet", specs, noise_levels=24)
    assert all(run.data.metrics["lr"] == 0.01 for run in runs)
    history = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        runs[0].info.run_id, "test_acc"
    )
    assert sorted({m.step for m in history}) == [1, 2, 3]


def test_resume_needs_a_sweep_and_the_same_options(tmp_path, mnist_root, capsys):
    base = smoke_args(tmp_path, mnist_root)

    def refused() -> str:
        assert main([*base, "--resume"]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        return line

    assert refused() == f"sweep.run: error: nothing to continue: no sweep 'lenet' in {tmp_path}"
    record = tmp_path / "lenet.sweep.json"
    record.write_text(json.dumps({"sweep": "lenet", "tracking_uri": "x", "trial_keys": []}))
    assert refused() == (
        "sweep.run: error: --resume and --sync continue the sweep as it was started: use the same --profile, "
        "--seeds and --set"
    )
    record.write_text(json.dumps({"sweep": "lenet", "tracking_uri": 3, "trial_keys": []}))
    assert refused() == f"sweep.run: error: {record} is damaged: its tracking_uri is no str"


def test_a_trial_whose_worker_dies_resumes_from_its_last_checkpoint(ray_cluster, tmp_path, mnist_root):
    epochs = 8
    args = smoke_args(tmp_path, mnist_root, "--max-concurrent", "2", "--set", f"epochs={epochs}")
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", *args, "--address", ray_cluster],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def caught() -> tuple[str, int] | None:
            """A trial caught in training, its worker stopped (tests.processes.freeze_if_training): key, worker."""
            assert driver.poll() is None, "the sweep ended before a trial was caught in training"
            for folder in sorted(result.parent for result in (tmp_path / "lenet").glob("*/result.json")):
                worker = trial_worker(folder)
                if worker is not None and freeze_if_training(folder, worker, epochs):
                    return folder.name, worker
            return None

        key, worker = wait_for(caught, 180, "a trial caught in training")
        os.kill(worker, signal.SIGKILL)  # the trial's worker dies in training, whatever the trial has left
        assert driver.wait(timeout=300) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
    runs = {run.data.tags["trial_key"]: run for run in runs_of(tmp_path, "lenet")}
    assert len(runs) == 8 and all(run.info.status == "FINISHED" for run in runs.values())
    history = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        runs[key].info.run_id, "train_loss"
    )
    steps = sorted(m.step for m in history)
    # Restarted from its newest checkpoint (of epoch 1 or later), not from scratch: epoch 1 was trained once.
    assert steps.count(1) == 1 and steps[-1] == epochs
    assert runs[key].data.tags["restarts"] == "1"
    assert all("restarts" not in run.data.tags for other, run in runs.items() if other != key)


def test_trials_that_require_gpus_on_a_cluster_without_any_stop_with_one_line(
    ray_cluster, tmp_path, mnist_root, capsys
):
    args = smoke_args(tmp_path, mnist_root, "--gpus", "require", "--gpu-wait", "1")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's own log lines on creating the store
    assert err == (
        "sweep.run: error: no GPU joined the Ray cluster in 1 s, and --gpus require makes every trial ask for one: "
        "start GPU workers (min_workers of the GPU node type in cluster.yaml), or use --gpus none"
    )
    assert not (tmp_path / "lenet").exists()  # no trial started


def test_a_diverging_sweep_ends_diverged_not_retried_and_makes_no_result_row(ray_cluster, tmp_path, mnist_root, capsys):
    # lr=50 blows every model up within its first steps: all 8 diverge, and none is retried.
    args = smoke_args(tmp_path, mnist_root, "--set", "lr=50")
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("DIVERGED")]
    specs = build_sweep("lenet", profile="smoke", overrides=[(None, "lr", 50.0)])
    assert sorted(line.split()[1] for line in lines) == sorted(s.key for s in specs)
    assert all(re.search(r": loss is (nan|inf) at epoch 1 step \d+$", line) for line in lines)
    runs = runs_of(tmp_path, "lenet")
    assert len(runs) == 8
    for run in runs:
        assert run.info.status == "FAILED"
        assert run.data.tags["health"] == "diverged" and run.data.tags["health_reason"].startswith("loss is ")
        assert "restarts" not in run.data.tags  # a collapse is not retried
    assert aggregate_main(["--storage", str(tmp_path), "--out", str(tmp_path / "tables")]) == 0
    assert len(pd.read_parquet(tmp_path / "tables" / "results.parquet")) == 0
    assert len(pd.read_parquet(tmp_path / "tables" / "excluded.parquet")) == 8


def test_a_loss_that_turns_nan_after_a_healthy_first_epoch_is_caught(ray_cluster, tmp_path, mnist_root):
    # Epoch 1 at lr 0.01 trains; the "decay" at epoch 2 multiplies the rate by 5000, to 50.
    args = smoke_args(
        tmp_path,
        mnist_root,
        "--set",
        "epochs=2",
        "--set",
        "milestones=1",
        "--set",
        "lr_decay=5000",
        "--set",
        "max_train_batches=50",
    )
    assert main(args) == 1
    runs = runs_of(tmp_path, "lenet")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in runs:
        assert run.info.status == "FAILED", run.data.tags["trial_key"]
        reason = run.data.tags["health_reason"]
        assert re.fullmatch(r"loss is (nan|inf) at epoch 2 step \d+", reason) or reason.startswith(
            "clean test accuracy fell back to chance"
        ), reason
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == [1]  # the healthy first epoch was logged, and kept
        trial_dir = tmp_path / "lenet" / run.data.tags["trial_key"]
        assert [p.name for p in trial_dir.glob("checkpoint_*")] == ["checkpoint_000000"]  # the last healthy one


def test_a_bf16_sweep_trains_healthy_runs_that_carry_their_precision(ray_cluster, tmp_path, mnist_root):
    assert main(smoke_args(tmp_path, mnist_root, "--set", "precision=bf16")) == 0
    runs = runs_of(tmp_path, "lenet")
    assert len(runs) == 8 and {r.data.tags["health"] for r in runs} == {"healthy"}
    assert all(r.data.metrics["test_acc"] > 15 for r in runs)
    assert {r.data.params["precision"] for r in runs} == {"bf16"}
    bf16_keys = {spec.key for spec in build_sweep("lenet", profile="smoke", overrides=[(None, "precision", "bf16")])}
    assert {r.data.tags["trial_key"] for r in runs} == bf16_keys
    assert not bf16_keys & {spec.key for spec in build_sweep("lenet", profile="smoke")}  # fp32 trials are other trials


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_dry_run_on_a_machine_without_gpus_plans_fp32_cpu_trials(mnist_root):
    # A cluster's GPUs, live and autoscaled, are counted on a cluster: tests/test_gpus.py.
    cpu = run_cli("lenet", "--dry-run", "--data-root", str(mnist_root))
    assert cpu.returncode == 0
    assert cpu.stdout.splitlines()[-1] == "precision fp32 for A, B, C, D, PA, PB, PC, PD: CPU trials"
    assert [line.split()[0] for line in cpu.stdout.splitlines()[1:9]] == [spec.key for spec in build_sweep("lenet")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--storage", "s3://bucket/sweeps"],
            "sweep.run: error: with a remote --storage (s3://bucket/sweeps), pass --tracking-uri (an MLflow server)",
        ),
        (
            ["--storage", "nosuchfs://x/y", "--tracking-uri", "http://127.0.0.1:{closed}"],
            "sweep.run: error: cannot read the storage nosuchfs://x/y:",
        ),
    ],
)
def test_unusable_storage_stops_with_one_line(args, message):
    with closed_port() as port:
        result = run_cli("lenet", *[arg.format(closed=port) for arg in args])
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message) and "\n" not in result.stderr.strip()


# --- --verbose ------------------------------------------------------------------------------------


def test_quiet_libraries_quiets_ray_tune_and_mlflow_unless_verbose(monkeypatch):
    import logging

    from sweep.console import QUIETED_LOGGERS, quiet_libraries

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)  # put back after the test (tests/conftest.py)

    quiet_libraries(True)  # --verbose: Ray's, Tune's and MLflow's output as they make it
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    assert {name: logging.getLogger(name).level for name in QUIETED_LOGGERS} == dict.fromkeys(
        QUIETED_LOGGERS, logging.DEBUG
    )

    quiet_libraries(False)
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"  # Tune's old reporter, silent at verbose=0
    assert {name: logging.getLogger(name).level for name in QUIETED_LOGGERS} == {
        "ray": logging.ERROR,
        "ray.tune": logging.ERROR,
        "ray.train": logging.ERROR,
        "ray.data": logging.ERROR,
        "mlflow": logging.WARNING,  # no "Creating initial MLflow database tables"
    }

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    quiet_libraries(False)
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"  # a user's own setting wins


def test_the_quiet_console_drops_tunes_traceback_of_a_failed_trial_and_nothing_else(caplog):
    import logging

    from sweep.console import quiet_libraries

    quiet_libraries(False)
    quiet_libraries(False)  # twice: one filter per logger, not two
    controller, tune_run = logging.getLogger("ray.tune.execution.tune_controller"), logging.getLogger("ray.tune.tune")
    assert (len(controller.filters), len(tune_run.filters)) == (1, 1)
    with caplog.at_level(logging.ERROR):
        controller.error("Trial task failed for trial lenet_A", exc_info=RuntimeError("stopped in epoch 2"))
        tune_run.error("Trials did not complete: %s", ["lenet_A"])
        controller.error("Trial lenet_B: something else went wrong")
    assert [record.getMessage() for record in caplog.records] == ["Trial lenet_B: something else went wrong"]


def test_verbose_leaves_tunes_own_output_and_the_log_levels_alone(ray_cluster, tmp_path, mnist_root, capsys):
    import logging

    from sweep.console import QUIETED_LOGGERS

    levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    os.environ.pop("RAY_AIR_NEW_OUTPUT", None)  # put back after the test (tests/conftest.py)
    args = smoke_args(tmp_path, mnist_root, "--verbose", "--set", "max_train_batches=5")
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert {name: logging.getLogger(name).level for name in QUIETED_LOGGERS} == levels
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    # Tune's own reporter (its default, new one): where the results are, and its status tables.
    assert any(line.startswith("View detailed results here: ") for line in out), out
    assert any(line.startswith("Trial status: ") for line in out), out
    assert "8 of 8 trials finished" in out  # and the sweep's own lines too


# --- --gpus none ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "planned", "precision"),
    [
        ("auto", "GPU trials (--gpus auto), planned from this machine, for a local Ray", "H200: bf16 trains LeNet"),
        ("none", "CPU-only trials (--gpus none), planned from the option: no trial asks for a GPU", "CPU trials"),
    ],
)
def test_gpus_none_plans_cpu_only_trials_on_a_machine_whose_gpu_torch_can_use(
    tmp_path, mnist_root, monkeypatch, capsys, gpus, planned, precision
):
    monkeypatch.setattr("sweep.run.ray_running_here", lambda: False)  # a local Ray, even if a test joined one
    monkeypatch.setattr("sweep.devices.cuda_problem", lambda: None)  # as if torch could use a GPU here
    assert main(smoke_args(tmp_path / "store", mnist_root, "--gpus", gpus, "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:-1] == ["8 trials", planned]
    assert lines[-1].startswith("precision fp32 for A, B, C, D, PA, PB, PC, PD: ")
    assert precision in lines[-1]
    assert not (tmp_path / "store").exists()


def test_gpus_none_on_a_cpu_only_cluster_plans_cpu_only_trials(ray_cluster, tmp_path, mnist_root, capsys):
    assert main(smoke_args(tmp_path / "store", mnist_root, "--gpus", "none", "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3] == "8 trials"
    # Not "planned from this machine, for a local Ray", as it said: the trials run on the Ray joined.
    assert lines[-2] == "CPU-only trials (--gpus none), planned from the option: no trial asks for a GPU"
    assert lines[-1] == "precision fp32 for A, B, C, D, PA, PB, PC, PD: CPU trials"


# --- --max-failures 0; --resume of a trial whose checkpoint does not load, or beside a mend's leftover ---

FAILING_SET = ("--set", "epochs=2", "--set", "max_train_batches=10")  # 2 epochs of 10 steps: never judged
FAILING_SPECS = build_sweep("lenet", profile="smoke", overrides=[(None, "epochs", 2), (None, "max_train_batches", 10)])
RAISES = FAILING_SPECS[0]
assert RAISES.model.name == "A"


def a_raises_in_epoch_2(config, datasets):
    """sweep.trainable.train_trial, but the first attempt of LeNet A raises RuntimeError as it is about to
    report epoch 2 (epoch 1 reported and checkpointed): an attempt restarted from that checkpoint finishes."""
    from unittest import mock

    from sweep import trainable
    from sweep.specs import TrialSpec

    if TrialSpec.from_config(config).model.name != "A" or trainable.tune.get_checkpoint() is not None:
        return trainable.train_trial(config, datasets)
    report = trainable.tune.report

    def report_or_raise(metrics, **kwargs):
        if metrics.get("epoch") == 2:
            raise RuntimeError("stopped in epoch 2")
        report(metrics, **kwargs)

    with mock.patch.object(trainable.tune, "report", report_or_raise):
        return trainable.train_trial(config, datasets)


# `python -m sweep.run` whose trials run a_raises_in_epoch_2 (Tune resumes a sweep with the trainable it began with).
FAILING_DRIVER = driver_running("tests.test_sweep_run:a_raises_in_epoch_2")


def run_failing_driver(storage: Path, data_root: Path, address: str, *extra: str) -> subprocess.CompletedProcess:
    """The smoke LeNet sweep of FAILING_SET run by a FAILING_DRIVER of its own on the Ray at ``address``, its
    output piped (plain lines, as a user's piped to a file)."""
    args = smoke_args(storage, data_root, *FAILING_SET, "--address", address, *extra)
    return subprocess.run(
        [sys.executable, "-c", FAILING_DRIVER, *args], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def failed_trial_sweep(ray_cluster, tmp_path_factory, mnist_root):
    """The sweep of run_failing_driver with --max-failures 0: (its storage, the finished driver). Tests that
    change the storage work on a copy."""
    storage = tmp_path_factory.mktemp("failed") / "store"
    return storage, run_failing_driver(storage, mnist_root, ray_cluster, "--max-failures", "0")


@pytest.fixture
def failed_trial_store(ray_cluster, tmp_path, mnist_root) -> Path:
    """The storage of a sweep of its own as in failed_trial_sweep, for a test that resumes it. Not a copy of
    another test's: Tune stages a restored sweep's trial files in the Ray session, in a folder named by the
    sweep's first launch, so two copies of one store resumed on one Ray share that folder."""
    storage = tmp_path / "store"
    run_failing_driver(storage, mnist_root, ray_cluster, "--max-failures", "0")
    return storage


def epochs_reported(trial: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (trial / "result.json").read_text().splitlines()]


def output_of(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_max_failures_0_ends_a_trial_that_raises_failed_without_a_restart_and_the_others_finish(
    failed_trial_sweep,
):
    storage, done = failed_trial_sweep
    assert done.returncode == 1, output_of(done)  # README: 1, with one line per failed or diverged trial
    err, out = done.stderr.splitlines(), done.stdout.splitlines()
    assert [line for line in err if line.startswith("FAILED")] == [
        f"FAILED {RAISES.key} (A on mnist, seed 0): RuntimeError: stopped in epoch 2"
    ]
    assert "7 of 8 trials finished" in out
    assert not [line for line in out + err if "restart" in line]
    assert not [line for line in out if line.startswith(("Trial status: ", "View detailed results here: "))]
    runs = {run.data.tags["trial_key"]: run for run in runs_of(storage, "lenet")}
    assert {key: run.info.status for key, run in runs.items()} == {
        spec.key: "FAILED" if spec == RAISES else "FINISHED" for spec in FAILING_SPECS
    }
    assert all("restarts" not in run.data.tags for run in runs.values())
    # One attempt: epoch 1 reported and checkpointed, epoch 2 never (a restart would have finished it).
    trial = storage / "lenet" / RAISES.key
    assert epochs_reported(trial) == [1]
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == ["checkpoint_000000"]


def test_resume_of_a_trial_whose_only_checkpoint_does_not_load(failed_trial_store, ray_cluster, mnist_root):
    storage = failed_trial_store
    checkpoint = storage / "lenet" / RAISES.key / "checkpoint_000000" / CHECKPOINT_FILE
    whole = checkpoint.read_bytes()
    checkpoint.write_bytes(whole[: len(whole) // 2])  # cut short: no checkpoint of the trial loads

    done = run_failing_driver(storage, mnist_root, ray_cluster, "--resume")
    # What it does (pinned, not what it should): the trial is tried again from the checkpoint Tune's state names,
    # which does not load: it fails again (--max-failures 0 as the sweep started), with one line; the
    # finished trials are kept, not trained again. The checkpoint stays as it is, and no mend is made (the
    # file is there): every later --resume fails the trial the same way.
    assert done.returncode == 1, output_of(done)
    err, out = done.stderr.splitlines(), done.stdout.splitlines()
    failed = [line for line in err if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(
        f"FAILED {RAISES.key} (A on mnist, seed 0): RuntimeError: PytorchStreamReader failed reading zip archive"
    )
    assert "7 of 8 trials finished" in out
    assert [line.split("] ", 1)[1] for line in out if " started" in line] == [f"{RAISES.key} (A, seed 0) started"]
    assert not [line for line in out if "resumes from" in line]
    assert checkpoint.read_bytes() == whole[: len(whole) // 2]
    runs = {run.data.tags["trial_key"]: run.info.status for run in runs_of(storage, "lenet")}
    assert runs == {spec.key: "FAILED" if spec == RAISES else "FINISHED" for spec in FAILING_SPECS}
    assert epochs_reported(storage / "lenet" / RAISES.key) == [1]


def test_resume_ignores_a_leftover_mend_folder_and_never_takes_it_for_a_checkpoint(
    failed_trial_store, ray_cluster, mnist_root
):
    storage = failed_trial_store
    trial = storage / "lenet" / RAISES.key
    # What an older engine's mend cut short left: a whole checkpoint under a hidden name newer than the named one.
    leftover = trial / ".mend-checkpoint_000005"
    shutil.copytree(trial / "checkpoint_000000", leftover)
    named = (trial / "checkpoint_000000" / CHECKPOINT_FILE).read_bytes()

    done = run_failing_driver(storage, mnist_root, ray_cluster, "--resume")
    assert done.returncode == 0, output_of(done)
    out = done.stdout.splitlines()
    assert "8 of 8 trials finished" in out and not [line for line in out if "resumes from" in line]
    # The trial went on from the checkpoint Tune's state names (epoch 1), not from the leftover: epoch 2 only.
    assert epochs_reported(trial) == [1, 2]
    history = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}").get_metric_history(
        next(r for r in runs_of(storage, "lenet") if r.data.tags["trial_key"] == RAISES.key).info.run_id, "train_loss"
    )
    assert sorted(m.step for m in history) == [1, 2]
    assert {run.info.status for run in runs_of(storage, "lenet")} == {"FINISHED"}
    # The leftover is left as it was, beside the trial's two checkpoints, and no reader takes it for one.
    filesystem, folder = pyarrow.fs.FileSystem.from_uri(str(trial))
    assert checkpoint_names(filesystem, folder) == ["checkpoint_000001", "checkpoint_000000"]
    assert sorted(p.name for p in trial.iterdir() if p.is_dir()) == [
        ".mend-checkpoint_000005",
        "checkpoint_000000",
        "checkpoint_000001",
    ]
    assert (leftover / CHECKPOINT_FILE).read_bytes() == named
    final = torch.load(trial / "checkpoint_000001" / CHECKPOINT_FILE, weights_only=True)
    assert final["epoch"] == 2 and final["final_metrics"] is not None


def test_a_failed_trial_is_one_line_on_the_console_not_tunes_traceback(failed_trial_sweep):
    _, done = failed_trial_sweep
    assert done.returncode == 1, output_of(done)
    assert done.stderr.splitlines() == [f"FAILED {RAISES.key} (A on mnist, seed 0): RuntimeError: stopped in epoch 2"]
