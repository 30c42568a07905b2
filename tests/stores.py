"""Copies of a sweep's storage for tests that change a shared one."""

import shutil
from pathlib import Path


def copy_store(storage: Path, destination: Path) -> Path:
    """A copy of a sweep's storage at ``destination``, its runs' artifacts in the copy. The copy holds the
    same MLflow run ids, and MLflow caches each run's artifact store by run id alone, process-wide: the
    cache is emptied so that this process writes the copy's artifacts into the copy."""
    from mlflow.tracking._tracking_service import utils

    from sweep.tracking import follow_moved_store

    shutil.copytree(storage, destination)
    # Its runs' artifacts into the copy's own folder, whoever opens it (a bare MlflowClient included).
    follow_moved_store(destination / "mlflow.db")
    utils._artifact_repos_cache.clear()
    return destination
