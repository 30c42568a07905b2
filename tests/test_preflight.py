"""The pre-flight of ``python -m sweep.run``: each problem found before Ray starts ends the command with
one line on stderr and exit status 2, with and without --dry-run, and creates nothing (no storage folder,
no MLflow store, no data folder)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torchvision import datasets

from sweep import run
from sweep.catalog import build_sweep
from sweep.tracking import TrialOutcome, reconcile_results
from tests.datasets import write_mnist
from tests.processes import closed_port

PROJECT = Path(__file__).resolve().parents[1]
MNIST_FILES = (
    "the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte, or their .gz) in {root}/MNIST/raw, or pass --data-root DIR"
)
DRY = [pytest.param([], id="launch"), pytest.param(["--dry-run"], id="dry-run")]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=200, n_test=50)
    return root


@pytest.fixture
def closed():
    """A port of 127.0.0.1 that refuses connections for the whole test (tests.processes.closed_port)."""
    with closed_port() as port:
        yield port


@pytest.fixture(autouse=True)
def no_download(monkeypatch, closed):
    """A download of MNIST fails at once, online or not: its mirrors are a closed local port."""
    monkeypatch.setattr(datasets.MNIST, "mirrors", [f"http://127.0.0.1:{closed}/"])


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def fails_with_one_line(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    """``sweep.run.main(args)`` exits 2 with exactly ``message`` on stderr, and creates nothing in tmp_path."""
    before = listing(tmp_path)
    assert run.main(args) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"sweep.run: error: {message}"]
    assert listing(tmp_path) == before


@pytest.mark.parametrize("dry", DRY)
@pytest.mark.parametrize("exists", [False, True], ids=["absent-root", "empty-root"])
def test_a_missing_data_set_stops_and_creates_no_data_folder(tmp_path, capsys, dry, exists):
    root = tmp_path / "data"
    if exists:
        root.mkdir()
    args = ["lenet", "--profile", "smoke", "--storage", str(tmp_path / "store"), "--data-root", str(root), *dry]
    where = MNIST_FILES.format(root=root)
    if not exists:  # a given root that is not there is a typo: nothing is downloaded into it
        message = f"the data root {root} does not exist: put {where}"
    elif dry:
        message = f"mnist is not in {root} (a dry run downloads nothing): put {where}"
    else:  # the mirrors: a closed port on this machine
        message = f"mnist is not in {root} and could not be downloaded (Connection refused): put {where}"
    fails_with_one_line(capsys, tmp_path, args, message)
    assert not (root / "MNIST").exists() and root.exists() == exists


@pytest.mark.parametrize("dry", DRY)
def test_a_data_set_that_does_not_load_stops(tmp_path, capsys, dry):
    raw = write_mnist(tmp_path / "data", n_train=20, n_test=10)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03")  # the header of an IDX file, cut short
    args = ["lenet", "--storage", str(tmp_path / "store"), "--data-root", str(tmp_path / "data"), *dry]
    before = listing(tmp_path)
    assert run.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"sweep.run: error: mnist in {tmp_path / 'data'} does not load (")
    assert err.rstrip().endswith(f"put {MNIST_FILES.format(root=tmp_path / 'data')}")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("dry", DRY)
@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("/proc/x", "cannot use the storage /proc/x: cannot create a folder in /proc (No such file or directory)"),
        ("{tmp}/file/store", "cannot use the storage {tmp}/file/store: {tmp}/file is not a directory"),
        ("{tmp}/file", "cannot use the storage {tmp}/file: {tmp}/file is not a directory"),
    ],
    ids=["proc", "below-a-file", "a-file"],
)
def test_an_unusable_storage_stops(tmp_path, capsys, mnist_root, dry, storage, message):
    (tmp_path / "file").write_text("not a folder")
    storage = storage.format(tmp=tmp_path)
    args = ["lenet", "--storage", storage, "--data-root", str(mnist_root), *dry]
    fails_with_one_line(capsys, tmp_path, args, message.format(tmp=tmp_path))


# Root writes in a folder whatever its permission bits: for root the folder is a read-only bind mount of
# itself, in a mount namespace of the command's own (unshare -m), where nobody may write.
READ_ONLY_MOUNT = (
    "unshare", "-m", "--propagation", "private", "sh", "-c",
    'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"',
)  # fmt: skip


def read_only_prefix(folder: Path) -> tuple[str, ...]:
    """The command prefix under which ``folder`` cannot be written by this user (root included)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ()
    tried = subprocess.run([*READ_ONLY_MOUNT, str(folder), "true"], capture_output=True, timeout=30)
    if shutil.which("unshare") is None or tried.returncode != 0:
        pytest.skip("root writes in a read-only folder, and cannot mount one here (unshare -m, mount -o ro,bind)")
    return (*READ_ONLY_MOUNT, str(folder))


