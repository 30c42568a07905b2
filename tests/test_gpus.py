"""GPU clusters on a machine without a GPU: Ray nodes that declare GPUs (``ray start --num-gpus``), an
autoscaler's node types, and every process of a test's cluster watched for calls into CUDA.

What a user of a real GPU cluster meets: a GPU that torch cannot use stops the sweep at the pre-flight
with one line, or, on a GPU node that joins later, fails every trial in its first seconds with that line
and without retries; CPU trials on a GPU node never touch CUDA; the plan counts the GPUs the autoscaler
can add."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
from ray.core.generated import autoscaler_pb2
from ray.experimental import internal_kv

from sweep import gpus
from sweep.catalog import build_sweep
from tests.datasets import write_mnist
from tests.processes import BIN, ray_gcs_port, reserved_port, stop, wait_for

PROJECT = Path(__file__).resolve().parents[1]
CUDA_GUARD = PROJECT / "tests" / "cuda_guard"  # its sitecustomize makes CUDA calls raise (see there)
NO_DRIVER = "no NVIDIA driver on this node: libcuda.so.1 does not load"
LAUNCHER_CONFIG = {  # what `ray up cluster.yaml` leaves on the head, resources filled in from the instance types
    "cluster_name": "pushpull-sweep",
    "max_workers": 8,
    "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 0}, "node_config": {}},
        "gpu_worker": {"min_workers": 0, "max_workers": 8, "resources": {"CPU": 8, "GPU": 1}, "node_config": {}},
    },
}

pytestmark = pytest.mark.skipif(
    os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None,
    reason="these tests need a machine without an NVIDIA driver: they declare GPUs that torch cannot use",
)


# --- the survey of a cluster's GPUs, on the test session's Ray ------------------------------------------


def test_a_cluster_without_gpus_or_autoscaler_has_none_to_offer(ray_cluster, monkeypatch, tmp_path):
    monkeypatch.setattr(gpus, "LAUNCHER_CONFIG", tmp_path / "absent.yaml")
    survey = gpus.survey_gpus()
    assert (survey.live, survey.autoscaled, survey.any) == (0, 0, False)
    assert survey.describe() == "no GPU on its live nodes, no GPU node type in its autoscaler"


def test_the_gpus_of_the_node_types_ray_up_left_for_the_autoscaler_count(ray_cluster, monkeypatch, tmp_path):
    (tmp_path / "ray_bootstrap_config.yaml").write_text(json.dumps(LAUNCHER_CONFIG))  # ray up writes JSON
    monkeypatch.setattr(gpus, "LAUNCHER_CONFIG", tmp_path / "ray_bootstrap_config.yaml")
    survey = gpus.survey_gpus()
    assert (survey.live, survey.autoscaled, survey.node_types, survey.any) == (0, 8, ("gpu_worker",), True)
    assert survey.describe() == "no GPU on its live nodes, up to 8 from its autoscaler's node types (gpu_worker)"


def test_the_gpus_of_the_node_types_an_autoscaler_reports_to_ray_count(ray_cluster, monkeypatch, tmp_path):
    monkeypatch.setattr(gpus, "LAUNCHER_CONFIG", tmp_path / "absent.yaml")
    config = autoscaler_pb2.ClusterConfig()
    for name, gpu, count in (("cpu_worker", 0, 10), ("a100x4", 4, 2), ("h100x8", 8, -1)):
        group = config.node_group_configs.add(name=name, max_count=count)
        group.resources["CPU"] = 32
        if gpu:
            group.resources["GPU"] = gpu
    internal_kv._internal_kv_put(
        GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, config.SerializeToString(), namespace=GCS_AUTOSCALER_STATE_NAMESPACE
    )
    try:
        survey = gpus.survey_gpus()
    finally:
        internal_kv._internal_kv_del(GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, namespace=GCS_AUTOSCALER_STATE_NAMESPACE)
    assert (survey.autoscaled, survey.node_types) == (4 * 2 + 8 * 1, ("a100x4", "h100x8"))


# --- real clusters that declare GPUs ----------------------------------------------------------------------


class Cluster:
    """Ray nodes started by a test on this machine, every process of them (and of a driver run with
    :meth:`env`) loaded with the CUDA guard, which raises on any CUDA call while :attr:`guard` exists."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.guard = root / "cuda-forbidden"
        # Ray's socket paths must stay under 108 bytes: its temp dirs go in a short folder of their own.
        self.short = Path(tempfile.mkdtemp(prefix="rg", dir="/tmp"))
        self.nodes: list[subprocess.Popen] = []
        self.port = None
        self.kept = contextlib.ExitStack()  # the ports the test keeps for its nodes (tests.processes.reserved_port)

    def env(self, **extra: str) -> dict[str, str]:
        return dict(
            os.environ,
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
            PYTHONPATH=os.pathsep.join([str(CUDA_GUARD), str(PROJECT)]),
            CUDA_GUARD_FILE=str(self.guard),
            **extra,
        )

    def start_node(self, gpus: int, cpus: int) -> None:
        """The head (first call) or a worker that joins it, declaring ``gpus`` GPUs and ``cpus`` CPUs. Ray binds
        their ports itself (0) and says which, but for the head's Ray client server, which takes no 0 (and would
        take 10001): it gets a port the test keeps."""
        name = f"node{len(self.nodes)}"
        if self.port is None:
            client = self.kept.enter_context(reserved_port())
            where = ["--head", "--port=0", "--include-dashboard=false", f"--ray-client-server-port={client}"]
        else:
            where = [f"--address=127.0.0.1:{self.port}"]
        node = subprocess.Popen(
            [str(BIN / "ray"), "start", *where, "--dashboard-agent-listen-port=0", f"--num-gpus={gpus}"]
            + [f"--num-cpus={cpus}", f"--temp-dir={self.short / name}", "--block", "--disable-usage-stats"],
            cwd=self.root,
            env=self.env(),
            stdout=open(self.root / f"{name}.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.nodes.append(node)
        if self.port is None:

            def head_up() -> int | None:
                assert node.poll() is None, f"the Ray head exited: {(self.root / f'{name}.log').read_text()[-3000:]}"
                return ray_gcs_port(self.short / name)

            self.port = wait_for(head_up, 90, "the Ray head's GCS port")
        wait_for(lambda: self.resources().get("GPU", 0) >= gpus and self.alive() == len(self.nodes), 90, name)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ray(self, code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", f"import ray, json\nray.init(address='{self.address}')\n{code}"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def resources(self) -> dict:
        return json.loads(self._ray("print(json.dumps(ray.cluster_resources()))"))

    def alive(self) -> int:
        return int(self._ray("print(sum(n['Alive'] for n in ray.nodes()))"))

    def stop(self) -> None:
        for node in reversed(self.nodes):
            stop(node, grace=10)
        shutil.rmtree(self.short, ignore_errors=True)
        self.kept.close()


@pytest.fixture
def cluster(tmp_path):
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=640, n_test=50)
    return root


def sweep_command(cluster: Cluster, *args: str) -> list[str]:
    """``python -m sweep.run lenet --profile smoke`` on ``cluster``, with ``args``."""
    return [sys.executable, "-m", "sweep.run", "lenet", "--profile", "smoke", "--address", cluster.address, *args]


def sweep_run(cluster: Cluster, *args: str, home: Path | None = None, **popen) -> subprocess.CompletedProcess:
    env = cluster.env(**({"HOME": str(home)} if home else {}))
    return subprocess.run(sweep_command(cluster, *args), cwd=PROJECT, env=env, capture_output=True, text=True, **popen)


def test_a_gpu_torch_cannot_use_stops_the_preflight_with_one_line_and_cpu_trials_never_call_cuda(cluster, mnist):
    cluster.start_node(gpus=1, cpus=2)
    storage = cluster.root / "store"

    stopped = sweep_run(cluster, "--gpus", "require", "--data-root", str(mnist), "--storage", str(storage), timeout=180)
    assert stopped.returncode == 2, stopped.stderr
    assert re.fullmatch(
        r"sweep\.run: error: a task on the cluster's GPU node \S+ holds GPU 0 but torch \S+ cannot use it "
        rf"\({re.escape(NO_DRIVER)}\): use an image/AMI with driver >= 580 \(CUDA 13\.0\); so would every GPU trial "
        r"\(--gpus none: CPUs only\)\n",
        stopped.stderr,
    )
    assert not storage.exists()

    # The same node, its GPU left alone: every process of the cluster and the driver raise on a CUDA call.
    cluster.guard.touch()
    trained = sweep_run(cluster, "--gpus", "none", "--data-root", str(mnist), "--storage", str(storage), timeout=400)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "CudaCalled" not in trained.stdout + trained.stderr
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lenet").experiment_id])
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["precision"] for r in runs} == {"fp32"}

    # Scoring the sweep on the cluster: its scoring tasks take the GPU, which torch cannot use there.
    cluster.guard.unlink()
    evaluate = [sys.executable, "-m", "sweep.evaluate", "lenet", "--suite", "shot", "--storage", str(storage)]
    evaluate += ["--data-root", str(mnist), "--address", cluster.address]
    scored = subprocess.run(evaluate, cwd=PROJECT, env=cluster.env(), capture_output=True, text=True, timeout=300)
    assert scored.returncode == 2, scored.stdout[-3000:] + scored.stderr[-3000:]
    assert re.fullmatch(
        r"sweep\.evaluate: error: a scoring task on the cluster holds GPU 0 but torch \S+ cannot use it "
        rf"\({re.escape(NO_DRIVER)}\): use an image/AMI with driver >= 580 \(CUDA 13\.0\)\n",
        scored.stderr,
    ), scored.stderr


def test_a_gpu_node_the_autoscaler_brings_is_planned_for_and_checked_before_any_trial(cluster, mnist):
    """The autoscaler's case: no GPU at launch (the pre-flight cannot probe one), the plan counts the node
    types' GPUs, the driver waits for the first GPU worker, and checks it before any trial starts."""
    cluster.start_node(gpus=0, cpus=1)
    home = cluster.root / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(json.dumps(LAUNCHER_CONFIG))
    storage = cluster.root / "store"

    for mode in ("auto", "require"):  # auto counts the GPUs the autoscaler can add
        planned = sweep_run(cluster, "--dry-run", "--gpus", mode, "--data-root", str(mnist), home=home, timeout=120)
        assert planned.returncode == 0, planned.stderr
        lines = planned.stdout.splitlines()
        assert lines[-2:] == [
            f"GPU trials (--gpus {mode}), planned from the cluster: no GPU on its live nodes, up to 8 from its "
            "autoscaler's node types (gpu_worker)",
            "precision fp32 for A, B, C, D, PA, PB, PC, PD: H200: bf16 trains LeNet A 27 % and PA 17 % slower "
            "(launch-bound)",
        ]
        keys = [spec.key for spec in build_sweep("lenet", profile="smoke")]
        assert [line.split()[0] for line in lines[1:9]] == keys

    args = ["--gpu-wait", "120", "--data-root", str(mnist), "--storage", str(storage)]
    with open(cluster.root / "sweep.log", "w") as log:
        driver = subprocess.Popen(
            sweep_command(cluster, *args),
            cwd=PROJECT,
            env=cluster.env(HOME=str(home)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "waiting up to 120 s for GPU workers" in (cluster.root / "sweep.log").read_text(), 120, "wait")
        cluster.start_node(gpus=1, cpus=2)
        assert driver.wait(timeout=300) == 2
    finally:
        stop(driver)
    output = (cluster.root / "sweep.log").read_text().splitlines()
    assert output[0] == "waiting up to 120 s for GPU workers to join the Ray cluster (--gpus auto)"
    assert re.fullmatch(
        r"sweep\.run: error: a task on the cluster's GPU node \S+ holds GPU 0 but torch \S+ cannot use it "
        rf"\({re.escape(NO_DRIVER)}\): use an image/AMI with driver >= 580 \(CUDA 13\.0\); so would every GPU trial "
        r"\(--gpus none: CPUs only\)",
        output[-1],
    )
    assert not storage.exists()  # no trial started, nothing recorded
