import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.datasets import write_mnist

# Keep Ray quiet and small in tests: no dashboard, no usage reporting, the driver's stdout only.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# The tests choose their stores, data and cluster themselves: a user's defaults must not leak in.
for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "SWEEP_STORAGE", "SWEEP_DATA_ROOT", "RAY_ADDRESS"):
    os.environ.pop(variable, None)


@pytest.fixture(autouse=True)
def leaves_no_trace():
    """What a command's ``main()`` run in this process sets for itself (MLflow's client settings, Tune's
    reporter, the libraries' log levels and filters) is undone after each test: the next one starts as if alone."""
    from sweep.console import QUIETED_LOGGERS, TUNE_FAILURE_RECORDS

    environment = dict(os.environ)
    loggers = [logging.getLogger(name) for name in (*QUIETED_LOGGERS, *TUNE_FAILURE_RECORDS)]
    kept = [(logger, logger.level, list(logger.filters)) for logger in loggers]
    yield
    os.environ.clear()
    os.environ.update(environment)
    for logger, level, filters in kept:
        logger.setLevel(level)
        logger.filters[:] = filters


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session, with 4 logical CPUs so that 4 trials run at once, no GPU."""
    import ray

    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)  # CPU-only, even on a GPU machine
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def piped_smoke_sweep(tmp_path_factory):
    """The lenet smoke sweep (8 trials, one epoch each) run as a user runs it, in its own process with its
    own Ray, its whole output piped to a file: (storage, data root, output lines). Shared by several test
    modules: a test that changes the store works on a copy (shutil.copytree; the store can be moved)."""
    root = tmp_path_factory.mktemp("smoke")
    write_mnist(root / "data", n_train=3200, n_test=100)
    storage = root / "store"
    with open(root / "output.txt", "w") as output:
        done = subprocess.run(
            [sys.executable, "-m", "sweep.run", "lenet", "--profile", "smoke"]
            + ["--data-root", str(root / "data"), "--storage", str(storage)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    lines = (root / "output.txt").read_text().splitlines()
    assert done.returncode == 0, "\n".join(lines[-30:])
    return storage, root / "data", lines


# Fixtures that start real processes or servers (Ray nodes, a sweep's driver, MLflow, an S3 server): a test
# that uses one is an integration test, and slow (seconds to minutes on 2 cores). Tests slow for another
# reason carry @pytest.mark.slow themselves. `pytest -m "not slow"` is the quick loop.
PROCESS_FIXTURES = frozenset(
    {
        "ray_cluster",
        "piped_smoke_sweep",
        "two_nodes",
        "blind_worker",
        "cluster",
        "s3",
        "on_s3",
        "auth_server",
        "token_head",
        "open_head",
    }
)


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)
