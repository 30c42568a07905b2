"""Helpers for tests that start real processes (Ray nodes, MLflow servers) on this machine.

Ports: a server a test starts binds a port itself (port 0) and the test reads which from the server's own
word (its log, its API); no port is found free by binding it and letting it go, for another process to take
in between. Where a server must come back at the same address (:func:`reserved_port`), or must be told a port
and cannot take 0, the test keeps the port bound for its whole duration; where a test needs nothing to listen
(:func:`closed_port`), it holds the port itself."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses every connection to 127.0.0.1 while the block runs: bound on every address by a
    socket of this process that never listens (Linux refuses a connect to it), without SO_REUSEADDR, so that
    nothing else can bind it meanwhile. Proven refused before it is handed out."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        with socket.socket() as probe, contextlib.suppress(ConnectionRefusedError):
            probe.settimeout(5)
            probe.connect(("127.0.0.1", port))
            raise AssertionError(f"127.0.0.1:{port} took a connection, bound by a socket that does not listen")
        yield port


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A port kept for servers the test starts on it while the block runs, each after the last is gone: bound
    on every address, with SO_REUSEADDR, by a socket of this process that never listens. A server that binds
    with SO_REUSEADDR (uvicorn, asyncio, gRPC, werkzeug do) binds and listens beside it; no port chosen by the
    system (a bind to port 0, a client's connect) is ever this one; while no server listens, a connect to it is
    refused. For a server that must come back at the same address, and one that cannot take port 0."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", 0))
        yield holder.getsockname()[1]


UVICORN_RUNNING = re.compile(r"Uvicorn running on http://[^\s:]+:(\d+) ")


def uvicorn_port(log: Path, since: int = 0) -> int | None:
    """The port an MLflow server (uvicorn: ``mlflow server``, ``mlflow ui``) listens on, as its log ``log``
    says past byte ``since`` (uvicorn names the port it bound, also for ``--port 0``); None until it says so."""
    with contextlib.suppress(FileNotFoundError), open(log, "rb") as text:
        text.seek(since)
        found = UVICORN_RUNNING.search(text.read().decode(errors="replace"))
        return int(found.group(1)) if found else None
    return None


def ray_gcs_port(temp_dir: Path) -> int | None:
    """The GCS port of the head that ``ray start --head --port=0 --temp-dir=TEMP_DIR`` started: Ray writes the
    head's address (HOST:PORT) to TEMP_DIR/ray_current_cluster once the node is up. None until then."""
    with contextlib.suppress(FileNotFoundError):
        address = (temp_dir / "ray_current_cluster").read_text().strip()
        return int(address.rpartition(":")[2]) if address else None
    return None


RAY_JOBS_ADDRESS = re.compile(r"RAY_API_SERVER_ADDRESS='http://([^']+)'")


def ray_dashboard_address(log: Path) -> str | None:
    """HOST:PORT of the dashboard of the head whose ``ray start`` output is ``log`` (started with
    ``--dashboard-port=0``: its "next steps" name the address the dashboard bound); None until they do."""
    with contextlib.suppress(FileNotFoundError):
        found = RAY_JOBS_ADDRESS.search(log.read_text(errors="replace"))
        return found.group(1) if found else None
    return None


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
    folder: Path, log: Path, port: int = 0, auth_password: str | None = None, workers: int | None = None
) -> tuple[subprocess.Popen, str]:
    """An MLflow tracking server on 127.0.0.1 with its SQLite store and artifacts in ``folder`` (reused when
    started again there), ready to answer when this returns: its process and its URI (http://127.0.0.1:PORT).
    ``port``: 0, a port the server binds itself, read from its log ``log`` (appended to); or one the test
    keeps for it (:func:`reserved_port`), to start it again at the same URI. With ``auth_password``, it runs
    MLflow's basic-auth app, whose user ``admin`` has that password (its user store is in ``folder`` too).
    ``workers``: its worker processes (MLflow's default, 4, when None); one starts faster on a small machine."""
    folder.mkdir(parents=True, exist_ok=True)
    since = log.stat().st_size if log.exists() else 0  # the log of an earlier start names its port
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
        bound = uvicorn_port(log, since)
        if bound is None:
            return False
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(f"http://127.0.0.1:{bound}/health", timeout=2).status == 200
        return False

    wait_for(ready, 120, "MLflow server")
    if process.poll() is not None:
        raise RuntimeError(f"the MLflow server exited with status {process.returncode} as it started: see {log}")
    bound = uvicorn_port(log, since)
    if port and bound != port:
        kill(process)
        raise RuntimeError(f"the MLflow server was to listen on port {port}, and says {bound}: see {log}")
    return process, f"http://127.0.0.1:{bound}"


