"""File-level restore: see the files of a restore point without restoring its disk.

``mounted_file_system`` is the whole stack in one context manager: a private
run directory under ``RUN_ROOT`` (``export.rundir``), the disk served from the
repository (``export.serve``), attached as a read-only loop device and one
file system mounted read-only (``export.attach``). Teardown runs in
``finally`` in reverse order, also on Ctrl-C; a run killed with -9 is cleaned
up by the next one.

Choosing the file system: ``--fs N`` (the partition number; 0 = a file system
on the whole disk), else the only mountable one, else a usage error that lists
them. Guest paths resolve inside the mounted file system (``guestpath``).

Damaged data shouts: the server answers EIO for a chunk that fails its
check and records it; any failure here (mount, probe, read), and a run that
succeeded while the server refused a read, ends in ``IntegrityError``.
Listing is here; extraction is ``extract``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import ExposeError, IntegrityError, StorageError, UsageError
from surety.core.progress import Progress
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.restore.export import (
    FileSystem,
    ServedDisk,
    attach_disk,
    check_host,
    find_file_systems,
    mount_readonly,
    run_directory,
    serve_disk,
)
from surety.restore.files.guestpath import Entry, resolve

__all__ = [
    "RUN_ROOT",
    "FileSource",
    "FileSystemsResult",
    "Listing",
    "MountedFileSystem",
    "choose_file_system",
    "list_file_systems",
    "list_files",
    "mounted_file_system",
]

RUN_ROOT = Path("/run/surety/files")  # parent of the private run directories (--runtime-dir)


@dataclass(frozen=True)
class FileSource:
    """Where files are read from, and where the host side of the stack lives."""

    point: str  # id, id prefix or NAME@latest
    disk: str | None = None
    fs: int | None = None  # partition number; 0 = the whole disk
    run_root: Path = RUN_ROOT  # private run directories (see restore.export.rundir)


@dataclass(frozen=True)
class MountedFileSystem:
    served: ServedDisk
    fs: FileSystem
    root: Path  # where it is mounted (read-only, private)


@dataclass(frozen=True)
class FileSystemsResult:
    point: Manifest
    disk: str
    file_systems: list[FileSystem]


@dataclass(frozen=True)
class Listing:
    point: Manifest
    disk: str
    fs: FileSystem
    path: str  # the guest path listed (resolved)
    entries: list[Entry]


def list_file_systems(
    repo: Repository, source: FileSource, progress: Progress
) -> FileSystemsResult:
    with _attached(repo, source, progress) as (served, device, _run):
        return FileSystemsResult(served.point, served.disk, find_file_systems(device))


def list_files(repo: Repository, source: FileSource, path: str, progress: Progress) -> Listing:
    """The entries of directory ``path`` (or the entry ``path`` names, if not a directory)."""
    with mounted_file_system(repo, source, progress) as mounted:
        guest, host = resolve(mounted.root, path)
        if os.path.islink(host):  # a link to a directory lists the directory, as ls does
            followed = resolve(mounted.root, path, follow=True)
            if os.path.isdir(followed[1]):
                guest, host = followed
        st = os.lstat(host)
        if not stat.S_ISDIR(st.st_mode):
            entries = [Entry.of(guest, host, st)]
        else:
            prefix = guest.rstrip("/")
            with os.scandir(host) as found:
                entries = [
                    Entry.of(
                        f"{prefix}/{item.name}", Path(item.path), item.stat(follow_symlinks=False)
                    )
                    for item in found
                ]
            entries.sort(key=lambda entry: entry.path)
        return Listing(mounted.served.point, mounted.served.disk, mounted.fs, guest, entries)


@contextmanager
def mounted_file_system(
    repo: Repository, source: FileSource, progress: Progress
) -> Iterator[MountedFileSystem]:
    """The chosen file system of the restore point, mounted read-only, until the block ends."""
    with _attached(repo, source, progress) as (served, device, run):
        fs = choose_file_system(find_file_systems(device), source.fs, served.disk)
        with mount_readonly(fs, run / "fs") as root:
            yield MountedFileSystem(served, fs, root)


def choose_file_system(found: list[FileSystem], number: int | None, disk: str) -> FileSystem:
    listed = ", ".join(fs.describe() for fs in found) or "none"
    if number is not None:
        chosen = next((fs for fs in found if fs.number == number), None)
        if chosen is None:
            raise UsageError(f"disk {disk} has no file system {number} (it has: {listed})")
        if not chosen.mountable:
            raise ExposeError(f"{chosen.describe()} on disk {disk} is not a mountable file system")
        return chosen
    mountable = [fs for fs in found if fs.mountable]
    if not mountable:
        raise ExposeError(f"no file system surety can mount on disk {disk} (found: {listed})")
    if len(mountable) > 1:
        raise UsageError(f"disk {disk} has several file systems: {listed}; choose one with --fs N")
    return mountable[0]


@contextmanager
def _attached(
    repo: Repository, source: FileSource, progress: Progress
) -> Iterator[tuple[ServedDisk, Path, Path]]:
    check_host()
    notes: list[str] = []
    try:
        with (
            run_directory(notes, source.run_root, "file-level restore") as run,
            serve_disk(repo, source.point, source.disk, workdir=run) as served,
            _damage_shouts(served, mounted_at=run / "fs"),
            attach_disk(served, run) as device,
        ):
            yield served, device, run
    finally:
        for note in notes:
            progress.note(note)


@contextmanager
def _damage_shouts(served: ServedDisk, mounted_at: Path) -> Iterator[None]:
    """Failures the server saw become the error; a clean run that had one still fails."""
    try:
        yield
    except (OSError, ExposeError) as exc:
        _raise_read_failures(served, exc)
        if isinstance(exc, OSError):
            guest = str(exc.filename or "").removeprefix(str(mounted_at)) or "/"
            raise ExposeError(f"reading {guest} in disk {served.disk}: {exc.strerror}") from exc
        raise
    _raise_read_failures(served, None)


def _raise_read_failures(served: ServedDisk, cause: BaseException | None) -> None:
    failures = served.read_failures()
    damaged = [f for f in failures if f.kind == "IntegrityError"]
    if damaged:
        raise IntegrityError(
            f"disk {served.disk} of restore point {served.point.id[:12]}: {damaged[0].message} "
            f"({len(damaged)} reads refused; no damaged byte was returned)"
        ) from cause
    if failures:
        raise StorageError(f"reading disk {served.disk}: {failures[0].message}") from cause
