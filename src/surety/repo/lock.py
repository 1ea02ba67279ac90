"""Repository locks: shared (backup, restore, check) and exclusive (forget, prune).

A lock is a small JSON object ``locks/<random id>`` (host, pid, process start
time, kind, operation, refreshed-at). To take a lock we write ours, then list
all locks. Every *stale* lock (of any kind) is removed; a live conflicting one
makes us withdraw ours and raise ``RepositoryLocked``. A lock is stale when

* it names this host and its process is gone (or the pid was reused: the
  process start time differs), or
* it was not refreshed for ``STALE_AFTER`` seconds (other hosts).

While held, a daemon thread refreshes the lock every ``REFRESH_EVERY``
seconds. Release deletes it (in ``finally``); a kill -9 leaves it behind,
and the next locker finds it stale.

==========  ==========  ==========
held \\ want  shared      exclusive
==========  ==========  ==========
shared      ok          locked
exclusive   locked      locked
==========  ==========  ==========
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from surety.core.errors import ObjectNotFound, RepositoryLocked, StorageError
from surety.repo.storage.base import Storage

__all__ = ["LockInfo", "hold_lock"]

STALE_AFTER = 30 * 60
REFRESH_EVERY = 5 * 60


@dataclass(frozen=True)
class LockInfo:
    name: str
    host: str
    pid: int
    start_time: str
    exclusive: bool
    operation: str
    refreshed: float

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        age = int(time.time() - self.refreshed)
        return f"{kind} lock by {self.operation!r} (pid {self.pid} on {self.host}, {age}s ago)"

    def is_stale(self) -> bool:
        if self.host == socket.gethostname():
            return _process_start_time(self.pid) != self.start_time
        return time.time() - self.refreshed > STALE_AFTER


def _process_start_time(pid: int) -> str:
    """Start time of a process (clock ticks since boot), "" if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _read(storage: Storage, name: str) -> LockInfo | None:
    try:
        doc = json.loads(storage.get(name))
        return LockInfo(
            name,
            doc["host"],
            doc["pid"],
            doc["start_time"],
            doc["exclusive"],
            doc["operation"],
            doc["refreshed"],
        )
    except ObjectNotFound:
        return None
    except (ValueError, KeyError, TypeError):
        # A lock we cannot read is treated as held, never ignored.
        return LockInfo(name, "?", 0, "?", True, "unreadable lock", time.time())


def _write(storage: Storage, name: str, exclusive: bool, operation: str) -> None:
    pid = os.getpid()
    doc = {
        "host": socket.gethostname(),
        "pid": pid,
        "start_time": _process_start_time(pid),
        "exclusive": exclusive,
        "operation": operation,
        "refreshed": time.time(),
    }
    storage.put(name, json.dumps(doc).encode())


def _others(storage: Storage, mine: str) -> list[LockInfo]:
    found = []
    for name, _size in storage.list("locks/"):
        info = _read(storage, name) if name != mine else None
        if info is not None:
            found.append(info)
    return found


def _remove_stale(storage: Storage, locks: list[LockInfo], notes: list[str]) -> list[LockInfo]:
    live = []
    for info in locks:
        if info.is_stale():
            with suppress(ObjectNotFound):
                storage.delete(info.name)
            notes.append(f"removed stale {info.describe()}")
        else:
            live.append(info)
    return live


@contextmanager
def hold_lock(
    storage: Storage, exclusive: bool, operation: str, notes: list[str] | None = None
) -> Iterator[None]:
    """Hold a repository lock for the duration of the block."""
    notes = notes if notes is not None else []
    name = f"locks/{secrets.token_hex(16)}"
    _write(storage, name, exclusive, operation)
    try:
        live = _remove_stale(storage, _others(storage, name), notes)
        conflicting = [info for info in live if exclusive or info.exclusive]
        if conflicting:
            raise RepositoryLocked(f"repository is locked: {conflicting[0].describe()}")
    except BaseException:
        with suppress(StorageError):
            storage.delete(name)
        raise
    stop = threading.Event()
    refresher = threading.Thread(
        target=_refresh, args=(storage, name, exclusive, operation, stop), daemon=True
    )
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        with suppress(StorageError):
            storage.delete(name)


def _refresh(
    storage: Storage, name: str, exclusive: bool, operation: str, stop: threading.Event
) -> None:
    while not stop.wait(REFRESH_EVERY):
        with suppress(StorageError):
            _write(storage, name, exclusive, operation)