# --- trials caught in training ----------------------------------------------------------------------------


def trial_worker(trial: Path) -> int | None:
    """The pid of the Ray worker process that started the trial whose folder (in the sweep's storage) is
    ``trial``: Tune writes it into each line of the trial's result.json. None until a first line is whole."""
    with contextlib.suppress(FileNotFoundError):
        first, newline, _ = (trial / "result.json").read_text().partition("\n")
        return json.loads(first)["pid"] if newline else None
    return None


def _checkpoint_epochs(trial: Path) -> list[int | None]:
    """The epoch of each checkpoint in trial folder ``trial``; None for one not whole (being written by its
    worker, or being removed by Tune, which keeps two)."""
    import torch

    from sweep.checkpoints import CHECKPOINT_FILE

    epochs: list[int | None] = []
    for folder in trial.glob("checkpoint_*"):
        try:
            epochs.append(torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["epoch"])
        except Exception:  # noqa: BLE001 - not whole: it proves nothing
            epochs.append(None)
    return epochs


def freeze_if_training(trial: Path, pid: int, epochs: int) -> bool:
    """Stop worker ``pid`` (SIGSTOP), the one that started the trial of folder ``trial`` (:func:`trial_worker`),
    and keep it stopped if that folder proves the trial of ``epochs`` epochs has not ended: true then (the
    caller kills the worker or lets it go on with :func:`thaw`); else the worker goes on, and false.

    The proof, taken while the worker is stopped and writes nothing: a trial's last report (epoch ``epochs``)
    always carries a checkpoint (sweep.trainable evaluates the last epoch always), which the worker writes into
    the trial's folder itself before the report leaves it. When every checkpoint there is whole and of an
    earlier epoch, the trial's function has not returned, so its worker still runs it. A checkpoint not whole
    (being written, or being removed as Tune keeps two) proves nothing. A test catches trials in training
    this way, not by a time it assumes they take."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    if any(epoch is None or epoch >= epochs for epoch in _checkpoint_epochs(trial)):
        thaw(pid)
        return False
    return True


def thaw(pid: int) -> None:
    """Let a worker stopped by :func:`freeze_if_training` go on (SIGCONT)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def trials_held_in_training(sweep: Path, epochs: int, trials: int, count: int) -> Iterator[dict[str, int]]:
    """While the block runs, catch trials of a sweep of ``trials`` trials of ``epochs`` epochs, whose folder in
    the storage is ``sweep``, in training (:func:`freeze_if_training`), and hold each there until ``count`` are
    held at once; then let them all go on. Yields the trials held (trial key: worker pid), filled as they are
    caught: ``count`` of them once that many trials were in training at the same moment, whatever each takes
    on this machine. The catcher gives up (and lets the held go on) when every trial it does not hold has ended,
    so that a sweep whose trials all ended too soon to be caught ends too."""
    held: dict[str, int] = {}
    errors: list[BaseException] = []
    done = threading.Event()

    def catch() -> None:
        try:
            while not done.is_set() and len(held) < count:
                folders = sorted(result.parent for result in sweep.glob("*/result.json"))
                for folder in folders:
                    pid = trial_worker(folder)
                    # A worker held already runs its held trial: another trial naming it ended before that one.
                    if folder.name in held or pid is None or pid in held.values():
                        continue
                    if freeze_if_training(folder, pid, epochs):
                        held[folder.name] = pid
                        if len(held) == count:
                            break
                others = [folder for folder in folders if folder.name not in held]
                if len(folders) == trials and all(epochs in _checkpoint_epochs(folder) for folder in others):
                    break  # nothing left to catch
                done.wait(0.1)
        except BaseException as error:  # noqa: BLE001 - raised in the test's thread, after the held go on
            errors.append(error)
        finally:
            for pid in held.values():
                thaw(pid)

    catcher = threading.Thread(target=catch, name="trial-catcher", daemon=True)
    catcher.start()
    try:
        yield held
    finally:
        done.set()
        catcher.join()
    if errors:
        raise errors[0]


def driver_running(trainable: str) -> str:
    """The source of a ``python -m sweep.run`` (``python -c SOURCE ARGS...``) whose trials run ``trainable``
    (``module:function``, a wrapper of sweep.trainable.train_trial) instead of train_trial: Tune resumes a
    sweep with the trainable it began with, so a test's trainable must be the driver's from the start."""
    module, function = trainable.split(":")
    return (
        "import sys\n"
        "import sweep.trainable\n"
        f"from {module} import {function}\n"
        f"sweep.trainable.train_trial = {function}\n"
        "from sweep.run import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
