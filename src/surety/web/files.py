"""The file browser: a restore point's file system mounted read-only, listed, and read out
as one file or a directory streamed as a tar archive (bounded memory).

Mounts are the file-level restore's (``restore.files.mounted_file_system``: needs
root, /dev/fuse and loop devices); the web keeps each open while it is used and
closes it after ``idle_seconds`` without a request (a reaper thread) and when the
app stops. Guest paths are walked one component at a time with ``lstat``: ``..`` is
refused and no symlink is followed, so nothing outside the guest's file system is
ever read.
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surety.core.errors import ExposeError, UsageError
from surety.core.progress import NullProgress
from surety.repo.repository import Repository
from surety.restore.files import RUN_ROOT, Entry, FileSource, mounted_file_system

__all__ = ["MountCache", "TarStream", "guest_path", "list_dir", "root_problem"]

CHUNK = 1 << 20


def root_problem() -> str | None:
    """Why this process cannot browse files (None when it can)."""
    if os.geteuid() != 0:
        return (
            "the web console runs without root, so it cannot mount restore points: "
            "use `surety files ls|get` as root, or run `surety web` as root to browse here"
        )
    return None


@dataclass
class _Mount:
    stack: ExitStack
    root: Path
    used: float = field(default_factory=time.monotonic)
    users: int = 0


class MountCache:
    """Open mounts by point id; each closes after ``idle_seconds`` unused."""

    def __init__(self, idle_seconds: float = 120, run_root: Path = RUN_ROOT) -> None:
        self.idle_seconds = idle_seconds
        self.run_root = run_root
        self._mounts: dict[str, _Mount] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="surety-web-mounts", daemon=True)
        self._reaper.start()

    def open(self, repo: Repository, point: str) -> Path:
        """The root of ``point``'s file system, mounted (again) if needed."""
        with self._lock:
            mount = self._mounts.get(point)
            if mount is None:
                stack = ExitStack()
                try:
                    source = FileSource(point=point, run_root=self.run_root)
                    mounted = stack.enter_context(mounted_file_system(repo, source, NullProgress()))
                except BaseException:
                    stack.close()
                    raise
                mount = self._mounts[point] = _Mount(stack, mounted.root)
            mount.used = time.monotonic()
            return mount.root

    def hold(self, point: str) -> None:
        """Keep ``point`` mounted while a download streams (``release`` after)."""
        with self._lock:
            self._mounts[point].users += 1

    def release(self, point: str) -> None:
        with self._lock:
            mount = self._mounts.get(point)
            if mount is not None:
                mount.users -= 1
                mount.used = time.monotonic()

    def mounted(self) -> list[str]:
        with self._lock:
            return sorted(self._mounts)

    def close_idle(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                p
                for p, m in self._mounts.items()
                if m.users == 0 and now - m.used >= self.idle_seconds
            ]
            closing = [self._mounts.pop(p) for p in idle]
        for mount in closing:
            mount.stack.close()

    def close_all(self) -> None:
        self._stop.set()
        with self._lock:
            closing, self._mounts = list(self._mounts.values()), {}
        for mount in closing:
            mount.stack.close()

    def _reap(self) -> None:
        while not self._stop.wait(min(self.idle_seconds / 4, 5.0)):
            self.close_idle()


def guest_path(root: Path, path: str) -> tuple[str, Path]:
    """(normalised guest path, host path) of ``path``; a symlink component or ``..`` is
    refused, a missing one is ``UsageError``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{path}: '..' is not allowed in a guest path")
    host = root
    for i, part in enumerate(parts):
        host = host / part
        try:
            st = os.lstat(host)
        except OSError as exc:
            raise UsageError(f"no {'/' + '/'.join(parts[: i + 1])} in this file system") from exc
        if stat.S_ISLNK(st.st_mode) and i < len(parts) - 1:
            raise UsageError(f"/{'/'.join(parts[: i + 1])} is a symbolic link: not followed")
    return "/" + "/".join(parts), host


def list_dir(root: Path, path: str) -> tuple[str, list[Entry]]:
    guest, host = guest_path(root, path)
    if not host.is_dir() or host.is_symlink():
        raise UsageError(f"{guest} is not a directory")
    prefix = guest.rstrip("/")
    with os.scandir(host) as found:
        entries = [
            Entry.of(f"{prefix}/{item.name}", Path(item.path), item.stat(follow_symlinks=False))
            for item in found
        ]
    entries.sort(key=lambda e: (e.kind != "dir", e.path))
    return guest, entries


def read_file(host: Path) -> Iterator[bytes]:
    with open(host, "rb") as f:
        while block := f.read(CHUNK):
            yield block


class TarStream:
    """A directory as a POSIX (pax) tar stream, header by header and block by block:
    memory stays about ``CHUNK`` whatever the file sizes (a slow client only slows it)."""

    def __init__(self, host_dir: Path, name: str) -> None:
        self.host_dir = host_dir
        self.name = name

    def __iter__(self) -> Iterator[bytes]:
        nowhere: Any = _NoFile()
        tar = tarfile.TarFile(fileobj=nowhere, mode="w", format=tarfile.PAX_FORMAT)
        for host, arcname in self._walk():
            info = tar.gettarinfo(str(host), arcname)
            yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if info.isreg():
                sent = 0
                with open(host, "rb") as f:
                    while sent < info.size and (block := f.read(min(CHUNK, info.size - sent))):
                        sent += len(block)
                        yield block
                if sent < info.size:  # the file shrank: keep the archive well-formed
                    yield bytes(info.size - sent)
                if info.size % tarfile.BLOCKSIZE:
                    yield bytes(tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
        yield bytes(2 * tarfile.BLOCKSIZE)  # end of archive

    def _walk(self) -> Iterator[tuple[Path, str]]:
        yield self.host_dir, self.name
        for top, dirs, files in os.walk(self.host_dir, followlinks=False):
            dirs.sort()
            base = Path(top)
            rel = base.relative_to(self.host_dir)
            for name in sorted(dirs) + sorted(files):
                yield base / name, str(Path(self.name) / rel / name)


class _NoFile:
    """``TarFile`` wants a file to build headers with; nothing is written to it."""

    def write(self, data: bytes) -> int:
        raise ExposeError("internal: the tar stream writes its blocks itself")

    def tell(self) -> int:
        return 0
