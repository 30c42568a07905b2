"""Joining Ray: the one way the command lines start or join the cluster their work runs on.

Imports nothing heavy at module level (Ray loads in the functions that use it), so that a command line can use it
before its arguments are checked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys

from sweep.cli import first_line

__all__ = ["RayUnavailable", "check_token", "join_ray", "ray_address", "ray_running_here", "reach_ray"]

# The first call a driver makes to the cluster's GCS (read-only, answered at once): refused UNAUTHENTICATED when
# the cluster wants an auth token that the call lacks.
FIRST_GCS_CALL = "/ray.rpc.NodeInfoGcsService/GetClusterId"
FROM_THE_HEAD = "`ray get-auth-token` on the head prints it"
# The tracking credentials are the driver's alone (trials never write to MLflow): a local Ray started by the
# driver would hand its environment to every worker process, where any task could read them.
DRIVER_ONLY_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "PGPASSWORD")


class RayUnavailable(Exception):
    """The Ray cluster asked for cannot be reached or joined; the message is one line."""


def ray_address(explicit: str | None) -> str | None:
    """``--address``, else ``$RAY_ADDRESS``, else None (a local Ray, or none at all)."""
    return explicit or os.environ.get("RAY_ADDRESS") or None  # an empty $RAY_ADDRESS is none


def ray_running_here() -> bool:
    """Whether this process already joined a Ray (a test's, a notebook's): the work runs on that one."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def reach_ray(address: str) -> None:
    """For a ``HOST:PORT`` or ``ray://HOST:PORT`` address, check that something answers there: Ray itself
    would retry for minutes. ``auto`` and ``local`` are left to Ray; any other address is not one Ray takes.
    Then, for a GCS address, that the cluster takes this driver's auth token, if it wants one
    (:func:`check_token`; a Ray Client server at ``ray://`` checks its own)."""
    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not (host and port.isdigit()) or ("://" in address and not client):
        raise RayUnavailable(f"{address} is no Ray address: use HOST:PORT, auto or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None
    if not client:
        check_token(address)


def check_token(gcs: str, found_automatically: bool = False) -> None:
    """Raise RayUnavailable (one line) when the Ray cluster whose GCS is at ``gcs`` (HOST:PORT) wants an auth
    token that this driver would not send, or refuses the one it would send: Ray itself would retry for 20 s,
    printing a warning a second, and then fail with no word about the token. ``found_automatically``: the
    address came from ``auto``, for which Ray sends a token it finds even without ``RAY_AUTH_MODE=token``."""
    if not _refuses(gcs, {}):
        return  # the cluster wants no token
    from ray._raylet import AuthenticationTokenLoader
    from ray.exceptions import AuthenticationError

    try:  # the token Ray would take, RAY_AUTH_MODE aside
        header = AuthenticationTokenLoader.instance().get_token_for_http_header(ignore_auth_mode=True)
    except AuthenticationError as error:  # RAY_AUTH_TOKEN_PATH names no file with a token
        raise RayUnavailable(f"the Ray cluster at {gcs} requires an auth token: {error.message}") from None
    if not header:
        raise RayUnavailable(
            f"the Ray cluster at {gcs} requires an auth token and this driver has none: put it in RAY_AUTH_TOKEN"
            f" or ~/.ray/auth_token and set RAY_AUTH_MODE=token ({FROM_THE_HEAD})"
        )
    mode = os.environ.get("RAY_AUTH_MODE")
    if not (mode.lower() == "token" if mode is not None else found_automatically):
        raise RayUnavailable(
            f"the Ray cluster at {gcs} requires an auth token, which Ray sends only with RAY_AUTH_MODE=token"
            f" (here {mode or 'unset'}): set it to send the token in {_token_source()}"
        )
    if _refuses(gcs, header):
        raise RayUnavailable(
            f"the Ray cluster at {gcs} refused this driver's auth token (from {_token_source()}): put the"
            f" head's token there ({FROM_THE_HEAD})"
        )


def _refuses(gcs: str, header: dict[str, str]) -> bool:
    """Whether the GCS at ``gcs`` refuses a driver's first call with ``header`` as its auth metadata. Any other
    failure (no GCS there, TLS, no answer within 5 s) is left to Ray, which tells it."""
    import grpc

    with grpc.insecure_channel(gcs) as channel:
        try:
            channel.unary_unary(FIRST_GCS_CALL)(b"", timeout=5, metadata=tuple(header.items()))
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def _token_source() -> str:
    """Where Ray takes this driver's token from: the first of RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and
    ~/.ray/auth_token that is set (Ray's order; its Kubernetes service account token, an opt-in, left out)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH, {os.environ['RAY_AUTH_TOKEN_PATH']}"
    return "~/.ray/auth_token"


def join_ray(address: str | None, verbose: bool = True) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``...), or start a local Ray when None;
    unless ``verbose``, without Ray's log lines and the workers' output on this console.

    Raises RayUnavailable (one line) for a cluster that does not answer, or does not take this driver's auth
    token: checked before Ray tries, whose retries would fill the console with warnings.
    """
    import ray

    if address is not None:
        reach_ray(address)
    try:
        if address == "auto":
            _check_auto()
        with _driver_secrets_hidden():
            ray.init(address=address, log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR)
    except (ConnectionError, ValueError) as error:  # ValueError: an address Ray cannot parse
        raise RayUnavailable(f"cannot join the Ray cluster at {address}: {first_line(error)}") from None
    except ray.exceptions.AuthenticationError as error:  # RAY_AUTH_MODE=token here, and no token found
        raise RayUnavailable(f"cannot join the Ray cluster at {address}: {error.message}") from None


@contextlib.contextmanager
def _driver_secrets_hidden():
    """Take :data:`DRIVER_ONLY_VARIABLES` out of this process's environment while Ray starts its processes."""
    kept = {name: os.environ.pop(name) for name in DRIVER_ONLY_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(kept)


def _check_auto() -> None:
    """What :func:`reach_ray` leaves to Ray for ``auto``: Ray joins ``$RAY_ADDRESS`` as an address given, else
    the cluster it finds on this machine."""
    from ray._private.services import canonicalize_bootstrap_address

    given = os.environ.get("RAY_ADDRESS")
    if given:
        reach_ray(given)
    else:
        check_token(canonicalize_bootstrap_address("auto"), found_automatically=True)
