"""One driver per sweep: a lease in the sweep's storage, ``<storage>/<sweep>.lease.json``.

A driver takes the lease before it launches a sweep (or runs ``--sync``) and renews its heartbeat while it
runs; a second driver on the same sweep stops with one line naming the first (host, pid, start time). The
lease is taken over only when its heartbeat is stale, or when it names a process of this same host that is
no longer alive (a driver SIGKILLed here must not block ``--resume`` until its heartbeat goes stale).

The file is JSON: ``{"host": str, "pid": int, "started": "YYYY-MM-DDTHH:MM:SSZ" (UTC), "heartbeat": unix
seconds, "token": str}``. It goes through :class:`sweep.storage.SweepStorage`, so it works on S3 too.

Standard library and sweep.storage only: the pre-flight reads it before Ray, torch or MLflow load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sweep.storage import StorageError, SweepStorage

__all__ = [
    "LEASE_RENEW_S",
    "LEASE_SETTLE_S",
    "LEASE_STALE_S",
    "LeaseHeld",
    "LeaseHolder",
    "SweepLease",
    "check_free",
    "lease_name",
    "live_holder",
    "read_holder",
]

# A live driver renews its heartbeat this often (seconds): often enough that several renewals in a row
# may fail (an S3 hiccup, a long pause of the driver) before its lease goes stale.
LEASE_RENEW_S = 20.0
# A lease whose heartbeat is older than this (seconds) is stale: its driver is gone (or cut off from the
# storage), and another may take the sweep over. Six renewal periods, so that a slow storage or a modest
# clock difference between hosts (the heartbeat is the writer's clock, its age the reader's) does not make
# a live driver's lease stale; short enough that a lost driver blocks ``--resume`` for two minutes at most.
LEASE_STALE_S = 120.0
# After writing its lease, a driver waits this long (seconds) before reading it back: two drivers that
# both found the sweep free and wrote at once (an object store has no exclusive create) both read back the
# write that landed last, so exactly one wins. One request's time (the other's write) is far less.
LEASE_SETTLE_S = 1.0


class LeaseHeld(Exception):
    """Another driver holds a live lease of the sweep; the message is one line that names it."""


def lease_name(sweep: str) -> str:
    """The name of sweep ``sweep``'s lease file in its storage."""
    return f"{sweep}.lease.json"


