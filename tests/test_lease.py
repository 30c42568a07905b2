"""One driver per sweep: the lease ``<storage>/<sweep>.lease.json`` stops a second driver on the same sweep
with one line naming the first (host, pid, start time), and is taken over only when its heartbeat is stale
or it names a process of this host that is gone.

The tests write lease files as the docs describe them (JSON: host, pid, started, heartbeat in unix seconds,
token), never through the code under test. Only the first test starts a real sweep."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sweep import lease as lease_module
from sweep import run
from sweep.cli import UsageError
from sweep.lease import LeaseHeld, SweepLease
from sweep.storage import SweepStorage
from tests.datasets import write_mnist
from tests.processes import stop, wait_for
from tests.s3server import s3_server

PROJECT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
OTHER_HOST = "gpu-head-7"  # no machine of these tests is named so
STARTED = "2026-12-07T16:40:00Z"
STALE_S = 120  # as docs/cluster.md says: a lease goes stale 120 s after its last renewal


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=3200, n_test=100)
    return root


@pytest.fixture(autouse=True)
def quick_lease(monkeypatch):
    """No settling pause after a lease is written, and no renewal unless a test asks for one."""
    monkeypatch.setattr(lease_module, "LEASE_SETTLE_S", 0.0)
    monkeypatch.setattr(lease_module, "LEASE_RENEW_S", 3600.0)


def lease_text(host: str, pid: int, heartbeat: float, token: str = "theirs", started: str = STARTED) -> str:
    return json.dumps({"host": host, "pid": pid, "started": started, "heartbeat": heartbeat, "token": token})


def write_lease(storage: Path, text: str) -> Path:
    storage.mkdir(parents=True, exist_ok=True)
    path = storage / "lenet.lease.json"
    path.write_text(text)
    return path


def refusal(host: str, pid: int, started: str, lease: str, prefix: str = "sweep.run: error: ") -> str:
    """The pattern of the one line that names the driver holding ``lease`` (any count of seconds since its
    renewal: the clock moves while a test runs)."""
    return (
        re.escape(
            f"{prefix}sweep lenet is being run by another driver: host {host}, pid {pid}, started {started} "
            f"(its lease {lease}, renewed "
        )
        + r"(\d+)"
        + re.escape(" s ago); wait for it to end, or stop it: its lease goes stale 120 s after its last renewal")
    )


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped): a driver SIGKILLed here."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def smoke_args(storage: Path, mnist_root: Path, *extra: str) -> list[str]:
    return ["lenet", "--profile", "smoke", "--storage", str(storage), "--data-root", str(mnist_root), *extra]


# --- a real second driver ----------------------------------------------------------------------------


def test_a_second_driver_on_the_same_sweep_stops_with_one_line(ray_cluster, tmp_path, mnist_root, capsys):
    storage, log = tmp_path / "store", tmp_path / "driver.log"
    args = smoke_args(storage, mnist_root, "--set", "epochs=40", "--address", ray_cluster)
    lease = storage / "lenet.lease.json"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep.run", *args],
        cwd=PROJECT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: driver.poll() is not None or lease.exists(), 240, "the first driver's lease")
        assert driver.poll() is None, log.read_text()[-3000:]
        token = json.loads(lease.read_text())["token"]
        assert run.main([*args, "--resume"]) == 2
        after = datetime.now(timezone.utc)
        assert driver.poll() is None, log.read_text()[-3000:]  # the first driver runs on, its lease untouched
        assert json.loads(lease.read_text())["token"] == token
    finally:
        stop(driver)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    pattern = refusal(HOST, driver.pid, "STARTED", str(lease)).replace("STARTED", r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")
    line = re.fullmatch(pattern, err[0])
    assert line is not None, err[0]
    assert before <= datetime.strptime(line[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) <= after


# --- which leases stop a driver -------------------------------------------------------------------------


@pytest.fixture
def live_process():
    """A process of this host that runs for the test's length."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.mark.parametrize("where", ["another-host", "this-host"])
