"""Joining Ray: the one way the command lines start or join the cluster their work runs on.

Imports nothing heavy at module level (Ray loads in :func:`join_ray`), so that a command line can use it
before its arguments are checked.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from sweep.cli import first_line

__all__ = ["RayUnavailable", "join_ray", "ray_address", "ray_running_here", "reach_ray"]


class RayUnavailable(Exception):
    """The Ray cluster asked for cannot be reached or joined; the message is one line."""


def ray_address(explicit: str | None) -> str | None:
    """``--address``, else ``$RAY_ADDRESS``, else None (a local Ray, or none at all)."""
    return explicit or os.environ.get("RAY_ADDRESS")


def ray_running_here() -> bool:
    """Whether this process already joined a Ray (a test's, a notebook's): the work runs on that one."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def reach_ray(address: str) -> None:
    """For a ``HOST:PORT`` address, check that something answers there: Ray itself would retry for minutes.
    ``auto``, ``local`` and ``ray://...`` are left to Ray; any other address is not one Ray takes."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not (host and port.isdigit()):
        raise RayUnavailable(f"{address} is no Ray address: use HOST:PORT, auto or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


def join_ray(address: str | None, verbose: bool = True) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``...), or start a local Ray when None;
    unless ``verbose``, without Ray's log lines and the workers' output on this console.

    Raises RayUnavailable (one line) for a cluster that does not answer.
    """
    import ray

    if address is not None:
        reach_ray(address)
    try:
        ray.init(address=address, log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR)
    except (ConnectionError, ValueError) as error:  # ValueError: an address Ray cannot parse
        raise RayUnavailable(f"cannot join the Ray cluster at {address}: {first_line(error)}") from None
