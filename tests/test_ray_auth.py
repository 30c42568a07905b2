"""Joining a Ray cluster that wants an auth token (Ray's token authentication: a ``ray start --head`` whose user
has a token turns it on by default): a driver without the token the head takes stops at the pre-flight with one
line that says where Ray looks for the token and how to get it, and none of Ray's own repeated warnings."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sweep.cluster import check_token, reach_ray
from tests.datasets import write_mnist
from tests.processes import BIN, ray_gcs_port, reserved_port, stop, wait_for

PROJECT = Path(__file__).resolve().parents[1]
TOKEN = "tests-only-ray-auth-token"
FROM_THE_HEAD = "(`ray get-auth-token` on the head prints it)"


def environment(home: Path, **env: str) -> dict[str, str]:
    """This process's environment with ``home`` as HOME and ``env`` added, and none of the variables that tell
    Ray whether to send a token and where to find it (nor which cluster to join): the machine's must not leak in."""
    ray_auth = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    return dict({k: v for k, v in os.environ.items() if k not in ray_auth}, HOME=str(home), **env)


@contextlib.contextmanager
def running_head(tmp_path: Path, home: Path, **env: str):
    """A ``ray start --head`` with ``home`` as its user's home and ``env`` added to a clean environment, for the
    ``with`` block: its GCS address (127.0.0.1:PORT). Stopped after it, even on failure. Ray binds its ports
    itself (0) and says which, but for its Ray client server, which takes no 0 (and would take 10001, as the
    other head of this module's would): it gets a port this test keeps (tests.processes.reserved_port)."""
    keep = contextlib.ExitStack()
    # Ray's socket paths must stay under 108 bytes: its temp dir goes in a short folder of its own.
    short = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--port=0",
            "--include-dashboard=false",
            f"--ray-client-server-port={keep.enter_context(reserved_port())}",
            "--dashboard-agent-listen-port=0",
            f"--temp-dir={short}",
            "--num-cpus=1",
            "--block",
            "--disable-usage-stats",
        ],
        cwd=tmp_path,
        env=environment(home, RAY_USAGE_STATS_ENABLED="0", **env),
        stdout=open(tmp_path / "head.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def gcs_up() -> int | None:
            assert head.poll() is None, f"the Ray head exited: {(tmp_path / 'head.log').read_text()[-3000:]}"
            gcs = ray_gcs_port(short)
            if gcs is None:
                return None
            socket.create_connection(("127.0.0.1", gcs), timeout=2).close()
            return gcs

        yield f"127.0.0.1:{wait_for(gcs_up, 90, 'Ray GCS')}"
    finally:
        stop(head, grace=5)
        shutil.rmtree(short, ignore_errors=True)
        keep.close()


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A Ray head with token authentication as Ray 2.60 turns it on by default: RAY_AUTH_MODE unset, and a
    token in its user's ~/.ray/auth_token. Its GCS address and that home."""
    root = tmp_path_factory.mktemp("token-head")
    (root / "home" / ".ray").mkdir(parents=True)
    (root / "home" / ".ray" / "auth_token").write_text(TOKEN + "\n")
    with running_head(root, root / "home") as address:
        yield address, root / "home"


@pytest.fixture(scope="module")
def open_head(tmp_path_factory):
    """A Ray head without authentication, as the project's other tests start theirs."""
    root = tmp_path_factory.mktemp("open-head")
    with running_head(root, root, RAY_AUTH_MODE="disabled") as address:
        yield address


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=200, n_test=50)
    return root


def dry_run(tmp_path: Path, address: str, data: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m sweep.run lenet --dry-run`` against ``address``, with ``env`` and a home of its own (no
    ~/.ray/auth_token, unless the test writes one) instead of the machine's."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "sweep.run", "lenet", "--profile", "smoke", "--dry-run"]
        + ["--data-root", str(data), "--storage", str(tmp_path / "store"), "--address", address],
        cwd=PROJECT,
        env=environment(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def no_ray_warnings(done: subprocess.CompletedProcess) -> bool:
    return not any(
        "InvalidAuthToken" in line or "gcs_client" in line for line in (done.stdout + done.stderr).splitlines()
    )


def test_a_driver_without_the_token_stops_at_the_preflight_with_one_line(token_head, mnist_root, tmp_path):
    address, _ = token_head
    done = dry_run(tmp_path, address, mnist_root)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"sweep.run: error: the Ray cluster at {address} requires an auth token and this driver has none: put it"
        f" in RAY_AUTH_TOKEN or ~/.ray/auth_token and set RAY_AUTH_MODE=token {FROM_THE_HEAD}"
    ]
    assert done.stdout == "" and no_ray_warnings(done)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"RAY_AUTH_TOKEN": TOKEN},
            "requires an auth token, which Ray sends only with RAY_AUTH_MODE=token (here unset): set it to send the"
            " token in RAY_AUTH_TOKEN",
        ),
        (
            {"RAY_AUTH_TOKEN": "not-the-head's-token", "RAY_AUTH_MODE": "token"},
            f"refused this driver's auth token (from RAY_AUTH_TOKEN): put the head's token there {FROM_THE_HEAD}",
        ),
    ],
    ids=["token-not-sent", "wrong-token"],
)
def test_a_token_the_cluster_does_not_get_is_one_line(token_head, mnist_root, tmp_path, env, problem):
    address, _ = token_head
    done = dry_run(tmp_path, address, mnist_root, **env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"sweep.run: error: the Ray cluster at {address} {problem}"]
    assert done.stdout == "" and no_ray_warnings(done)
    assert not (tmp_path / "store").exists()


def test_the_token_the_message_points_to_passes_the_preflight(token_head, mnist_root, tmp_path):
    """As the message says: ``ray get-auth-token`` on the head prints its token, which in this driver's
    ~/.ray/auth_token, with RAY_AUTH_MODE=token, the cluster takes."""
    address, head_home = token_head
    printed = subprocess.run(
        [str(BIN / "ray"), "get-auth-token"],
        env=environment(head_home),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert printed.stdout == TOKEN
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text(printed.stdout)
    done = dry_run(tmp_path, address, mnist_root, RAY_AUTH_MODE="token")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("precision ") and no_ray_warnings(done)


def test_a_head_without_authentication_wants_no_token(open_head):
    assert check_token(open_head) is None
    assert reach_ray(open_head) is None
