"""Sweeps kept on S3, as on a cluster: an S3-compatible server (moto's server mode) on 127.0.0.1, its endpoint
in the standard ``AWS_ENDPOINT_URL`` that pyarrow (Ray Tune's storage), boto3 (MLflow's artifacts) and the
project read. The smoke sweep, a driver killed mid-sweep, ``--resume`` through Ray's checkpoint race laid
out on S3, ``sweep.evaluate`` and ``sweep.aggregate`` against it. (That a resumed trial computes bit for bit
what an uninterrupted one does is proven on a local folder: tests/test_resume.py; the storage holds bytes.)"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.fs
import pytest

from sweep.catalog import build_sweep
from sweep.checkpoints import CHECKPOINT_FILE, checkpoint_names
from tests.datasets import write_mnist
from tests.processes import stop, wait_for
from tests.s3server import s3_server

PROJECT = Path(__file__).resolve().parents[1]
EPOCHS = 6  # long enough for the driver to be killed with trials in flight


@pytest.fixture(scope="module")
def s3():
    """An S3 server with bucket ``sweeps``: the environment that points a process at it."""
    with s3_server() as env:
        yield env


@pytest.fixture
def on_s3(s3, monkeypatch):
    """This process pointed at the S3 server too (to read what the sweep left there)."""
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    return s3


def command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"sweep.{module}", *args]


def run(cwd: Path, env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def s3_files(prefix: str) -> list[str]:
    filesystem, path = pyarrow.fs.FileSystem.from_uri(prefix)
    selector = pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)
    return sorted(i.path for i in filesystem.get_file_info(selector) if i.type == pyarrow.fs.FileType.File)


def results_of(storage: str, key: str) -> list[dict]:
    filesystem, path = pyarrow.fs.FileSystem.from_uri(f"{storage}/lenet/{key}/result.json")
    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return []
    with filesystem.open_input_stream(path) as stream:
        return [json.loads(line) for line in stream.read().decode().splitlines() if line.strip()]


def lose_the_named_checkpoints(storage: str) -> list[str]:
    """Ray's race (ray-project/ray#27790) on S3: for every trial Tune will restore, the checkpoint its saved
    state names is gone and a newer one holds its files. Returns the trial keys laid out so."""
    from ray import tune

    raced = []
    for trial in tune.ExperimentAnalysis(f"{storage}/lenet").trials:
        named = trial.checkpoint
        if trial.status == "TERMINATED" or named is None:
            continue
        filesystem, folder = named.filesystem, named.path.rsplit("/", 1)[0]
        # Tune may already have deleted it (num_to_keep) after saving the state that names it: the race itself.
        if filesystem.get_file_info(named.path).type != pyarrow.fs.FileType.NotFound:
            newer = f"{folder}/checkpoint_{int(named.path.rsplit('_', 1)[1]) + 10:06d}"
            pyarrow.fs.copy_files(named.path, newer, source_filesystem=filesystem, destination_filesystem=filesystem)
            filesystem.delete_dir(named.path)
        raced.append(folder.rsplit("/", 1)[1])
    return raced


def test_a_sweep_on_s3_survives_a_killed_driver_and_is_scored_and_aggregated_from_there(on_s3, tmp_path):
    data = tmp_path / "data"
    write_mnist(data, n_train=3200, n_test=100)
    cwd = tmp_path / "cwd"  # where the commands run: nothing may land here
    cwd.mkdir()
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"} | on_s3  # its own Ray
    storage, tracking = "s3://sweeps/study", f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = ["lenet", "--profile", "smoke", "--storage", storage, "--tracking-uri", tracking, "--data-root", str(data)]
    sweep += ["--set", f"epochs={EPOCHS}", "--overhead-budget", "1"]
    keys = [spec.key for spec in build_sweep("lenet", profile="smoke", overrides=[(None, "epochs", EPOCHS)])]

    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(
            command("run", *sweep), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        finished = lambda: sum(len(results_of(storage, k)) == EPOCHS for k in keys)  # noqa: E731
        wait_for(lambda: driver.poll() is not None or finished() >= 2, 300, "two finished trials")
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop(driver)
    raced = lose_the_named_checkpoints(storage)
    assert raced, (tmp_path / "driver.log").read_text()[-2000:]

    resumed = run(cwd, env, *command("run", *sweep, "--resume"))
    for key in raced:
        assert f"{key} resumes from checkpoint_" in resumed.stdout
    assert "8 of 8 trials finished" in resumed.stdout

    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("lenet").experiment_id])
    assert sorted(r.data.tags["trial_key"] for r in runs) == sorted(keys)
    for r in runs:
        assert r.info.status == "FINISHED"
        history = sorted(m.step for m in client.get_metric_history(r.info.run_id, "test_acc"))
        assert history == list(range(1, EPOCHS + 1)), r.data.tags["trial_key"]  # every epoch once
        assert r.info.artifact_uri.startswith(f"{storage}/mlartifacts/")
    for key in keys:  # after a mend, no checkpoint of the stopped timeline is left to pass for the newest
        filesystem, folder = pyarrow.fs.FileSystem.from_uri(f"{storage}/lenet/{key}")
        names = checkpoint_names(filesystem, folder)
        assert names and int(names[0].rsplit("_", 1)[1]) < 10, (key, names)
    assert s3_files(f"{storage}/mlartifacts") == sorted(
        f"sweeps/study/mlartifacts/{r.info.run_id}/artifacts/results.json" for r in runs
    )

    scored = run(
        cwd, env, *command("evaluate", "lenet", "--suite", "shot", "--storage", storage, "--data-root", str(data))
    )
    assert "logged 40 scores to 8 runs" in scored.stdout
    out = tmp_path / "tables"
    run(cwd, env, *command("aggregate", "--tracking-uri", tracking, "--out", str(out), "--suite", "shot"))
    shot = pd.read_parquet(out / "results.parquet")
    assert len(shot) == 8 * (1 + 5) and shot["trial_key"].nunique() == 8
    assert not list(cwd.iterdir())  # no mlruns, no results: everything went where the sweep said
    assert CHECKPOINT_FILE in " ".join(s3_files(f"{storage}/lenet"))

    # The same sweep on a local folder, uninterrupted, computes the same numbers: the storage holds bytes.
    local = tmp_path / "local"
    twin = [*sweep, "--storage", str(local), "--tracking-uri", f"sqlite:///{tmp_path / 'local.db'}"]
    run(cwd, env, *command("run", *twin))
    for key in keys:
        local_results = [json.loads(line) for line in (local / "lenet" / key / "result.json").read_text().splitlines()]
        assert [numbers(r) for r in results_of(storage, key)][-1] == numbers(local_results[-1]), key
        assert len(numbers(local_results[-1])) == 2 + 24


def numbers(result: dict) -> dict:
    """What a trial computed by its last epoch: its last training loss, clean accuracy and the 24 noise accuracies."""
    return {k: v for k, v in result.items() if k in ("train_loss", "test_acc") or k.startswith("acc/")}
