"""Repository locks: shared (backup, restore, check) and exclusive (forget, prune).

A lock is a small JSON object ``locks/<random id>`` naming its holder: host,
boot id, PID namespace, pid, process start time; kind, operation, and when it
was last refreshed. To take a lock we write ours, then list all locks. Every
*stale* lock is removed; a live conflicting one makes us withdraw ours and
raise ``RepositoryLocked``.

**Staleness is never decided from a pid alone** (format 2, docs/format.md
"Locks"). Containers on one kernel share the boot id, and with the host's UTS
namespace the host name too; a cloned host sharing the storage may share
both. So a holder's pid is trusted only when its host name, boot id *and* PID
namespace (the inode of ``/proc/self/ns/pid``) equal ours: then the lock is
stale iff that process (pid + start time) is gone, or is a zombie (killed, not
yet reaped by its parent: nothing of it runs). Otherwise only the refresh
age counts: a lock not refreshed for ``STALE_AFTER`` seconds is stale. A lock
we cannot read is never stale (only ``surety unlock`` removes it); a lock
written by format 1 (no boot id) is judged by its age.

While held, a daemon thread rewrites the lock every ``REFRESH_EVERY``
seconds. If it finds its lock gone (someone removed it as stale), it does not
write it back: the lock is *lost*. ``HeldLock.check`` raises when the lock is
lost or was not refreshed for long enough that another process could have
judged it stale; writers call it just before they commit (a backup before its
manifest, prune before it deletes). Release deletes the lock (in
``finally``); a kill -9 leaves it behind for the next locker to judge.

A shared lock on storage that refuses writes (read-only media, a full disk)
is not taken when the caller allows it (``read_only=True``: reading
commands); conflicting exclusive locks are still honoured, and a note says
that no lock was taken.

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
from functools import cache

from surety.core.errors import (
    ObjectNotFound,
    RepositoryLocked,
    StorageError,
    StorageFull,
    StorageReadOnly,
)
from surety.core.processes import process_start_time, process_state
from surety.repo.storage.base import Storage

__all__ = ["HeldLock", "LockInfo", "hold_lock", "list_locks", "process_start_time"]

STALE_AFTER = 30 * 60
REFRESH_EVERY = 5 * 60
LOCK_VERSION = 2


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough to tell, from another process, whether it lives."""

    host: str
    boot_id: str
    pid_ns: str
    pid: int
    start_time: str

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), _pid_ns(), pid, process_start_time(pid))

    def pid_is_trusted(self) -> bool:
        """True when this holder's pid means what it says to us (same kernel boot and PID ns)."""
        here = Holder.me()
        mine = (here.host, here.boot_id, here.pid_ns)
        return bool(self.boot_id and self.pid_ns) and (self.host, self.boot_id, self.pid_ns) == mine


@dataclass(frozen=True)
class LockInfo:
    name: str
    holder: Holder | None  # None: the lock could not be read
    exclusive: bool
    operation: str
    refreshed: float

    def describe(self) -> str:
        if self.holder is None:
            return f"unreadable lock {self.name} (damaged)"
        kind = "exclusive" if self.exclusive else "shared"
        age = int(time.time() - self.refreshed)
        return (
            f"{kind} lock by {self.operation!r} "
            f"(pid {self.holder.pid} on {self.holder.host}, refreshed {age}s ago)"
        )

    def is_stale(self, now: float | None = None) -> bool:
        if self.holder is None:
            return False
        if self.holder.pid_is_trusted():
            pid = self.holder.pid
            return process_start_time(pid) != self.holder.start_time or process_state(pid) == "Z"
        return (now or time.time()) - self.refreshed > STALE_AFTER


@cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _pid_ns() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _read(storage: Storage, name: str) -> LockInfo | None:
    try:
        doc = json.loads(storage.get(name))
        holder = Holder(
            doc["host"],
            doc.get("boot_id", ""),
            doc.get("pid_ns", ""),
            doc["pid"],
            doc["start_time"],
        )
        return LockInfo(name, holder, doc["exclusive"], doc["operation"], doc["refreshed"])
    except ObjectNotFound:
        return None
    except (ValueError, KeyError, TypeError):
        # A lock we cannot read is treated as held, never ignored.
        return LockInfo(name, None, True, "unreadable lock", 0.0)


def _document(exclusive: bool, operation: str, created: float) -> bytes:
    holder = Holder.me()
    doc = {
        "version": LOCK_VERSION,
        **holder.__dict__,
        "exclusive": exclusive,
        "operation": operation,
        "created": created,
        "refreshed": time.time(),
    }
    return json.dumps(doc).encode()


def list_locks(storage: Storage, skip: str = "") -> list[LockInfo]:
    found = []
    for name, _size in storage.list("locks/"):
        info = _read(storage, name) if name != skip else None
        if info is not None:
            found.append(info)
    return found


def _remove_stale(storage: Storage, locks: list[LockInfo], notes: list[str]) -> list[LockInfo]:
    live = []
    for info in locks:
        if info.is_stale():
            with suppress(ObjectNotFound, StorageReadOnly, StorageFull):
                storage.delete(info.name)
                notes.append(f"removed stale {info.describe()}")
        else:
            live.append(info)
    return live


class HeldLock:
    """A lock while it is held: refreshed in the background, checked before commits."""

    def __init__(self, storage: Storage, name: str, exclusive: bool, operation: str) -> None:
        self.storage, self.name = storage, name
        self.exclusive, self.operation = exclusive, operation
        self.taken = True
        self.created = time.time()
        self.last_refresh = self.created
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> None:
        self.storage.put(self.name, _document(self.exclusive, self.operation, self.created))

    def refresh(self) -> None:
        """Rewrite the lock, unless it was removed meanwhile (then it is lost)."""
        try:
            if not self.storage.exists(self.name):
                self.lost = True
                self._stop.set()
                return
            started = time.time()
            self.write()
            self.last_refresh = started
        except StorageError:
            pass  # the age check in ``check`` notices a lock that is not refreshed

    def check(self) -> None:
        """Raise ``RepositoryLocked`` unless this lock still holds (call before committing)."""
        if not self.taken:
            return
        if time.time() - self.last_refresh >= STALE_AFTER - REFRESH_EVERY:
            self.lost = True  # others may already judge it stale by its age
        if not self.lost:
            self.lost = not self.storage.exists(self.name)
        if self.lost:
            raise RepositoryLocked(
                f"this {self.operation!r} lost its repository lock (removed by another "
                "process, or not refreshed in time); nothing was committed"
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="surety-lock")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            self.refresh()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.taken and not self.lost:
            with suppress(StorageError):
                self.storage.delete(self.name)


@contextmanager
def hold_lock(
    storage: Storage,
    exclusive: bool,
    operation: str,
    notes: list[str] | None = None,
    read_only: bool = False,
) -> Iterator[HeldLock]:
    """Hold a repository lock for the duration of the block (see the module docstring)."""
    notes = notes if notes is not None else []
    held = HeldLock(storage, f"locks/{secrets.token_hex(16)}", exclusive, operation)
    try:
        held.write()
    except (StorageReadOnly, StorageFull) as exc:
        if exclusive or not read_only:
            raise
        held.taken = False
        notes.append(f"no lock was taken: {exc}")
    try:
        live = _remove_stale(storage, list_locks(storage, skip=held.name), notes)
        conflicting = [info for info in live if exclusive or info.exclusive]
        if conflicting:
            raise RepositoryLocked(
                f"repository is locked: {conflicting[0].describe()}" + _unlock_hint(conflicting[0])
            )
    except BaseException:
        held.release()
        raise
    if held.taken:
        held.start()
    try:
        yield held
    finally:
        held.release()


def _unlock_hint(info: LockInfo) -> str:
    if info.holder is None:
        return "; if no surety process uses the repository, remove it with `surety unlock`"
    return ""