@pytest.mark.parametrize(
    "extra", [[], ["--dry-run"], ["--resume"], ["--sync"]], ids=["launch", "dry-run", "resume", "sync"]
)
def test_a_live_lease_of_another_driver_stops_the_command_with_one_line_creating_nothing(
    tmp_path, mnist_root, capsys, live_process, where, extra
):
    host, pid = (OTHER_HOST, 4242) if where == "another-host" else (HOST, live_process)
    path = write_lease(tmp_path / "store", lease_text(host, pid, time.time() - 30))
    before = listing(tmp_path)
    assert run.main(smoke_args(tmp_path / "store", mnist_root, *extra)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.fullmatch(refusal(host, pid, STARTED, str(path)), err[0]), err
    assert listing(tmp_path) == before  # nothing created, the lease as it was


def test_a_lease_renewed_by_a_clock_ahead_of_this_one_counts_as_renewed_now(tmp_path, mnist_root, capsys):
    path = write_lease(tmp_path / "store", lease_text(OTHER_HOST, 4242, time.time() + 30))
    assert run.main(smoke_args(tmp_path / "store", mnist_root, "--dry-run")) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"sweep.run: error: sweep lenet is being run by another driver: host {OTHER_HOST}, pid 4242, started "
        f"{STARTED} (its lease {path}, renewed 0 s ago); wait for it to end, or stop it: its lease goes stale "
        "120 s after its last renewal"
    ]


TAKEN_OVER = {
    "killed-driver-on-this-host": lambda: lease_text(HOST, dead_pid(), time.time() - 1),
    "stale-on-another-host": lambda: lease_text(OTHER_HOST, 4242, time.time() - STALE_S - 60),
    "stale-on-this-host": lambda: lease_text(HOST, os.getppid(), time.time() - STALE_S - 60),
    "not-json": lambda: '{"host": "gpu-head-7", "pid": 42',
    "no-heartbeat": lambda: json.dumps({"host": OTHER_HOST, "pid": 4242, "started": STARTED, "token": "theirs"}),
    "empty": lambda: "",
}


@pytest.mark.parametrize("lease", list(TAKEN_OVER))
def test_a_lease_of_no_live_driver_is_taken_over_held_while_the_sweep_runs_and_removed_at_its_end(
    tmp_path, mnist_root, monkeypatch, lease
):
    path = write_lease(tmp_path / "store", TAKEN_OVER[lease]())
    held = []
    monkeypatch.setattr(run, "launch", lambda plan, args: held.append(json.loads(path.read_text())) or 0)
    assert run.main(smoke_args(tmp_path / "store", mnist_root)) == 0
    (holder,) = held
    assert (holder["host"], holder["pid"]) == (HOST, os.getpid()) and holder["token"] != "theirs"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", holder["started"])
    assert not path.exists()


def test_a_launch_that_fails_leaves_no_lease_and_no_storage_folder(tmp_path, mnist_root, monkeypatch, capsys):
    storage = tmp_path / "store"

    def fails(plan, args):
        assert (storage / "lenet.lease.json").exists()
        raise UsageError("no GPU joined the Ray cluster in 1 s")

    monkeypatch.setattr(run, "launch", fails)
    assert run.main(smoke_args(storage, mnist_root)) == 2
    assert capsys.readouterr().err.splitlines() == ["sweep.run: error: no GPU joined the Ray cluster in 1 s"]
    assert not storage.exists()


def test_a_driver_that_passed_the_preflight_as_another_took_the_lease_stops_with_one_line(
    tmp_path, mnist_root, monkeypatch, capsys
):
    storage = tmp_path / "store"
    preflight = run.preflight

    def another_driver_takes_the_lease_meanwhile(args):
        plan = preflight(args)
        write_lease(storage, lease_text(OTHER_HOST, 4242, time.time()))
        return plan

    def launch(plan, args):
        raise AssertionError("launched without the lease")

    monkeypatch.setattr(run, "preflight", another_driver_takes_the_lease_meanwhile)
    monkeypatch.setattr(run, "launch", launch)
    assert run.main(smoke_args(storage, mnist_root)) == 2
    err = capsys.readouterr().err.splitlines()
    lease = storage / "lenet.lease.json"
    assert len(err) == 1 and re.fullmatch(refusal(OTHER_HOST, 4242, STARTED, str(lease)), err[0]), err
    assert json.loads(lease.read_text())["token"] == "theirs"


