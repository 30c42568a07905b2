"""Helpers for tests that start real processes (Ray nodes, MLflow servers) on this machine."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


# What a check raises when it is wrong, not when what it waits for is not there yet (no server, a file
# half written, a command that fails until a node is up): raised at once, not polled for minutes.
CHECK_BUGS = (NameError, TypeError, AttributeError, AssertionError, ImportError, ZeroDivisionError)


def wait_for(check, seconds: float, what: str):
    """Poll ``check`` every 0.5 s until it returns something true (returned), or raise TimeoutError naming
    the last error the check raised. A check that raises one of CHECK_BUGS fails at once."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            value = check()
        except CHECK_BUGS:
            raise
        except Exception as error:  # noqa: BLE001 - not there yet: polled again, named if it never comes
            last = error
        else:
            if value:
                return value
        time.sleep(0.5)
    because = f" (last: {type(last).__name__}: {last})" if last is not None else ""
    raise TimeoutError(f"{what} not ready after {seconds} s{because}")


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group a test started (ray start --block stops its node), SIGKILL if it lingers
    ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the process group a test started, at once (a host or server that crashes), and reap it.
    Unlike ``stop``, it waits for nothing: a server stopped with SIGTERM may wait for its clients' open
    connections before it exits."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def start_mlflow_server(
    folder: Path, port: int, log: Path, auth_password: str | None = None, workers: int | None = None
) -> subprocess.Popen:
    """An MLflow tracking server on 127.0.0.1:``port`` with its SQLite store and artifacts in ``folder``
    (reused when started again there), ready to answer when this returns. With ``auth_password``, it runs
    MLflow's basic-auth app, whose user ``admin`` has that password (its user store is in ``folder`` too).
    ``workers``: its worker processes (MLflow's default, 4, when None); one starts faster on a small machine."""
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    extra = [] if workers is None else ["--workers", str(workers)]
    if auth_password is not None:
        env.update(MLFLOW_AUTH_ADMIN_PASSWORD=auth_password, MLFLOW_FLASK_SERVER_SECRET_KEY="tests-only-secret")
        extra += ["--app-name", "basic-auth"]
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            *extra,
        ],
        cwd=folder,
        env=env,
        stdout=open(log, "a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> bool:
        if process.poll() is not None:  # it failed to start: no use waiting for it
            return True
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        return False

    wait_for(ready, 120, "MLflow server")
    if process.poll() is not None:
        raise RuntimeError(f"the MLflow server exited with status {process.returncode} as it started: see {log}")
    return process
