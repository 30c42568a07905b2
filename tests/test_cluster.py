"""The cluster path: cluster configs valid for Ray's launcher, and a real two-node Ray cluster on this machine
with an MLflow tracking server, a sweep submitted with `ray job submit`, and a worker that leaves mid-sweep."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import jsonschema
import mlflow
import pandas as pd
import pytest
import ray
import yaml

from sweep.aggregate import main as aggregate_main
from tests.datasets import write_mnist
from tests.processes import (
    BIN,
    kill,
    ray_dashboard_address,
    ray_gcs_port,
    reserved_port,
    start_mlflow_server,
    stop,
    wait_for,
)

PROJECT = Path(__file__).resolve().parents[1]
PASSWORD = "two-nodes-test-password"  # of the tracking server's admin user


@pytest.mark.parametrize("config", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_configs_validate_against_rays_own_schema(config):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    text = (PROJECT / config).read_text()
    cluster = yaml.safe_load(text)
    jsonschema.validate(cluster, schema)

    head_commands = " ".join(cluster["head_start_ray_commands"])
    # The tracking server binds to the head's private address, never to every interface, and lets in only
    # who has the password made on the head (kept to its user): the server reads it from server.env, the
    # drivers from MLflow's own credentials file; `ray start` is given neither, so no Ray process holds it.
    assert (
        "mlflow server --app-name basic-auth --host $(hostname -I | awk '{print $1}') --port 5000 --workers 1"
        in head_commands
    )
    assert "umask 077" in head_commands and "secrets.token_urlsafe(24)" in head_commands
    assert (
        "ln -sf /home/ray/mlflow/client-credentials /home/ray/.mlflow/credentials" in cluster["head_start_ray_commands"]
    )
    server = next(c for c in cluster["head_start_ray_commands"] if "nohup mlflow server" in c)
    assert server.startswith("(set -a && . /home/ray/mlflow/server.env && ") and server.endswith("2>&1 &)")
    ray_start = cluster["head_start_ray_commands"][-1]
    assert "ray start --head" in ray_start and "set -a" not in ray_start and "credentials" not in ray_start
    assert "MLFLOW_TRACKING_PASSWORD" not in text
    # The tracking database on the head machine's disk, outside the container; never on NFS.
    assert "--backend-store-uri sqlite:////home/ray/mlflow/mlflow.db" in head_commands
    assert re.fullmatch(r"-v /\S+:/home/ray/mlflow", cluster["docker"]["head_run_options"][0])
    assert "/shared/" not in cluster["docker"]["head_run_options"][0]
    assert "0.0.0.0" not in head_commands
    assert "--artifacts-destination" in head_commands
    assert "pip install -q -e /home/ray/pushpull-sweep" in cluster["setup_commands"]
    assert re.fullmatch(r"rayproject/ray:\d+\.\d+\.\d+-py3\d+-cu1\d+", cluster["docker"]["image"])
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY", text)


def test_aws_cluster_has_a_cpu_head_and_single_gpu_workers():
    cluster = yaml.safe_load((PROJECT / "cluster.yaml").read_text())
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}  # trials go to the GPU workers
    worker = types["gpu_worker"]
    assert worker["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p3.2", "g4dn."))
    assert worker["min_workers"] == 0 and worker["max_workers"] <= cluster["max_workers"]
    # A GPU worker whose driver cannot run the torch build fails its setup, on an AMI chosen for its driver.
    # (A node type's own worker_setup_commands would replace setup_commands: the project would not be installed.)
    assert "worker_setup_commands" not in worker and cluster["worker_setup_commands"] == ["python -m sweep.devices"]
    assert worker["node_config"]["ImageId"].startswith("ami-")
    assert cluster["initialization_commands"] == ["mkdir -p /home/ubuntu/pushpull-mlflow"]


def test_the_lab_clusters_workers_check_their_driver_as_they_start():
    cluster = yaml.safe_load((PROJECT / "cluster-local.yaml").read_text())
    assert cluster["worker_setup_commands"] == ["python -m sweep.devices"]


@contextlib.contextmanager
def ray_nodes(root: Path, worker_prefix: tuple[str, ...] = ()):
    """A Ray head and a worker node (own temp dir, custom resource ``second_node``) on this machine, one CPU each,
    for the ``with`` block: their GCS address, dashboard URL, environment, the worker's process and the alive
    nodes (``ray list nodes``). The worker's ``ray start`` runs under ``worker_prefix`` (a command that ends by
    running its arguments). Logs in ``root``; both nodes stopped after the block, even on failure. Ray binds
    its ports itself (0) and says which, but for the head's Ray client server, which takes no 0 (and would take
    10001): it gets a port this test keeps (:func:`tests.processes.reserved_port`)."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    cwd = root / "head"
    cwd.mkdir()
    # Ray's socket paths must stay under 108 bytes: its temp dirs go in a short folder of their own.
    short = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    started: list[subprocess.Popen] = []  # stopped cleanly (SIGTERM)

    def start(args: list[str], log: str) -> subprocess.Popen:
        process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=open(root / log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append(process)
        return process

    def nodes() -> list[dict]:
        listing = subprocess.run(
            [str(BIN / "ray"), "list", "nodes", "--address", f"http://{dashboard}", "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [n for n in json.loads(listing.stdout) if n["state"] == "ALIVE"]

    keep = contextlib.ExitStack()  # the ports this test keeps
    try:
        common = ["--num-cpus=1", "--dashboard-agent-listen-port=0", "--block", "--disable-usage-stats"]
        head = start(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--port=0",
                "--dashboard-port=0",
                "--dashboard-host=127.0.0.1",
                f"--ray-client-server-port={keep.enter_context(reserved_port())}",
                f"--temp-dir={short / 'head'}",
                *common,
            ],
            "head.log",
        )

        def head_up() -> tuple[int, str] | None:
            """The head's GCS port and dashboard address, once it is up; None until then."""
            assert head.poll() is None, f"the Ray head exited: {(root / 'head.log').read_text()[-3000:]}"
            gcs, dashboard = ray_gcs_port(short / "head"), ray_dashboard_address(root / "head.log")
            if gcs is None or dashboard is None:
                return None
            up = urllib.request.urlopen(f"http://{dashboard}/api/version", timeout=2).status == 200
            return (gcs, dashboard) if up else None

        gcs, dashboard = wait_for(head_up, 90, "Ray head")
        worker = start(
            [
                *worker_prefix,
                str(BIN / "ray"),
                "start",
                f"--address=127.0.0.1:{gcs}",
                '--resources={"second_node": 1}',
                f"--temp-dir={short / 'worker'}",
                *common,
            ],
            "worker.log",
        )
        alive = wait_for(lambda: len(nodes()) == 2 and nodes(), 90, "two Ray nodes")
        yield {
            "gcs": f"127.0.0.1:{gcs}",
            "dashboard": f"http://{dashboard}",
            "env": env,
            "worker": worker,
            "worker_node": next(n for n in alive if not n["is_head_node"]),
            "head_node": next(n for n in alive if n["is_head_node"]),
        }
    finally:
        for process in reversed(started):
            stop(process, grace=5)  # the head takes 30 s and more to end on SIGTERM after its worker left
        shutil.rmtree(short, ignore_errors=True)
        keep.close()


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    """A Ray head and a worker node (:func:`ray_nodes`) and an MLflow server, all local."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    with ray_nodes(tmp_path) as nodes:
        # The tracking server as cluster.yaml runs it: MLflow's basic-auth app; the driver (started by the head's
        # job supervisor, which inherits the head's environment) and this test use the credentials.
        server, tracking = start_mlflow_server(
            tmp_path / "server", tmp_path / "mlflow.log", auth_password=PASSWORD, workers=1
        )
        try:
            yield {
                **nodes,
                "tracking": tracking,
                "worker_node": nodes["worker_node"]["node_id"],
                "head_node": nodes["head_node"]["node_id"],
            }
        finally:
            kill(server)  # a server stopped with SIGTERM waits up to 30 s for its clients' open connections


EPOCHS = 24  # with 100 batches an epoch: long enough to take the worker away mid-trial, not between trials


def test_sweep_submitted_to_a_two_node_cluster_logs_every_trial_to_the_tracking_server(two_nodes, tmp_path):
    data = tmp_path / "data"
    write_mnist(data, n_train=6400, n_test=100)
    storage = tmp_path / "storage"
    submit = subprocess.Popen(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            two_nodes["dashboard"],
            "--",
            sys.executable,
            "-m",
            "sweep.run",
            "lenet",
            "--profile",
            "smoke",
            "--set",
            f"epochs={EPOCHS}",
            "--address",
            "auto",
            "--tracking-uri",
            two_nodes["tracking"],
            "--storage",
            str(storage),
            "--data-root",
            str(data),
        ],
        env=two_nodes["env"],
        stdout=open(tmp_path / "job.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = mlflow.MlflowClient(two_nodes["tracking"])
    try:

        def runs() -> list:
            experiment = client.get_experiment_by_name("lenet")
            return [] if experiment is None else client.search_runs([experiment.experiment_id])

        def on_worker(finished: bool, max_epoch: int = EPOCHS) -> list[str]:
            """Keys of the trials whose latest report (Tune's own record: MLflow may lag behind it) came
            from the worker node, finished or not, at most at epoch ``max_epoch``."""
            keys = []
            for path in (storage / "lenet").glob("*/result.json"):
                lines = path.read_text().splitlines()
                last = json.loads(lines[-1]) if lines else {}
                if (
                    last.get("node_id") == two_nodes["worker_node"]
                    and (last["epoch"] == EPOCHS) == finished
                    and last["epoch"] <= max_epoch
                ):
                    keys.append(path.parent.name)
            return keys

        # Once the worker node has finished a trial and is early in another (an epoch takes about half a
        # second, so about 10 s of training are left), take it away.
        wait_for(lambda: on_worker(finished=True), 240, "a trial finished on the worker node")
        cut = wait_for(
            lambda: on_worker(finished=False, max_epoch=4), 120, "a trial early in training on the worker node"
        )
        stop(two_nodes["worker"])
        assert submit.wait(timeout=400) == 0, (tmp_path / "job.log").read_text()[-3000:]
    finally:
        stop(submit)

    final = runs()
    assert len(final) == 8 and all(r.info.status == "FINISHED" for r in final)
    assert {r.data.tags["ray_node_id"] for r in final} == {two_nodes["head_node"], two_nodes["worker_node"]}
    # The trial of the lost worker restarted from its last checkpoint into the same run, and finished.
    restarted = next(r for r in final if r.data.tags["trial_key"] == cut[0])
    assert int(restarted.data.tags["restarts"]) >= 1 and restarted.data.tags["ray_node_id"] == two_nodes["head_node"]
    assert restarted.data.metrics["epoch"] == EPOCHS
    assert all(len([m for m in r.data.metrics if m.startswith("acc/")]) == 24 for r in final)
    # Workers and driver logged over HTTP only: no local MLflow store anywhere.
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("mlruns"))

    assert aggregate_main(["--tracking-uri", two_nodes["tracking"], "--out", str(tmp_path / "tables")]) == 0
    results = pd.read_parquet(tmp_path / "tables" / "results.parquet")
    assert len(results) == 8 * (1 + 22) and results["trial_key"].nunique() == 8  # clean once, 22 noisy settings


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def mount_namespaces_work(folder: Path) -> bool:
    """Whether this process may give a command a mount namespace of its own with a tmpfs over ``folder``."""
    tried = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0"', str(folder)],
        capture_output=True,
        timeout=30,
    )
    return tried.returncode == 0


@pytest.fixture(scope="module")
def blind_worker(tmp_path_factory):
    """Two Ray nodes of which the worker cannot see the folder ``storage`` (its ``ray start`` runs in a mount
    namespace of its own, an empty tmpfs over the folder), and sees every other: the cluster (:func:`ray_nodes`),
    the folder, and a tiny MNIST."""
    root = tmp_path_factory.mktemp("blind")
    storage = root / "storage"
    storage.mkdir()
    if shutil.which("unshare") is None or not mount_namespaces_work(storage):
        pytest.skip("needs unshare -m and mount -t tmpfs (root, or CAP_SYS_ADMIN) to hide a folder from a Ray node")
    write_mnist(root / "data", n_train=3200, n_test=100)
    hide = ("unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"')
    with ray_nodes(root, worker_prefix=(*hide, str(storage))) as nodes:
        yield {**nodes, "storage": storage, "data": root / "data"}


def sweep_on(cluster: dict, storage: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m sweep.run lenet --profile smoke`` joining ``cluster`` at its GCS address, ``args`` added."""
    return subprocess.run(
        [sys.executable, "-m", "sweep.run", "lenet", "--profile", "smoke", "--address", cluster["gcs"]]
        + ["--storage", str(storage), "--data-root", str(cluster["data"]), *args],
        cwd=PROJECT,
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("where", "dry"),
    [(".", ["--dry-run"]), (".", []), ("sub/sweeps", ["--dry-run"])],
    ids=["dry-run", "launch", "dry-run-storage-not-made-yet"],
)
def test_a_storage_a_worker_node_cannot_see_stops_the_preflight_with_one_line(blind_worker, where, dry):
    storage = blind_worker["storage"] / where
    before = listing(blind_worker["storage"])
    done = sweep_on(blind_worker, storage, *dry)
    worker = blind_worker["worker_node"]
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"sweep.run: error: the storage {storage.resolve()} is not shared with every node of the Ray cluster: "
        f"Ray node {worker['node_ip']} ({worker['node_id'][:8]}) cannot see it, and trials there could not keep "
        "their checkpoints; pass --storage s3://BUCKET/PATH, or a folder shared at the same path on every node (NFS)"
    ]
    # No trial started (a launch prints its sweep line before Tune runs), and the marker went again.
    assert done.stdout == ""
    assert listing(blind_worker["storage"]) == before


def test_a_storage_every_node_sees_passes_the_preflight_and_keeps_no_marker(blind_worker):
    shared = blind_worker["storage"].parent / "shared"
    shared.mkdir()
    done = sweep_on(blind_worker, shared, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.splitlines()[-3] == "8 trials"
    assert listing(shared) == []


# --- joining a cluster that answers but cannot be joined -----------------------------------------------


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.\nmore"),
            "cannot join the Ray cluster at 127.0.0.1:6379: Could not find any running Ray instance. Please "
            "specify the one to connect to.",
        ),
        (
            ValueError("Invalid address 127.0.0.1:6379"),
            "cannot join the Ray cluster at 127.0.0.1:6379: Invalid address 127.0.0.1:6379",
        ),
        (ConnectionError(), "cannot join the Ray cluster at 127.0.0.1:6379: ConnectionError"),
    ],
)
def test_join_ray_says_in_one_line_why_a_cluster_that_answers_cannot_be_joined(monkeypatch, error, line):
    from sweep import cluster

    seen = []

    def fails(**kwargs):
        seen.append((kwargs, os.environ.get("MLFLOW_TRACKING_PASSWORD")))
        raise error

    monkeypatch.setattr(cluster, "reach_ray", lambda address: None)  # something answers at the address
    monkeypatch.setattr(ray, "init", fails)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "driver-only")
    with pytest.raises(cluster.RayUnavailable) as raised:
        cluster.join_ray("127.0.0.1:6379", verbose=False)
    assert str(raised.value) == line
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no chained traceback
    assert seen == [({"address": "127.0.0.1:6379", "log_to_driver": False, "logging_level": 40}, None)]
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "driver-only"  # hidden from Ray's processes only
