import os

import pytest

# Keep Ray quiet and small in tests: no dashboard, no usage reporting, the driver's stdout only.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session, with 4 logical CPUs so that 4 trials run at once."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
