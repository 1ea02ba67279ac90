"""``surety backup image``: back up a raw disk image file or block device."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from surety.backup.pipeline import DiskStats, backup_disk
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
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(f"cannot open {path}: {exc.strerror}") from exc
        mode = os.fstat(self.fd).st_mode
        if stat.S_ISDIR(mode):
            os.close(self.fd)
            raise SourceError(f"{path} is a directory, not a disk image")
        self.is_block = stat.S_ISBLK(mode)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

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
    try:
        with repo.lock(exclusive=False, operation=f"backup image {options.name}"):
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
            disk = DiskRecord(
                disk_name,
                source.size,
                repo.put_image(image),
                str(options.source.resolve()),
                _stats(stats),
            )
            manifest = Manifest(
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
            point_id = repo.commit(manifest)
    finally:
        source.close()
    return Manifest(**{**manifest.__dict__, "id": point_id})


def _stats(stats: DiskStats) -> dict[str, int]:
    return dict(stats.__dict__)
