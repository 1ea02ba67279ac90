"""``surety restore image``: write one disk of a restore point to a file or device.

File targets are written sparse (zero chunks become holes) to a temporary
name beside the target, fsynced, then renamed: an interrupted or failed
restore never leaves a half-written file under the target's name. Block
device targets are written in place, zero chunks included.
``write_image_file`` is the file writer shared with ``restore.vm``.
"""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import DiskNotFound, Interrupted, TargetError, UsageError
from surety.core.progress import Progress
from surety.hypervisor.images import convert_raw
from surety.repo.format import ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository

__all__ = [
    "ImageRestoreOptions",
    "RestoreResult",
    "restore_image",
    "write_image_file",
    "write_private_file",
]


@dataclass(frozen=True)
class ImageRestoreOptions:
    point: str
    target: Path
    disk: str | None = None
    overwrite: bool = False
    threads: int | None = None
    format: str = "raw"  # raw | qcow2


@dataclass(frozen=True)
class RestoreResult:
    point: Manifest
    disk: str
    target: Path
    size: int
    written: int


def pick_disk(point: Manifest, disk: str | None) -> str:
    names = [d.name for d in point.disks]
    if disk is None:
        if len(names) != 1:
            raise UsageError(f"restore point has disks {', '.join(names)}: choose one with --disk")
        return names[0]
    if disk not in names:
        raise DiskNotFound(
            f"restore point {point.id[:12]} has no disk {disk!r} (it has {', '.join(names)})"
        )
    return disk


def restore_image(
    repo: Repository, options: ImageRestoreOptions, progress: Progress
) -> RestoreResult:
    if options.format not in ("raw", "qcow2"):
        raise UsageError(f"unknown image format {options.format!r} (raw or qcow2)")
    with repo.lock(exclusive=False, operation="restore image"):
        point = repo.resolve(options.point)
        disk = pick_disk(point, options.disk)
        record = point.disk(disk)
        assert record is not None
        image = repo.get_image(record.image)
        written = _write_target(repo, image, options, progress)
    return RestoreResult(point, disk, options.target, image.size, written)


def _is_block_target(target: Path, overwrite: bool, fmt: str) -> bool:
    """Checks the target; True for a block device (written in place)."""
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise TargetError(f"{target}: {exc.strerror}") from exc
    if mode is not None and stat.S_ISBLK(mode):
        if fmt != "raw":
            raise UsageError("a block device target takes raw data only (--format raw)")
        return True
    if mode is not None and not stat.S_ISREG(mode):
        raise TargetError(f"{target} is neither a regular file nor a block device")
    if mode is not None and not overwrite:
        raise TargetError(f"{target} exists; use --overwrite to replace it")
    if not target.parent.is_dir():
        raise TargetError(f"{target.parent} is not a directory")
    return False


def _write_target(
    repo: Repository, image: ImageIndex, options: ImageRestoreOptions, progress: Progress
) -> int:
    target = options.target
    is_block = _is_block_target(target, options.overwrite, options.format)
    progress.phase("restore", image.size)
    if not is_block:
        temporary = target.with_name(f".{target.name}.surety-partial")
        written = write_image_file(
            repo, image, temporary, options.format, threads=options.threads, progress=progress
        )
        try:
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise TargetError(f"writing {target}: {exc.strerror}") from exc
        return written
    try:
        fd = os.open(target, os.O_WRONLY)
    except OSError as exc:
        raise TargetError(f"{target}: {exc.strerror}") from exc
    try:
        written = _write_chunks(
            repo, image=image, fd=fd, is_block=True, threads=options.threads, progress=progress
        )
        os.fsync(fd)
        return written
    except KeyboardInterrupt:
        raise Interrupted("restore interrupted") from None
    except OSError as exc:
        raise TargetError(f"writing {target}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def write_image_file(
    repo: Repository,
    image: ImageIndex,
    path: Path,
    fmt: str,
    *,
    threads: int | None,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> int:
    """Write ``image`` as a complete, fsynced file of format ``fmt`` at ``path``.

    Raw files are sparse (zero chunks are holes); qcow2 is converted from a
    sparse raw file beside ``path``, removed afterwards. Every chunk is
    hash-checked. On any failure nothing is left at ``path``. ``cancel`` set
    by another thread stops the write (``Interrupted``). Returns data bytes.
    """
    raw = path if fmt == "raw" else path.with_name(path.name + ".raw")
    try:
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise TargetError(f"{raw}: {exc.strerror}") from exc
    try:
        try:
            os.ftruncate(fd, image.size)
            written = _write_chunks(
                repo,
                image=image,
                fd=fd,
                is_block=False,
                threads=threads,
                progress=progress,
                cancel=cancel,
            )
            os.fsync(fd)
        finally:
            os.close(fd)
        if raw != path:
            convert_raw(raw, path, fmt)
            _fsync_file(path)
        return written
    except KeyboardInterrupt:
        path.unlink(missing_ok=True)
        raise Interrupted("restore interrupted; the target was not created") from None
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise TargetError(f"writing {path}: {exc.strerror}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        if raw != path:
            raw.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_chunks(
    repo: Repository,
    *,
    image: ImageIndex,
    fd: int,
    is_block: bool,
    threads: int | None,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> int:
    index = repo.index()
    workers = threads or (os.cpu_count() or 2) + 1
    zero = bytes(image.chunk_size)
    window: set[Future[int]] = set()
    written = 0

    def fetch_and_write(chunk_id: bytes, offset: int) -> int:
        data = repo.read_chunk(chunk_id, index.get(chunk_id))
        os.pwrite(fd, data, offset)
        return len(data)

    def drain() -> None:
        nonlocal written, window
        done, window = wait(window, return_when=FIRST_COMPLETED)
        for future in done:
            length = future.result()
            written += length
            progress.advance(length)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="surety-restore") as pool:
        try:
            for number, chunk_id in enumerate(image.chunk_ids):
                if cancel is not None and cancel.is_set():
                    raise Interrupted("restore cancelled")
                length = image.chunk_length(number)
                if chunk_id == ZERO_ID:
                    if is_block:
                        os.pwrite(fd, zero[:length], number * image.chunk_size)
                    progress.advance(length)
                    continue
                window.add(pool.submit(fetch_and_write, chunk_id, number * image.chunk_size))
                if len(window) >= workers * 4:
                    drain()
            while window:
                drain()
        finally:
            for future in window:
                future.cancel()
    return written


def write_private_file(path: Path, data: bytes) -> None:
    """``data`` at ``path``, mode 0600, fsynced (small files: NVRAM, TPM state, records)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
