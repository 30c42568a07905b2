import os

import pytest

# Keep Ray quiet and small in tests: no dashboard, no usage reporting, the driver's stdout only.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# The tests choose their stores, data and cluster themselves: a user's defaults must not leak in.
for variable in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE", "SWEEP_DATA_ROOT", "RAY_ADDRESS"):
    os.environ.pop(variable, None)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session, with 4 logical CPUs so that 4 trials run at once, no GPU."""
    import ray

    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)  # CPU-only, even on a GPU machine
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
