"""Nothing lost, nothing doubled: idempotent tracking, a writer that outlasts MLflow outages, resumed and
re-launched sweeps, a driver killed mid-sweep."""

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from perturb import noise_suite
from sweep import mirror
from sweep.aggregate import main as aggregate_main
from sweep.catalog import build_sweep
from sweep.metrics import epoch_metrics, noise_metric
from sweep.mirror import DeadLetters, TrackingWriter, outage_reason
from sweep.run import EXIT_WRITES_WAIT, main
from sweep.storage import SweepStorage
from sweep.tracking import Tracker, check_store
from sweep.training import EpochStats
from tests.datasets import write_mnist
from tests.processes import kill, reserved_port, start_mlflow_server, stop, wait_for

PROJECT = Path(__file__).resolve().parents[1]
SPEC = build_sweep("lenet", profile="smoke")[0]


def epoch_result(epoch: int, final: bool = False) -> dict:
    stats = EpochStats(loss=1 / epoch, accuracy=50.0, images=10, seconds=1.0, step_losses=(), lr=0.01)
    result = epoch_metrics(epoch, stats, test_acc=90.0 + epoch)
    if final:
        result.update({noise_metric(p.noise, p.level): 80.0 for p in noise_suite(SPEC.dataset)})
    return result


def steps(client: mlflow.MlflowClient, run_id: str, metric: str = "epoch") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


# --- the Tracker: idempotent operations ------------------------------------------------------------


def test_an_epoch_logged_again_is_not_doubled_even_by_a_fresh_tracker(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "lenet", (tmp_path / "artifacts").as_uri(), launch="one")
    for epoch in (1, 2, 2, 1):
        tracker.log_result(SPEC, epoch_result(epoch))
    again = Tracker(uri, "lenet", (tmp_path / "artifacts").as_uri(), launch="one")  # a resumed driver: nothing cached
    again.log_result(SPEC, epoch_result(2))
    again.log_result(SPEC, epoch_result(3, final=True))
    again.finish(SPEC, epoch_result(3, final=True))
    (run,) = again.client.search_runs([again.experiment_id])
    assert steps(again.client, run.info.run_id) == [1, 2, 3] and steps(again.client, run.info.run_id, "test_acc") == [
        1,
        2,
        3,
    ]
    assert run.info.status == "FINISHED" and run.data.tags["launch"] == "one"


def test_a_finished_run_is_never_reopened_and_a_new_launch_supersedes_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri, "lenet", (tmp_path / "artifacts").as_uri(), launch="one")
    first.open_run(SPEC)
    first.log_result(SPEC, epoch_result(1, final=True))
    first.finish(SPEC, epoch_result(1, final=True))
    old = first.find_run(SPEC.key)
    # The same launch (a resume) sees the trial again: the FINISHED run stays as it is.
    first.open_run(SPEC)
    first.fail(SPEC, "worker died")
    assert first.client.get_run(old).info.status == "FINISHED" and "error" not in first.client.get_run(old).data.tags
    # Another launch of the same trial key (a second sweep on the same server): a new run.
    second = Tracker(uri, "lenet", (tmp_path / "artifacts").as_uri(), launch="two")
    new = second.open_run(SPEC)
    assert new != old and second.client.get_run(new).data.tags["supersedes"] == old
    second.log_result(SPEC, {"health": "diverged", "health_reason": "loss is nan at epoch 1 step 3", "epoch": 0})
    second.finish(SPEC, {"health": "diverged", "health_reason": "loss is nan at epoch 1 step 3", "epoch": 0})
    kept = first.client.get_run(old)
    assert kept.info.status == "FINISHED" and kept.data.metrics["test_acc"] == 91.0  # the good result stays
    assert second.client.get_run(new).info.status == "FAILED"