@pytest.mark.parametrize("dry", DRY)
def test_a_read_only_storage_folder_stops(tmp_path, mnist_root, dry):
    folder = tmp_path / "ro"
    folder.mkdir()
    prefix = read_only_prefix(folder)
    before = listing(tmp_path)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "sweep.run", "lenet", "--storage", str(folder / "store")]
            + ["--data-root", str(mnist_root), *dry],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        folder.chmod(0o755)
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [f"sweep.run: error: cannot use the storage {folder / 'store'}: {folder} is not writable"],
    )
    assert listing(tmp_path) == before


@pytest.mark.parametrize("dry", DRY)
@pytest.mark.parametrize(
    ("uri", "message"),
    [
        pytest.param(
            "sqlite:///{tmp}/file/mlflow.db",
            "cannot create the MLflow store {uri}: {tmp}/file is not a directory",
            id="embedded-store-below-a-file",
        ),
        pytest.param(
            "sqlite:///{tmp}/file",
            "cannot read the MLflow store {uri}: file is not a database",
            id="embedded-store-that-is-no-database",
        ),
        pytest.param(
            "http://127.0.0.1:{port}",
            "cannot reach the MLflow tracking server at {uri}: [Errno 111] Connection refused",
            id="unreachable-server",
        ),
        pytest.param(
            "http://[::1",
            "cannot reach the MLflow tracking server at {uri}: Invalid IPv6 URL",
            id="server-url-that-does-not-parse",
        ),
        pytest.param(
            "file://{tmp}/mlruns",
            "MLflow keeps no runs in a file store such as {uri} unless MLFLOW_ALLOW_FILE_STORE=true: use "
            "sqlite:///PATH (an embedded store) or http(s)://HOST:PORT (a tracking server)",
            id="file-store",
        ),
        pytest.param(
            "mssql+pyodbc://user@127.0.0.1/db",
            "cannot open the MLflow store {uri}: No module named 'pyodbc'",
            id="database-without-its-driver",
        ),
        pytest.param(
            "foo://bar",
            "MLflow has no tracking store for foo://bar: use http(s)://HOST:PORT (a tracking server) or "
            "sqlite:///PATH (an embedded store)",
            id="no-store-for-the-scheme",
        ),
    ],
)
def test_an_unusable_tracking_store_stops(tmp_path, capsys, mnist_root, closed, dry, uri, message):
    (tmp_path / "file").write_text("not a folder")
    uri = uri.format(tmp=tmp_path, port=closed)
    args = ["lenet", "--storage", str(tmp_path / "store"), "--tracking-uri", uri, "--data-root", str(mnist_root), *dry]
    fails_with_one_line(capsys, tmp_path, args, message.format(uri=uri, tmp=tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None, reason="the postgres extra is installed here")
@pytest.mark.parametrize("dry", DRY)
def test_a_postgresql_store_without_its_driver_names_the_extra_and_never_the_password(
    tmp_path, capsys, mnist_root, dry, monkeypatch
):
    monkeypatch.setenv("PGPASSWORD", "")  # the command sets it: taken back after the test
    uri = "postgresql://mlflow:s3cret@127.0.0.1:5432/mlflow"
    args = ["lenet", "--storage", str(tmp_path / "store"), "--tracking-uri", uri, "--data-root", str(mnist_root), *dry]
    fails_with_one_line(
        capsys,
        tmp_path,
        args,
        "cannot open the MLflow store postgresql://mlflow@127.0.0.1:5432/mlflow: No module named 'psycopg' "
        "(pip install 'pushpull-sweep[postgres]')",
    )
    assert os.environ["PGPASSWORD"] == "s3cret"  # where libpq takes it from


@pytest.mark.parametrize("dry", DRY)
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--max-concurrent", "0"], "--max-concurrent must be >= 1, got 0"),
        (["--overhead-budget", "0"], "--overhead-budget must be > 0, got 0"),
        (["--overhead-budget", "nan"], "--overhead-budget must be > 0, got nan"),
        (["--gpu-wait", "-1"], "--gpu-wait must be >= 0, got -1"),
        (["--max-failures", "-2"], "--max-failures must be >= 0 (or -1: without limit), got -2"),
        (["--address", "127.0.0.1:{port}"], "cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused"),
        (["--address", "localhost"], "localhost is no Ray address: use HOST:PORT, auto or ray://HOST:PORT"),
        (
            ["--address", "ray://127.0.0.1:{port}"],
            "cannot reach the Ray cluster at ray://127.0.0.1:{port}: Connection refused",
        ),
        (
            ["--address", "http://127.0.0.1:8265"],
            "http://127.0.0.1:8265 is no Ray address: use HOST:PORT, auto or ray://HOST:PORT",
        ),
        (["--resume", "--sync"], "--resume already delivers what MLflow lacks: use --resume or --sync, not both"),
        (["--resume"], "nothing to continue: no sweep 'lenet' in {tmp}/store"),
    ],
    ids=[
        "max-concurrent",
        "overhead-budget",
        "overhead-budget-nan",
        "gpu-wait",
        "max-failures",
        "address",
        "address-without-port",
        "ray-client-address",
        "dashboard-address",
        "resume-sync",
        "resume",
    ],
)
def test_impossible_options_stop(tmp_path, capsys, mnist_root, closed, dry, option, message):
    port = closed
    option = [text.format(port=port) for text in option]
    args = ["lenet", "--storage", str(tmp_path / "store"), "--data-root", str(mnist_root), *option, *dry]
    fails_with_one_line(capsys, tmp_path, args, message.format(port=port, tmp=tmp_path))