@dataclass(frozen=True)
class LeaseHolder:
    """A driver that holds (or held) a sweep's lease.

    Attributes:
        host: its machine, ``socket.gethostname()``.
        pid: its process id on that machine.
        started: when it took the lease, ISO-8601 UTC to the second (``2026-12-07T16:40:00Z``).
        heartbeat: when it last renewed the lease, unix seconds.
        token: random, this holder's alone: tells two drivers apart even on one host with one pid.
    """

    host: str
    pid: int
    started: str
    heartbeat: float
    token: str

    @classmethod
    def this_process(cls) -> LeaseHolder:
        """A new holder for this process, its heartbeat now."""
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(socket.gethostname(), os.getpid(), started, time.time(), secrets.token_hex(8))

    @classmethod
    def from_json(cls, text: str) -> LeaseHolder | None:
        """The holder a lease file's ``text`` names; None when the text is no such JSON (a damaged lease
        counts as none: no driver could renew it, so it would only block the sweep for good)."""
        try:
            data = json.loads(text)
            holder = cls(
                str(data["host"]), int(data["pid"]), str(data["started"]), float(data["heartbeat"]), str(data["token"])
            )
        except (ValueError, TypeError, KeyError):
            return None
        return holder if math.isfinite(holder.heartbeat) else None  # a NaN heartbeat would never go stale

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def age(self) -> float:
        """Seconds since the last renewal (never below 0: the writer's clock may be ahead of this one's)."""
        return max(0.0, time.time() - self.heartbeat)

    def refusal(self, storage: SweepStorage, sweep: str) -> str:
        """The one line that stops a second driver of sweep ``sweep``."""
        return (
            f"sweep {sweep} is being run by another driver: host {self.host}, pid {self.pid}, started {self.started} "
            f"(its lease {storage.path(lease_name(sweep))}, renewed {self.age():.0f} s ago); wait for it to end, "
            f"or stop it: its lease goes stale {LEASE_STALE_S:.0f} s after its last renewal"
        )


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (signal 0 checks, sends nothing). A pid below 1 is
    none: ``os.kill`` would address a process group. A pid reused by another process counts as alive, so
    such a lease blocks until it is stale."""
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, another user's
        return True
    return True


def read_holder(storage: SweepStorage, sweep: str) -> LeaseHolder | None:
    """Whoever the lease file of sweep ``sweep`` names, live or not; None when it is absent or damaged."""
    text = storage.read_text(lease_name(sweep))
    return None if text is None else LeaseHolder.from_json(text)


def live_holder(storage: SweepStorage, sweep: str) -> LeaseHolder | None:
    """The driver that holds a live lease of sweep ``sweep``; None when the lease is absent, damaged, stale
    (heartbeat older than LEASE_STALE_S seconds), or names a process of this host that is gone."""
    holder = read_holder(storage, sweep)
    if holder is None or holder.age() > LEASE_STALE_S:
        return None
    if holder.host == socket.gethostname() and not _alive(holder.pid):
        return None
    return holder


def check_free(storage: SweepStorage, sweep: str) -> None:
    """Raise LeaseHeld (one line) when another driver holds a live lease of sweep ``sweep``."""
    if (holder := live_holder(storage, sweep)) is not None:
        raise LeaseHeld(holder.refusal(storage, sweep))


def _write(storage: SweepStorage, sweep: str, holder: LeaseHolder) -> None:
    """Write ``holder`` as the lease of sweep ``sweep``, whole: on a local folder through a new file moved
    into place, so that a reader never sees half a lease (an object store replaces an object whole)."""
    if storage.local is None:
        storage.write_text(lease_name(sweep), holder.to_json())
        return
    storage.local.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=storage.local, prefix=".lease-", delete=False) as file:
        file.write(holder.to_json())
    os.replace(file.name, storage.local / lease_name(sweep))


class SweepLease:
    """This driver's lease of sweep ``sweep`` in ``storage``: :meth:`take` it (or enter ``with``), and it is
    renewed every LEASE_RENEW_S seconds by a daemon thread until :meth:`release` (or the end of ``with``)
    deletes it, if it is still this driver's."""

    def __init__(self, storage: SweepStorage, sweep: str) -> None:
        self.storage, self.sweep = storage, sweep
        self.holder = LeaseHolder.this_process()
        self._made_folder = storage.local is not None and not storage.local.exists()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name=f"lease-{sweep}", daemon=True)

    def take(self) -> None:
        """Write this driver's lease. LeaseHeld (one line) when another driver holds a live one, or wrote
        its own at the same time and won; StorageError (one line) when the storage refuses the file."""
        check_free(self.storage, self.sweep)
        try:
            _write(self.storage, self.sweep, self.holder)
        except OSError as error:
            raise StorageError(f"cannot write the lease {self.storage.path(lease_name(self.sweep))}: {error}") from None
        time.sleep(LEASE_SETTLE_S)
        winner = read_holder(self.storage, self.sweep)
        if winner is not None and winner.token != self.holder.token:
            raise LeaseHeld(winner.refusal(self.storage, self.sweep))
        self._renewer.start()

    def release(self) -> None:
        """Stop renewing, and delete the lease if it is still this driver's. One that cannot be deleted is
        left in place: it goes stale, and names a process of this host that will be gone."""
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        with contextlib.suppress(OSError, StorageError):
            if self._holds():
                self.storage.delete(lease_name(self.sweep))
        if self._made_folder:  # the lease made the storage folder, and nothing else was put there
            with contextlib.suppress(OSError):
                os.rmdir(self.storage.local)

    def __enter__(self) -> SweepLease:
        self.take()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _holds(self) -> bool:
        current = read_holder(self.storage, self.sweep)
        return current is not None and current.token == self.holder.token

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(LEASE_RENEW_S):
            if not self._renew():
                return

    def _renew(self) -> bool:
        """Write a new heartbeat; False (and one line on stderr) when another driver took the lease over."""
        try:
            current = read_holder(self.storage, self.sweep)
            if current is not None and current.token != self.holder.token:
                print(
                    f"sweep.run: another driver took over the lease of sweep {self.sweep} (host {current.host}, "
                    f"pid {current.pid}, started {current.started}): two drivers run it now; stop one of them",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            self.holder = dataclasses.replace(self.holder, heartbeat=time.time())
            _write(self.storage, self.sweep, self.holder)
        except (OSError, StorageError):  # the storage did not answer: the next renewal tries again
            pass
        return True