def test_finishing_clears_the_error_of_an_earlier_attempt(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lenet", (tmp_path / "artifacts").as_uri(), launch="one")
    tracker.open_run(SPEC)
    tracker.fail(SPEC, "worker died")
    tracker.open_run(SPEC)  # retried (--resume retries errored trials)
    tracker.log_result(SPEC, epoch_result(1, final=True))
    tracker.finish(SPEC, epoch_result(1, final=True))
    run = tracker.client.get_run(tracker.find_run(SPEC.key))
    assert run.info.status == "FINISHED" and run.data.tags["health"] == "healthy" and "error" not in run.data.tags


# --- the writer: retries in order, never blocks ----------------------------------------------------


class FlakyTracker:
    """Stands in for Tracker: the store is away for the first ``failures`` calls (class-wide), and takes
    no result before ``opened`` is set (at most 5 s)."""

    failures = 3
    delivered: list = []
    opened = threading.Event()

    def __init__(self, *args) -> None:
        if FlakyTracker.failures:
            FlakyTracker.failures -= 1
            raise ConnectionError("connection refused")

    def log_result(self, spec, result) -> None:
        FlakyTracker.opened.wait(5)
        if FlakyTracker.failures:
            FlakyTracker.failures -= 1
            raise ConnectionError("connection refused")
        FlakyTracker.delivered.append(result["epoch"])


def test_the_writer_delivers_in_order_exactly_once_through_an_outage_without_blocking(monkeypatch, capsys):
    monkeypatch.setattr(mirror, "Tracker", FlakyTracker)
    monkeypatch.setattr(mirror, "FIRST_BACKOFF_S", 0.05)
    FlakyTracker.failures, FlakyTracker.delivered = 5, []
    FlakyTracker.opened.clear()
    writer = TrackingWriter("http://127.0.0.1:9", "lenet")
    for epoch in range(1, 21):
        writer.submit("log_result", SPEC, {"epoch": epoch})
    # Submitting never waits for the store: all 20 are in, and the store has taken none of them yet.
    assert FlakyTracker.delivered == [] and writer.pending() >= 19
    FlakyTracker.opened.set()
    assert writer.drain(30) == 0
    assert FlakyTracker.delivered == list(range(1, 21))
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(
        r"MLflow at http://127\.0\.0\.1:9 unavailable since \d\d:\d\d:\d\d \(connection refused\): \d+ writes wait, "
        r"retried in the background; training goes on",
        err[0],
    )
    assert err[1].startswith("MLflow at http://127.0.0.1:9 is back after ")
    assert len(err) == 2  # one line for the outage, not one per failed try


# --- writes the store refuses for good --------------------------------------------------------------

REFUSED = build_sweep("lenet", profile="smoke")[5]  # PB: the trial whose writes the store refuses


def refusal() -> MlflowException:
    return MlflowException(
        "The run 4f2c must be in the 'active' state. Current state is deleted.",
        error_code=INVALID_PARAMETER_VALUE,
    )


class RefusingTracker:
    """Stands in for Tracker: every write of REFUSED's trial is refused for good, the others delivered."""

    tries: list = []
    delivered: list = []

    def __init__(self, *args) -> None:
        pass

    def log_result(self, spec, result) -> None:
        if spec.key == REFUSED.key:
            RefusingTracker.tries.append(result["epoch"])
            raise refusal()
        RefusingTracker.delivered.append((spec.key, result["epoch"]))


def test_a_write_refused_for_good_is_set_aside_with_its_trials_later_writes_and_the_others_go_on(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(mirror, "Tracker", RefusingTracker)
    monkeypatch.setattr(mirror, "FIRST_BACKOFF_S", 0.01)
    RefusingTracker.tries, RefusingTracker.delivered = [], []
    letters = DeadLetters(SweepStorage(str(tmp_path)), "lenet")
    writer = TrackingWriter("http://127.0.0.1:9", "lenet", dead_letters=letters)
    for epoch in (1, 2, 3):
        writer.submit("log_result", SPEC, {"epoch": epoch})
        writer.submit("log_result", REFUSED, {"epoch": epoch})
    assert writer.drain(30) == 0
    kept_at_once = [
        json.loads(line)["args"] for line in (tmp_path / "lenet.dead-letters.jsonl").read_text().splitlines()
    ]
    assert kept_at_once == [[{"epoch": 1}]]  # the trial's first refused write, kept as it was set aside
    writer.keep()  # as sweep.run does when the sweep ends: its later ones too

    assert RefusingTracker.delivered == [(SPEC.key, 1), (SPEC.key, 2), (SPEC.key, 3)]
    assert RefusingTracker.tries == [1, 1, 1]  # three tries of the first write, none of the trial's later ones
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"MLflow refused a write of trial {REFUSED.key} for good (The run 4f2c must be in the 'active' state. "
        f"Current state is deleted.): it and the trial's later writes are set aside in {tmp_path}/lenet.dead-letters.jsonl; "
        "once the cause is mended, run the command again with --sync"
    ]
    kept = [json.loads(line) for line in (tmp_path / "lenet.dead-letters.jsonl").read_text().splitlines()]
    assert [(k["trial_key"], k["operation"], k["args"]) for k in kept] == [
        (REFUSED.key, "log_result", [{"epoch": epoch}]) for epoch in (1, 2, 3)
    ]
    assert kept[0]["error"] == "The run 4f2c must be in the 'active' state. Current state is deleted."
    assert kept[1]["error"] == kept[2]["error"] == "an earlier write of its trial was set aside"
    assert [letter.args for letter in letters.read()] == [(REFUSED, {"epoch": epoch}) for epoch in (1, 2, 3)]


def test_a_run_whose_params_failed_after_it_was_created_gets_them_when_found_again(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_batch, failed = mlflow.MlflowClient.log_batch, []

    def params_fail_once(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if params and not failed:
            failed.append(run_id)
            raise MlflowException("API request to /api/2.0/mlflow/runs/log-batch failed: connection refused")
        return log_batch(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", params_fail_once)
    monkeypatch.setattr(mirror, "FIRST_BACKOFF_S", 0.01)
    writer = TrackingWriter(uri, "lenet", launch="a1")
    writer.submit("open_run", SPEC)
    writer.submit("log_result", SPEC, epoch_result(1))
    assert writer.drain(60) == 0

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lenet").experiment_id])
    assert len(runs) == 1 and failed == [runs[0].info.run_id]  # the run was created before its params failed
    expected = {
        "dataset": "mnist", "model": "A", "seed": "0", "arch": "lenet", "variant": "A", "pushpull": "False",
        "epochs": "1", "lr": "0.01", "milestones": "none", "lr_decay": "0.1", "momentum": "0.9", "nesterov": "True",
        "weight_decay": "0.0005", "batch_size": "64", "augment": "False", "normalize": "True",
        "warmup_epochs": "0.0", "max_train_batches": "100", "max_test_images": "500", "eval_batch_size": "1000",
        "precision": "fp32", "compile": "False", "dropout": "0.0",
    }  # fmt: skip
    assert runs[0].data.params == expected
    assert steps(client, runs[0].info.run_id) == [1]


def test_a_sweep_whose_store_refuses_one_trial_ends_with_its_line_and_sync_explains_then_delivers(
    ray_cluster, tmp_path, mnist_root, monkeypatch, capsys
):
    epochs, refused_key = 2, build_sweep("lenet", profile="smoke", overrides=[(None, "epochs", 2)])[5].key
    log_result = Tracker.log_result

    def refuse_one_trial(self, spec, result):
        if spec.key == refused_key and result["epoch"] == 2:
            raise refusal()
        return log_result(self, spec, result)

    monkeypatch.setattr(Tracker, "log_result", refuse_one_trial)
    monkeypatch.setattr(mirror, "FIRST_BACKOFF_S", 0.05)
    args = sweep_args(tmp_path, mnist_root, epochs)
    assert main(args) == EXIT_WRITES_WAIT
    err = capsys.readouterr().err.splitlines()
    refused_line = (
        f"sweep.run: MLflow refused {{}} writes of trial {refused_key} for good (The run 4f2c must be in the "
        f"'active' state. Current state is deleted.): set aside in {tmp_path}/lenet.dead-letters.jsonl; run the "
        "command again with --sync once the cause is mended"
    )
    final = [line for line in err if line.startswith("sweep.run: MLflow refused")]
    assert len(final) == 1 and re.fullmatch(re.escape(refused_line).replace(r"\{\}", r"\d+"), final[0])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    runs = {
        r.data.tags["trial_key"]: r for r in client.search_runs([client.get_experiment_by_name("lenet").experiment_id])
    }
    assert len(runs) == 8
    assert all(run.info.status == "FINISHED" for key, run in runs.items() if key != refused_key)  # the others go on
    assert steps(client, runs[refused_key].info.run_id) == [1]

    # Still refused: --sync says so, with why, and keeps the dead letters.
    assert main([*args, "--sync"]) == EXIT_WRITES_WAIT
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("sweep.run: MLflow refused")]
    assert (tmp_path / "lenet.dead-letters.jsonl").exists()
    # Mended: --sync delivers everything once, and the dead letters are gone.
    monkeypatch.setattr(Tracker, "log_result", log_result)
    assert main([*args, "--sync"]) == 0
    assert_every_trial_once(uri, epochs)
    assert not (tmp_path / "lenet.dead-letters.jsonl").exists()


# --- real sweeps -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=3200, n_test=100)
    return root


def sweep_args(storage: Path, mnist_root: Path, epochs: int, *extra: str) -> list[str]:
    # --overhead-budget 1: every epoch evaluates, so that assert_every_trial_once can check every epoch's test_acc.
    return [
        "lenet",
        "--profile",
        "smoke",
        "--storage",
        str(storage),
        "--data-root",
        str(mnist_root),
        "--set",
        f"epochs={epochs}",
        "--overhead-budget",
        "1",
        *extra,
    ]


def start_driver(args: list[str], ray_address: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweep.run", *args, "--address", ray_address],
        cwd=PROJECT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def assert_every_trial_once(uri: str, epochs: int) -> None:
    """One FINISHED run per trial key of the sweep, each epoch logged once, every noise metric."""
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lenet").experiment_id], max_results=100)
    specs = build_sweep("lenet", profile="smoke", overrides=[(None, "epochs", epochs)])
    assert sorted(r.data.tags["trial_key"] for r in runs) == sorted(s.key for s in specs)
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags["trial_key"]
        for metric in ("epoch", "train_loss", "test_acc"):
            assert steps(client, run.info.run_id, metric) == list(range(1, epochs + 1)), (
                run.data.tags["trial_key"],
                metric,
            )
        assert sum(name.startswith("acc/") for name in run.data.metrics) == 24


def logged_epochs(uri: str) -> int:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("lenet")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return sum(int(r.data.metrics.get("epoch", 0)) for r in runs)


def reported_epochs(storage: Path) -> int:
    """Epochs the trials reported to Tune so far (lines of their result.json files)."""
    return sum(len(p.read_text().splitlines()) for p in (storage / "lenet").glob("*/result.json"))


@pytest.fixture
def mlflow_port():
    """A port kept for the test's MLflow server (tests.processes.reserved_port), which the test kills and starts
    again there: the driver must find its tracking server back at the URI it has (sweep.run takes no other
    address mid-sweep), so the port stays the test's between the two, for no other process to take."""
    with reserved_port() as port:
        yield port


def writer_reports_unavailable(log: Path, uri: str) -> bool:
    """Whether the driver's MLflow writer last said that the store at ``uri`` is unavailable (a write failed,
    which the writer retries in the background), not yet that it is back."""
    text = log.read_text()
    return text.rfind(f"MLflow at {uri} unavailable since") > text.rfind(f"MLflow at {uri} is back after")


def test_a_tracking_server_away_longer_than_mlflows_retries_stops_nothing(
    ray_cluster, tmp_path, mnist_root, mlflow_port
):
    server, uri = start_mlflow_server(tmp_path / "server", tmp_path / "mlflow.log", port=mlflow_port, workers=1)
    epochs = 8
    driver = start_driver(
        sweep_args(tmp_path / "store", mnist_root, epochs, "--tracking-uri", uri), ray_cluster, tmp_path / "driver.log"
    )
    try:
        wait_for(lambda: logged_epochs(uri) >= 2, 180, "the first epochs in MLflow")
        kill(server)
        before = reported_epochs(tmp_path / "store")
        # The server stays away until a write has failed (the writer says so: it says so only of a request that
        # MLflow's client gave up, its own retries spent against the absent server, so the outage outlasted
        # them) and 8 more epochs have trained; then it takes seconds to start again. The writer's retries
        # past MLflow's deliver the waiting writes ("is back after", below). The driver outlives the outage:
        # training, or waiting up to --tracking-wait at the end.
        wait_for(
            lambda: (
                writer_reports_unavailable(tmp_path / "driver.log", uri)
                and reported_epochs(tmp_path / "store") >= before + 8
            ),
            180,
            "the writer's word of the outage, and 8 more epochs",
        )
        assert driver.poll() is None  # training went on
        server, _ = start_mlflow_server(tmp_path / "server", tmp_path / "mlflow.log", port=mlflow_port, workers=1)
        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        log = (tmp_path / "driver.log").read_text()
        unavailable = re.compile(
            rf"MLflow at {re.escape(uri)} unavailable since \d\d:\d\d:\d\d \((connection refused|connection lost|no answer)\): "
            r"\d+ writes wait, retried in the background; training goes on"
        )
        assert any(unavailable.fullmatch(line) for line in log.splitlines()), log[-3000:]
        assert f"MLflow at {uri} is back after" in log
        # MLflow's own "View run ... / View experiment ..." lines, printed whenever a run ends on a server: off.
        assert "View run" not in log and "View experiment" not in log
        assert_every_trial_once(uri, epochs)
    finally:
        stop(driver)
        kill(server)


def test_writes_that_wait_when_the_sweep_ends_are_delivered_by_sync(
    ray_cluster, tmp_path, mnist_root, capsys, mlflow_port
):
    server, uri = start_mlflow_server(tmp_path / "server", tmp_path / "mlflow.log", port=mlflow_port, workers=1)
    epochs = 2
    args = sweep_args(tmp_path / "store", mnist_root, epochs, "--tracking-uri", uri)
    driver = start_driver([*args, "--tracking-wait", "3"], ray_cluster, tmp_path / "driver.log")
    try:
        wait_for(lambda: logged_epochs(uri) >= 1, 180, "the first epoch in MLflow")
        kill(server)  # and it does not come back during the sweep
        assert driver.poll() is None  # mid-sweep
        assert driver.wait(timeout=400) == EXIT_WRITES_WAIT
    finally:
        stop(driver)
    log = (tmp_path / "driver.log").read_text().splitlines()
    assert "8 of 8 trials finished" in log
    waiting = [line for line in log if line.startswith("sweep.run: ")]
    assert len(waiting) == 1 and " MLflow writes wait for " in waiting[0] and "again with --sync" in waiting[0]
    assert int(waiting[0].split()[1]) > 0

    server, _ = start_mlflow_server(tmp_path / "server", tmp_path / "mlflow.log", port=mlflow_port, workers=1)
    try:
        assert main([*args, "--sync"]) == 0
        assert_every_trial_once(uri, epochs)
        assert main([*args, "--sync"]) == 0  # again: nothing new, nothing doubled
        assert_every_trial_once(uri, epochs)
    finally:
        kill(server)


def test_a_driver_killed_mid_sweep_resumes_without_a_duplicate_run_or_point(ray_cluster, tmp_path, mnist_root):
    epochs = 4
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = sweep_args(tmp_path, mnist_root, epochs)
    driver = start_driver(args, ray_cluster, tmp_path / "driver.log")

    def finished() -> int:
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("lenet")
        return (
            sum(r.info.status == "FINISHED" for r in client.search_runs([experiment.experiment_id]))
            if experiment
            else 0
        )

    try:
        wait_for(lambda: finished() >= 2, 240, "two finished trials")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop(driver)
    assert finished() < 8
    assert main([*args, "--resume"]) == 0
    assert_every_trial_once(uri, epochs)
    launch = json.loads((tmp_path / "lenet.sweep.json").read_text())["launch"]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lenet").experiment_id])
    assert {r.data.tags["launch"] for r in runs} == {launch} and not any("supersedes" in r.data.tags for r in runs)


def test_a_driver_that_stops_between_recording_the_sweep_and_starting_tune_resumes_cleanly(
    ray_cluster, tmp_path, mnist_root, monkeypatch
):
    from ray import tune

    args = sweep_args(tmp_path, mnist_root, 1)

    def crash(self):
        raise KeyboardInterrupt  # the driver stopped: the sweep is recorded, Tune has run nothing

    with monkeypatch.context() as patch:
        patch.setattr(tune.Tuner, "fit", crash)
        with pytest.raises(KeyboardInterrupt):
            main(args)
    assert (tmp_path / "lenet.sweep.json").exists()
    assert main(args) == 2  # a recorded sweep is not started twice
    assert main([*args, "--resume"]) == 0
    assert_every_trial_once(f"sqlite:///{tmp_path / 'mlflow.db'}", 1)


# --- a tracking server with MLflow's basic-auth app, as cluster.yaml runs it -----------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    server, uri = start_mlflow_server(
        folder / "server", folder / "mlflow.log", auth_password="right-password", workers=1
    )
    yield uri
    kill(server)


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        (
            {},
            "the MLflow tracking server at {uri} asks for credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or put them in ~/.mlflow/credentials",
        ),
        (
            {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "wrong"},
            "the MLflow tracking server at {uri} refused user 'admin' (HTTP 401): check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials",
        ),
    ],
)
def test_a_missing_or_wrong_credential_is_one_line_and_exit_2(
    auth_server, tmp_path, mnist_root, monkeypatch, capsys, credentials, message
):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials of this machine's
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    assert main(sweep_args(tmp_path / "store", mnist_root, 1, "--tracking-uri", auth_server)) == 2
    assert capsys.readouterr().err.strip() == f"sweep.run: error: {message.format(uri=auth_server)}"
    assert not (tmp_path / "store").exists()
    assert aggregate_main(["--tracking-uri", auth_server, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"sweep.aggregate: error: {message.format(uri=auth_server)}"


def test_the_credentials_in_mlflows_own_file_open_the_server(auth_server, tmp_path, monkeypatch):
    """The cluster's way: the password in ~/.mlflow/credentials (mode 600, see cluster.yaml), in no environment."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = admin\nmlflow_tracking_password = right-password\n"
    )
    check_store(auth_server)
    tracker = Tracker(auth_server, "lenet", launch="file")
    tracker.log_result(SPEC, epoch_result(1))
    assert steps(tracker.client, tracker.find_run(SPEC.key)) == [1]


def test_the_right_credential_opens_the_server(auth_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "right-password")
    tracker = Tracker(auth_server, "lenet", launch="one")
    tracker.log_result(SPEC, epoch_result(1))
    assert steps(tracker.client, tracker.find_run(SPEC.key)) == [1]


def test_a_password_in_the_tracking_uri_is_never_printed_or_written(
    ray_cluster, auth_server, tmp_path, mnist_root, monkeypatch, capsys
):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")  # so that the credentials the command sets are taken back after the test
        monkeypatch.delenv(name)
    with_password = auth_server.replace("http://", "http://admin:right-password@")
    assert main(sweep_args(tmp_path / "store", mnist_root, 1, "--tracking-uri", with_password)) == 0
    out = capsys.readouterr()
    assert aggregate_main(["--tracking-uri", with_password, "--out", str(tmp_path / "tables")]) == 0
    out2 = capsys.readouterr()
    printed = out.out + out.err + out2.out + out2.err
    assert f"tracking at {auth_server}" in printed and "right-password" not in printed
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 20 and not [path for path in written if b"right-password" in path.read_bytes()]
    assert json.loads((tmp_path / "store" / "lenet.sweep.json").read_text())["tracking_uri"] == auth_server


@pytest.mark.integration  # a local Ray in a process of its own
def test_the_tracking_credentials_never_reach_the_workers_of_a_local_ray(tmp_path):
    script = (
        "import os, ray\n"
        "from sweep.cluster import join_ray\n"
        "join_ray(None, verbose=False)\n"
        "peek = ray.remote(lambda: [os.environ.get(n) for n in ('MLFLOW_TRACKING_USERNAME', 'MLFLOW_TRACKING_PASSWORD')])\n"
        "print(ray.get(peek.remote()), os.environ['MLFLOW_TRACKING_PASSWORD'])\n"
    )
    env = dict(os.environ, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="right-password")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # The task saw neither; the driver kept both (it logs to MLflow).
    assert done.stdout.splitlines()[-1] == "[None, None] right-password"


# --- a sweep that continues where its tracking moved, and epochs Ray had not uploaded -----------------


def newest_checkpoint_epoch(trial: Path) -> int:
    """The epoch of the newest checkpoint that trial folder ``trial`` holds (0: none)."""
    folders = sorted(trial.glob("checkpoint_*/trial.pt"))
    return torch.load(folders[-1], weights_only=True)["epoch"] if folders else 0


def test_epochs_a_killed_driver_had_not_uploaded_reach_a_moved_tracking_server_once(
    ray_cluster, tmp_path, mnist_root, mlflow_port
):
    """The head is replaced: the driver dies with writes waiting (its tracking server was away), Ray had
    uploaded only the first line of each trial's result.json, and the server comes back at a new address
    with the same database. ``--resume --tracking-uri NEW`` ends with every epoch in MLflow once."""
    server_dir, storage, epochs = tmp_path / "server", tmp_path / "store", 6
    args = sweep_args(storage, mnist_root, epochs)
    # The first server's port stays the test's (mlflow_port), so that the moved server's (one it binds itself)
    # is another.
    server, first = start_mlflow_server(server_dir, tmp_path / "mlflow.log", port=mlflow_port, workers=1)
    driver = start_driver([*args, "--tracking-uri", first], ray_cluster, tmp_path / "driver.log")
    try:
        wait_for(lambda: logged_epochs(first) >= 1, 180, "the first epoch in MLflow")
        kill(server)  # from now on the driver's writes wait in its memory
        wait_for(
            lambda: max(newest_checkpoint_epoch(r.parent) for r in (storage / "lenet").glob("*/result.json")) >= 3,
            180,
            "a checkpoint of epoch 3",
        )
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop(driver)
        kill(server)
    # Ray's upload of result.json laid out as stopped after each trial's first epoch at the latest.
    checkpointed = {}
    for result_file in (storage / "lenet").glob("*/result.json"):
        result_file.write_text("".join(result_file.read_text().splitlines(keepends=True)[:1]))
        checkpointed[result_file.parent.name] = newest_checkpoint_epoch(result_file.parent)
    database = mlflow.MlflowClient(f"sqlite:///{server_dir / 'server.db'}")
    runs = database.search_runs([database.get_experiment_by_name("lenet").experiment_id])
    logged = {r.data.tags["trial_key"]: steps(database, r.info.run_id) for r in runs}
    unfinished = [key for key, epoch in checkpointed.items() if 3 <= epoch < epochs]
    assert unfinished and all(logged.get(key, []) != list(range(1, epochs + 1)) for key in unfinished)
    assert any(set(range(2, checkpointed[key] + 1)) - set(logged.get(key, [])) for key in unfinished)

    server, moved = start_mlflow_server(server_dir, tmp_path / "mlflow.log", workers=1)
    assert moved != first
    try:
        assert main([*args, "--resume", "--tracking-uri", moved]) == 0
        assert_every_trial_once(moved, epochs)
    finally:
        kill(server)
    record = json.loads((storage / "lenet.sweep.json").read_text())
    assert record["tracking_uri"] == moved


def write_started_sweep(storage: Path, tracking_uri: str, launch: str) -> list[str]:
    """The record of a started smoke lenet sweep, as sweep.run writes it (docs: <storage>/<sweep>.sweep.json)."""
    keys = [spec.key for spec in build_sweep("lenet", profile="smoke")]
    storage.mkdir(parents=True)
    record = {"sweep": "lenet", "tracking_uri": tracking_uri, "trial_keys": keys, "launch": launch, "gpus": False}
    (storage / "lenet.sweep.json").write_text(json.dumps(record))
    return keys


def store_with_run(database: Path, trial_key: str, launch: str) -> str:
    uri = f"sqlite:///{database}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("lenet")
    client.create_run(experiment, tags={"trial_key": trial_key, "launch": launch})
    return uri


def test_a_sweep_continues_at_another_tracking_store_only_when_it_holds_the_sweeps_runs(tmp_path, mnist_root, capsys):
    storage = tmp_path / "store"
    keys = write_started_sweep(storage, "http://127.0.0.1:9/", "launch-1")  # the old head: gone
    record = (storage / "lenet.sweep.json").read_text()
    dry_resume = ["lenet", "--profile", "smoke", "--storage", str(storage), "--data-root", str(mnist_root)]
    dry_resume += ["--resume", "--dry-run", "--tracking-uri"]

    elsewhere = store_with_run(tmp_path / "other.db", keys[0], "launch-2")  # another launch of the same trials
    moved = store_with_run(tmp_path / "moved.db", keys[3], "launch-1")
    capsys.readouterr()  # MLflow's lines as it made the stores
    assert main([*dry_resume, elsewhere]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"sweep.run: error: sweep lenet is tracked at http://127.0.0.1:9/, and {elsewhere} holds none of its runs: "
        "continue it with --tracking-uri http://127.0.0.1:9/, or with the store its runs moved to"
    ]
    absent = f"sqlite:///{tmp_path / 'absent.db'}"
    assert main([*dry_resume, absent]) == 2
    assert "holds none of its runs" in capsys.readouterr().err and not (tmp_path / "absent.db").exists()

    assert main([*dry_resume, moved]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        f"sweep lenet: tracked at {moved} from now on, which holds the runs of 1 of its 8 trials "
        "(it started at http://127.0.0.1:9/)"
    ) in out
    assert (storage / "lenet.sweep.json").read_text() == record  # a dry run changes nothing


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
            "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))",
            "connection lost",
        ),
        (
            "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
            "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: /api/2.0/mlflow/runs/create "
            "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))",
            "connection refused",
        ),
        ("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))", "connection lost"),
        (
            "HTTPConnectionPool(host='mlflow', port=5000): Max retries exceeded with url: /api (Caused by x)",
            "no answer",
        ),
        ("API request failed with error code 503 != 200", "HTTP 503"),
    ],
)
def test_an_outage_is_named_in_a_few_words(message, reason):
    assert outage_reason(RuntimeError(message)) == reason


HELD_IN_A_TRANSACTION = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA cache_size=1")  # the change spills into the database file before any commit
connection.execute("BEGIN")
connection.execute("UPDATE runs SET x = x + 1")
print("writing", flush=True)
time.sleep(600)
"""


def test_a_store_whose_writer_was_killed_mid_transaction_passes_the_check_with_its_last_commit(tmp_path):
    database = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE runs (x INTEGER)")
        connection.executemany("INSERT INTO runs VALUES (?)", [(1,)] * 20000)
        connection.commit()
    writer = subprocess.Popen(
        [sys.executable, "-c", HELD_IN_A_TRANSACTION, str(database)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "writing\n"
    writer.kill()  # as a driver killed while it logged: its rollback journal stays
    writer.wait(timeout=30)
    writer.stdout.close()
    assert (tmp_path / "mlflow.db-journal").exists()
    check_store(f"sqlite:///{database}")
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
        assert connection.execute("SELECT SUM(x) FROM runs").fetchone() == (20000,)  # the last commit, whole