@pytest.mark.parametrize("dry", DRY)
def test_an_existing_sweep_without_resume_stops(tmp_path, capsys, mnist_root, dry):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "lenet.sweep.json").write_text("{}")
    args = ["lenet", "--storage", str(tmp_path / "store"), "--data-root", str(mnist_root), *dry]
    message = (
        f"sweep 'lenet' already exists in {tmp_path / 'store'}: continue it with --resume, or pass another --storage"
    )
    fails_with_one_line(capsys, tmp_path, args, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("dry", DRY)
def test_gpus_require_on_a_local_ray_without_gpu_stops_at_once(tmp_path, mnist_root, dry):
    # A subprocess: in this one a test's Ray may run already, which the sweep would join.
    before = listing(tmp_path)
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    args = ["lenet", "--storage", str(tmp_path / "store"), "--data-root", str(mnist_root), "--gpus", "require", *dry]
    result = subprocess.run(
        [sys.executable, "-m", "sweep.run", *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "sweep.run: error: --gpus require makes every trial ask for a GPU, and torch cannot use one on this machine "
        "(no NVIDIA driver on this node: libcuda.so.1 does not load) for the local Ray the trials would run on: use "
        "--gpus auto or none, or join a cluster with GPU workers (--address)"
    ]
    assert listing(tmp_path) == before


def test_a_successful_dry_run_prints_the_trials_and_creates_nothing(tmp_path, capsys):
    write_mnist(tmp_path / "data", n_train=20, n_test=10)
    before = listing(tmp_path)
    args = ["lenet", "--profile", "smoke", "--storage", str(tmp_path / "store"), "--data-root", str(tmp_path / "data")]
    assert run.main([*args, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[-3] == "8 trials"
    if not torch.cuda.is_available():
        # From this machine, or from the test session's Ray (no GPU either) when an earlier test started it.
        assert lines[-2].startswith("CPU-only trials (--gpus auto), planned from ")
        assert lines[-1] == "precision fp32 for A, B, C, D, PA, PB, PC, PD: CPU trials"
    assert [line.split()[0] for line in lines[1:-3]] == [spec.key for spec in build_sweep("lenet", profile="smoke")]
    assert [line.split()[-9] for line in lines[1:-3]] == ["fp32"] * 8  # the precision column
    assert listing(tmp_path) == before


def test_the_preflight_of_a_launch_loads_the_data_and_creates_nothing(tmp_path):
    write_mnist(tmp_path / "data", n_train=20, n_test=10)
    before = listing(tmp_path)
    args = run._parser().parse_args(
        ["lenet", "--storage", str(tmp_path / "store"), "--data-root", str(tmp_path / "data")]
    )
    plan = run.preflight(args)
    assert listing(tmp_path) == before
    assert plan.tracking_uri == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}" and plan.started is None
    assert list(plan.data) == ["mnist"] and plan.data["mnist"].train_images.shape == (20, 1, 28, 28)
    assert [spec.key for spec in plan.specs] == [spec.key for spec in build_sweep("lenet")]


def help_text_and_heavy_modules(command: str) -> tuple[str, str]:
    """``python -m sweep.COMMAND --help``'s text, and which heavy modules it loaded (a list as text)."""
    code = (
        "import sys, contextlib, io\n"
        f"from sweep.{command} import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(out.getvalue())\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'mlflow', 'ray', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.rsplit("\n", 2)[0], result.stdout.splitlines()[-1]


def test_help_is_plain_text_with_defaults_and_examples_and_loads_no_heavy_module():
    text, loaded = help_text_and_heavy_modules("run")
    assert loaded == "[]"
    assert "`" not in text
    for default in (
        "(default: paper)",
        "(default: the study's)",
        "(default: 2)",
        "(default: auto)",
        "(default: 600)",
    ):
        assert default in text
    assert "(default: 60)" in text and "(default: 0.05)" in text
    examples = text.split("\nexamples:\n", 1)[1]
    assert 4 <= sum(line.startswith("  python -m sweep.run") for line in examples.splitlines()) <= 7


@pytest.mark.parametrize(("command", "examples"), [("aggregate", 5), ("evaluate", 3)])
def test_the_help_of_the_other_command_lines_loads_no_heavy_module(command, examples):
    text, loaded = help_text_and_heavy_modules(command)
    assert loaded == "[]"
    assert "`" not in text and text.startswith(f"usage: python -m sweep.{command} ")
    listed = text.split("\nexamples:\n", 1)[1].splitlines()
    assert sum(line.startswith(f"  python -m sweep.{command}") for line in listed) == examples
    assert "\n\nexit status: 0 " in text


def test_reconcile_results_fails_the_runs_of_errored_trials_and_lists_every_problem():
    specs = build_sweep("lenet", profile="smoke")[:3]
    results = [
        SimpleNamespace(config={"spec": specs[0].to_dict()}, error=None, metrics={"health": "healthy"}),
        SimpleNamespace(config={"spec": specs[1].to_dict()}, error=RuntimeError("boom\nworker died"), metrics={}),
        SimpleNamespace(
            config={"spec": specs[2].to_dict()},
            error=None,
            metrics={"health": "diverged", "health_reason": "loss is nan at epoch 1 step 3"},
        ),
    ]
    submitted = []
    writer = SimpleNamespace(submit=lambda *call: submitted.append(call))
    outcomes = reconcile_results(results, writer)
    assert submitted == [("fail", specs[1], "worker died")]
    assert outcomes == [
        TrialOutcome(specs[0], "finished", {"health": "healthy"}),
        TrialOutcome(specs[1], "failed", {}, "worker died"),
        TrialOutcome(specs[2], "diverged", results[2].metrics, "loss is nan at epoch 1 step 3"),
    ]


@pytest.mark.parametrize(
    ("record", "damage"),
    [
        ("{not json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ('{"sweep": "lenet", "trial_keys": []}', "it has no tracking_uri"),
        ('{"sweep": "lenet", "tracking_uri": "sqlite:///{storage}/mlflow.db"}', "it has no trial_keys"),
    ],
    ids=["not-json", "no-tracking-uri", "no-trial-keys"],
)
@pytest.mark.parametrize("continued", [["--resume"], ["--resume", "--dry-run"], ["--sync"]])
def test_a_damaged_sweep_record_stops_a_continued_sweep(tmp_path, capsys, mnist_root, record, damage, continued):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "lenet.sweep.json").write_text(record)
    args = ["lenet", "--storage", str(tmp_path / "store"), "--data-root", str(mnist_root), *continued]
    fails_with_one_line(capsys, tmp_path, args, f"{tmp_path / 'store' / 'lenet.sweep.json'} is damaged: {damage}")


@pytest.mark.parametrize("dry", DRY)
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SWEEP_STORAGE", "{tmp}/from-env", "nothing to continue: no sweep 'lenet' in {tmp}/from-env"),
        (
            "SWEEP_DATA_ROOT",
            "{tmp}/data",
            "the data root {tmp}/data does not exist: put " + MNIST_FILES.format(root="{tmp}/data"),
        ),
        (
            "MLFLOW_TRACKING_URI",
            "foo://bar",
            "MLflow has no tracking store for foo://bar: use http(s)://HOST:PORT (a tracking server) or "
            "sqlite:///PATH (an embedded store)",
        ),
        ("RAY_ADDRESS", "127.0.0.1:{port}", "cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused"),
    ],
    ids=["storage", "data-root", "tracking-uri", "ray-address"],
)
def test_each_environment_default_is_used_when_its_option_is_absent(
    tmp_path, capsys, mnist_root, monkeypatch, closed, dry, variable, value, message
):
    port = closed
    value = value.format(tmp=tmp_path, port=port)
    monkeypatch.setenv(variable, value)
    args = ["lenet", "--profile", "smoke", *dry]
    if variable != "SWEEP_STORAGE":
        args += ["--storage", str(tmp_path / "store")]
    if variable != "SWEEP_DATA_ROOT":
        args += ["--data-root", str(mnist_root)]
    if variable == "SWEEP_STORAGE":
        args.append("--resume")  # a storage the command reads, so that the line names it
    fails_with_one_line(capsys, tmp_path, args, message.format(tmp=tmp_path, port=port))


@pytest.mark.parametrize("dry", DRY)
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--set", "epochs"], "--set 'epochs': expected KEY=VALUE"),
        (["--set", "foo.lr=1"], "--set 'foo.lr=1': a scope must be one of lenet., wrn., resnet., got 'foo'"),
        (["--set", "grad_clip=abc"], "invalid value in --set grad_clip=abc: grad_clip takes a number or none"),
        (["--set", "grad_clip=-1"], "invalid --set for A: grad_clip must be a number > 0 or none, got -1.0"),
        (["--set", "nesterov=maybe"], "invalid value in --set nesterov=maybe: nesterov takes true or false"),
        (
            ["--set", "milestones=a,b"],
            "invalid value in --set milestones=a,b: milestones takes whole numbers separated by commas (e.g. 5,10) or none",
        ),
        (["--seeds", "-1"], "--seeds must be an integer >= 1, got -1"),
    ],
    ids=["no-value", "bad-scope", "grad-clip-text", "grad-clip-negative", "nesterov", "milestones", "negative-seeds"],
)
def test_a_recipe_field_or_seed_count_that_makes_no_recipe_stops(tmp_path, capsys, mnist_root, dry, option, message):
    args = ["lenet", "--storage", str(tmp_path / "store"), "--data-root", str(mnist_root), *option, *dry]
    fails_with_one_line(capsys, tmp_path, args, message)