# --- the lease itself ------------------------------------------------------------------------------------


class AnotherDriverWrites(SweepStorage):
    """A local storage where another driver's lease of ``lenet`` lands just before this driver's read
    number ``at_read`` of it: 2 is the read-back after writing, 3 the first renewal."""

    def __init__(self, location: Path, at_read: int) -> None:
        super().__init__(str(location))
        self.at_read, self.reads, self.written = at_read, 0, threading.Event()

    def read_text(self, name: str) -> str | None:
        if name == "lenet.lease.json":
            self.reads += 1
            if self.reads == self.at_read:
                write_lease(self.local, lease_text(OTHER_HOST, 4242, time.time()))
                self.written.set()
        return super().read_text(name)


def test_of_two_drivers_that_write_at_once_the_one_whose_lease_is_read_back_wins(tmp_path):
    storage = AnotherDriverWrites(tmp_path, at_read=2)
    with pytest.raises(LeaseHeld) as refused:
        SweepLease(storage, "lenet").take()
    lease = tmp_path / "lenet.lease.json"
    assert re.fullmatch(refusal(OTHER_HOST, 4242, STARTED, str(lease), prefix=""), str(refused.value))
    assert json.loads(lease.read_text())["token"] == "theirs"


def test_the_heartbeat_is_renewed_until_the_sweep_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_module, "LEASE_RENEW_S", 0.05)
    path = tmp_path / "lenet.lease.json"
    with SweepLease(SweepStorage(str(tmp_path)), "lenet"):
        first = json.loads(path.read_text())
        renewed = wait_for(
            lambda: (held := json.loads(path.read_text()))["heartbeat"] > first["heartbeat"] and held, 30, "a renewal"
        )
        assert {k: v for k, v in renewed.items() if k != "heartbeat"} == {
            k: v for k, v in first.items() if k != "heartbeat"
        }
    assert not path.exists()


def test_a_lease_another_driver_took_over_is_not_deleted_by_the_first_ones_exit(tmp_path):
    path = tmp_path / "lenet.lease.json"
    with SweepLease(SweepStorage(str(tmp_path)), "lenet"):
        write_lease(tmp_path, lease_text(OTHER_HOST, 4242, time.time()))  # this driver's lease had gone stale
    assert json.loads(path.read_text())["token"] == "theirs"


def test_a_driver_whose_lease_was_taken_over_stops_renewing_it_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lease_module, "LEASE_RENEW_S", 0.05)
    storage = AnotherDriverWrites(tmp_path, at_read=3)
    lease = SweepLease(storage, "lenet")
    lease.take()
    wait_for(storage.written.is_set, 30, "the first renewal")
    lease.release()
    assert json.loads((tmp_path / "lenet.lease.json").read_text())["token"] == "theirs"
    assert capsys.readouterr().err.splitlines() == [
        f"sweep.run: another driver took over the lease of sweep lenet (host {OTHER_HOST}, pid 4242, started "
        f"{STARTED}): two drivers run it now; stop one of them"
    ]


@pytest.fixture
def on_s3(monkeypatch):
    """An S3 server (moto) with bucket ``sweeps``, this process pointed at it."""
    with s3_server() as env:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield


def test_the_lease_works_on_s3(on_s3):
    storage = SweepStorage("s3://sweeps/study")
    with SweepLease(storage, "lenet"):
        held = json.loads(storage.read_text("lenet.lease.json"))
        assert (held["host"], held["pid"]) == (HOST, os.getpid())
        with pytest.raises(LeaseHeld) as refused:
            SweepLease(storage, "lenet").take()
        lease = "s3://sweeps/study/lenet.lease.json"
        assert re.fullmatch(refusal(HOST, os.getpid(), held["started"], lease, prefix=""), str(refused.value))
    assert storage.read_text("lenet.lease.json") is None
