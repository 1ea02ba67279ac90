"""``surety backup image``: back up a raw disk image file or block device.

A source is a non-empty regular file or block device; anything else (a FIFO
or pipe, a character device such as ``/dev/zero``, a directory) is refused
before the repository is touched. The manifest commit runs in a deferred
section (``surety.core.interrupts``): a stop request arriving there lets the
commit finish, and the point is reported committed, with a note.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from surety.backup.pipeline import DiskStats, backup_disk
from surety.core import interrupts
from surety.core.errors import Interrupted, SourceError, UsageError
from surety.core.progress import Progress
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.repo.writer import ChunkWriter

__all__ = ["ImageBackupOptions", "ImageFile", "backup_image"]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


@dataclass(frozen=True)
class ImageBackupOptions:
    source: Path
    name: str
    disk: str | None = None  # disk name inside the restore point; default: file name
    threads: int | None = None


class ImageFile:
    """A raw image file or block device, read with pread; holes are skipped."""

    def __init__(self, path: Path, name: str) -> None:
        self.name = name
        self.path = path
        self.fd = _open_source(path)
        try:
            self.is_block = stat.S_ISBLK(os.fstat(self.fd).st_mode)
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            if self.size == 0:
                raise SourceError(f"{path} is empty (0 bytes): there is no disk to back up")
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except BaseException:
            os.close(self.fd)
            raise

    def read(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as exc:
            raise SourceError(f"reading {self.path} at {offset}: {exc.strerror}") from exc
        if len(data) != length:
            raise SourceError(f"{self.path} shrank while being read (at {offset})")
        return data

    def data_extents(self) -> Iterator[tuple[int, int]]:
        if self.is_block:
            yield 0, self.size
            return
        offset = 0
        while offset < self.size:
            try:
                start = os.lseek(self.fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                return
            end = os.lseek(self.fd, start, os.SEEK_HOLE)
            yield start, end - start
            offset = end

    def close(self) -> None:
        os.close(self.fd)


def _open_source(path: Path) -> int:
    """A read-only fd on a regular file or block device; anything else is refused.

    O_NONBLOCK keeps the open of a FIFO without a writer from hanging; it is
    cleared once the kind is known.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        os.close(fd)
        raise SourceError(
            f"{path} is {_kind(mode)}: a source must be a regular file or a block device"
        )
    os.set_blocking(fd, True)
    return fd


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _validate_name(name: str) -> None:
    if not name or not set(name) <= _NAME_CHARS or name.startswith("."):
        raise UsageError(f"invalid name {name!r}: use letters, digits, '-', '_', '.', ':'")


def backup_image(repo: Repository, options: ImageBackupOptions, progress: Progress) -> Manifest:
    """Back up one image; returns the committed restore point's manifest."""
    _validate_name(options.name)
    disk_name = options.disk or options.source.name
    _validate_name(disk_name)
    source = ImageFile(options.source, disk_name)
    started = datetime.now(UTC)
    with ExitStack() as finishing:  # closed last: the commit section outlives the lock
        finishing.callback(source.close)
        with repo.lock(exclusive=False, operation=f"backup image {options.name}"):
            manifest = _store(repo, options, source, progress, started)
            commit = finishing.enter_context(interrupts.deferred())
            point_id = repo.commit(manifest)
        if commit.requested:
            progress.note(
                f"a stop request came after restore point {point_id[:12]} was committed; "
                "the restore point is complete"
            )
        return Manifest(**{**manifest.__dict__, "id": point_id})


def _store(
    repo: Repository,
    options: ImageBackupOptions,
    source: ImageFile,
    progress: Progress,
    started: datetime,
) -> Manifest:
    """Store the source's chunks and image index; returns the manifest to commit."""
    parent = next((p for p in reversed(repo.points()) if p.name == options.name), None)
    writer = ChunkWriter(repo)
    try:
        image, stats = backup_disk(
            repo, writer=writer, source=source, progress=progress, threads=options.threads
        )
        progress.phase("commit")
        writer.finish()
    except KeyboardInterrupt:
        writer.abort()
        raise Interrupted("backup interrupted; nothing was committed") from None
    except BaseException:
        writer.abort()
        raise
    source_path = str(options.source.resolve())
    disk = DiskRecord(source.name, source.size, repo.put_image(image), source_path, _stats(stats))
    return Manifest(
        name=options.name,
        kind="image",
        started=started,
        finished=datetime.now(UTC),
        host=socket.gethostname(),
        disks=(disk,),
        consistency="crash",
        consistency_reason="image file or block device read as is (no guest help)",
        parent=parent.id if parent else None,
        stats=_stats(stats),
    )


def _stats(stats: DiskStats) -> dict[str, int]:
    return dict(stats.__dict__)
