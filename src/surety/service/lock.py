"""One service per host: an ``flock`` on ``service.lock`` beside the catalog.

The kernel drops an ``flock`` when its holder dies (kill -9 included), so a lock
that is held belongs to a live process and no stale-lock guessing is needed. The
holder's pid is written into the file for the message of the second service
("another surety service runs (pid N)", exit 7); the pid is only shown, never
used to judge the lock. Workers do not inherit the descriptor (Python opens it
non-inheritable), so a worker outliving its service could not keep the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from surety.core.errors import ServiceRunning, SuretyError

__all__ = ["ServiceLock", "ServiceRunning", "lock_path_for"]


def lock_path_for(catalog_path: Path) -> Path:
    return catalog_path.parent / "service.lock"


class ServiceLock:
    """Held from ``acquire`` until ``release`` (or the process's death)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SuretyError(f"cannot open the service lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ServiceRunning(
                f"another surety service runs (pid {holder}; lock {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
