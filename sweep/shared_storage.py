"""Whether every node of the joined Ray cluster sees a local storage folder, at the same path.

Ray Tune's trials write their checkpoints to the storage from whichever node they run on: a folder that the
other nodes do not have makes each trial there fail at its first checkpoint, ``--max-failures`` times over.
So it is checked, not guessed from the path: a marker file holding a random token goes into the folder (into
its nearest existing ancestor when the folder is not made yet), a task on each alive node reads it back, and
the marker is removed at once, so that the pre-flight leaves nothing behind.

Needs a joined Ray (``ray.init``); imports Ray only inside its functions.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from sweep.storage import StorageError, SweepStorage

__all__ = ["CHECK_TIMEOUT_S", "check_shared_storage"]

CHECK_TIMEOUT_S = 120  # a node starts a worker process for the task first, which takes a while on a busy node
MARKER_PREFIX = ".sweep-shared-check-"
TO_DO = "pass --storage s3://BUCKET/PATH, or a folder shared at the same path on every node (NFS)"


def check_shared_storage(storage: SweepStorage, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise StorageError (one line) when an alive node of the joined cluster does not see the local
    ``storage`` at its path, or did not answer within ``timeout`` seconds. Nothing to check for a remote
    storage (``s3://...``: every node reaches it by its URI) or a cluster of one node."""
    if storage.local is None:
        return
    import ray

    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) < 2:
        return
    marker, token = _write_marker(_nearest_existing(storage.local))
    try:
        answers = _ask_nodes(nodes, marker, token, timeout)
    finally:
        marker.unlink(missing_ok=True)
    blind = [label for label, sees in answers.items() if sees is False]
    if blind:
        raise StorageError(
            f"the storage {storage.location} is not shared with every node of the Ray cluster: {_nodes(blind)} "
            f"cannot see it, and trials there could not keep their checkpoints; {TO_DO}"
        )
    silent = [label for label, sees in answers.items() if sees is None]
    if silent:
        raise StorageError(
            f"cannot tell whether {_nodes(silent)} can see the storage {storage.location}: the task that looks "
            f"for it there did not run within {timeout:g} s; try again once the node is up, or {TO_DO}"
        )


def _nearest_existing(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists (the pre-flight creates no folder)."""
    while not folder.exists():
        folder = folder.parent
    return folder


def _write_marker(folder: Path) -> tuple[Path, str]:
    """A new file in ``folder`` holding a random token: (its path, the token). Readable by every user, as
    the Ray workers of other nodes may run as another one than this driver."""
    token = secrets.token_hex(16)
    try:
        handle, name = tempfile.mkstemp(prefix=MARKER_PREFIX, dir=folder)
        try:
            os.write(handle, token.encode())
            os.fchmod(handle, 0o644)
        except OSError:
            os.unlink(name)
            raise
        finally:
            os.close(handle)
    except OSError as error:
        raise StorageError(f"cannot write in {folder} to check the storage ({error.strerror or error})") from None
    return Path(name), token


def _holds_token(path: str, token: str) -> bool:
    """Runs as a Ray task on one node: whether file ``path`` there holds ``token``."""
    try:
        return Path(path).read_text() == token
    except (OSError, UnicodeDecodeError):  # absent, or another file: not the driver's folder
        return False


def _ask_nodes(nodes: list[dict], marker: Path, token: str, timeout: float) -> dict[str, bool | None]:
    """For each of ``nodes`` (``ray.nodes()`` entries), by its label: whether a task pinned to it finds
    ``token`` in ``marker``; None when the task did not end within ``timeout`` seconds (then cancelled).
    Raises StorageError when a task failed (its worker died, the project does not import there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from sweep.cli import first_line

    look = ray.remote(num_cpus=0, max_retries=0)(_holds_token)
    tasks = {
        _label(node): look.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(str(marker), token)
        for node in nodes
    }
    ready, _ = ray.wait(list(tasks.values()), num_returns=len(tasks), timeout=timeout)
    answers: dict[str, bool | None] = {}
    for label, task in tasks.items():
        if task not in ready:
            ray.cancel(task, force=True)
            answers[label] = None
            continue
        try:
            answers[label] = ray.get(task)
        except ray.exceptions.RayError as error:
            cause = getattr(error, "cause", None) or error
            raise StorageError(
                f"the task that checks the storage on Ray node {label} failed: {first_line(cause)}"
            ) from None
    return answers


def _label(node: dict) -> str:
    """A node as a line names it: its IP and the start of its id (nodes of one machine share the IP)."""
    return f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"


def _nodes(labels: list[str]) -> str:
    return f"Ray node{'s' if len(labels) > 1 else ''} {', '.join(labels)}"
