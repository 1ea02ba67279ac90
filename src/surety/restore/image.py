"""``surety restore image``: write one disk of a restore point to a file or device.

File targets are written sparse (zero chunks become holes) to a hidden partial
file beside the target, fsynced, then renamed over it: an interrupted or failed
restore never leaves a half-written file under the target's name. A partial
file's name has a fixed length (``.surety-partial-<8 hex>``), so every valid
target name works. Its writer holds an exclusive ``flock`` on it until the
rename; each restore into a directory first removes the partial files there
that no live process holds (left by a restore killed with -9), with a note.
The final rename and the directory fsync run in a deferred section
(``surety.core.interrupts``): a stop request arriving there lets the restore
complete, and it is reported complete, with a note.

Block device targets are written in place, zero chunks included; one smaller
than the disk is refused before anything is written. Every write is checked:
a short write goes on with the rest, and a write of nothing or ENOSPC ends the
restore with a ``TargetError`` ("no space left"), never a success.
``write_image_file`` is the file writer shared with ``restore.vm``;
``write_private_file`` (small 0600 files) with ``restore.vm`` and ``restore.instant``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from surety.core import interrupts
from surety.core.errors import DiskNotFound, Interrupted, TargetError, UsageError
from surety.core.progress import Progress
from surety.core.units import format_size
from surety.hypervisor.images import convert_raw
from surety.repo.format import PACK_SIZE_TARGET, ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.index import Location
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.repo.runs import Scratch, iter_run, read_span, span_of

__all__ = [
    "PARTIAL_PREFIX",
    "ImageRestoreOptions",
    "RestoreResult",
    "remove_stale_partials",
    "restore_image",
    "write_image_file",
    "write_private_file",
]

PARTIAL_PREFIX = ".surety-partial-"


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
    target = options.target
    with ExitStack() as finishing:
        with repo.lock(exclusive=False, operation="restore image", read_only=True):
            point = repo.resolve(options.point)
            disk = pick_disk(point, options.disk)
            record = point.disk(disk)
            assert record is not None
            image = repo.get_image(record.image)
            progress.phase("restore", image.size)
            if _is_block_target(target, options.overwrite, options.format):
                written = _write_block(repo, image, target, options.threads, progress)
                return RestoreResult(point, disk, target, image.size, written)
            partial = finishing.enter_context(_partial_beside(target, progress))
            written = _fill(
                repo, image, partial, options.format, threads=options.threads, progress=progress
            )
        _install(partial, target, progress)
    return RestoreResult(point, disk, target, image.size, written)


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


_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "no space left (quota)"}


@contextmanager
def _target_errors(target: Path, interrupted: str) -> Iterator[None]:
    """OSError and KeyboardInterrupt in the block, as one-line errors naming ``target``."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"restore interrupted; {interrupted}") from None
    except OSError as exc:
        reason = _NO_SPACE.get(exc.errno or 0, exc.strerror or str(exc))
        raise TargetError(f"writing {target}: {reason}") from exc


def _write_block(
    repo: Repository, image: ImageIndex, target: Path, threads: int | None, progress: Progress
) -> int:
    with _target_errors(target, f"{target} is only partly written"):
        fd = os.open(target, os.O_WRONLY)
        try:
            room = os.lseek(fd, 0, os.SEEK_END)
            if room < image.size:
                raise TargetError(
                    f"writing {target}: no space left on device: it holds {format_size(room)} "
                    f"({room} bytes), the disk needs {image.size} bytes"
                )
            written = _write_chunks(
                repo, image=image, fd=fd, is_block=True, threads=threads, progress=progress
            )
            os.fsync(fd)
            return written
        finally:
            os.close(fd)


class _Partial:
    """A file being written, held open (and ``flock``ed when created here) until released."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.held = True

    @classmethod
    def create(cls, directory: Path) -> _Partial:
        """A new ``.surety-partial-<8 hex>`` file in ``directory``, locked by this process."""
        while True:
            path = directory / f"{PARTIAL_PREFIX}{secrets.token_hex(4)}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits while a sweeper looks at it
            if os.fstat(fd).st_nlink:
                return cls(path, fd)
            os.close(fd)  # a sweeper took it for abandoned before the lock: a new name

    def release(self) -> None:
        if self.held:
            self.held = False
            os.close(self.fd)

    def discard(self) -> None:
        """Close and remove the file, unless it was already released (installed)."""
        if self.held:
            self.release()
            self.path.unlink(missing_ok=True)


@contextmanager
def _partial_beside(target: Path, progress: Progress) -> Iterator[_Partial]:
    """A new partial file in the target's directory; removed unless it is installed."""
    for path in remove_stale_partials(target.parent):
        progress.note(f"removed {path}, a partial file left by a restore that did not finish")
    with _target_errors(target, f"{target} was not changed"):
        partial = _Partial.create(target.parent)
        try:
            yield partial
        finally:
            partial.discard()


def _install(partial: _Partial, target: Path, progress: Progress) -> None:
    """Rename the complete partial file over ``target``; a stop request waits for it."""
    with _target_errors(target, f"{target} was not changed"), interrupts.deferred() as rename:
        os.replace(partial.path, target)
        partial.release()
        _fsync_directory(target.parent)
        if rename.requested:
            progress.note(f"a stop request came after {target} was complete; it is kept")


def remove_stale_partials(directory: Path) -> list[Path]:
    """Remove the partial files in ``directory`` that no live writer holds; returns them."""
    try:
        candidates = sorted(directory.glob(f"{PARTIAL_PREFIX}*"))
    except OSError:
        return []
    return [path for path in candidates if _remove_if_abandoned(path)]


def _remove_if_abandoned(path: Path) -> bool:
    """Remove ``path`` if no process holds its ``flock`` (its writer is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        path.unlink()
        return True
    except OSError:  # BlockingIOError: a live restore is writing it
        return False
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
    sparse raw partial file beside ``path``, removed afterwards. Every chunk is
    hash-checked. On any failure nothing is left at ``path``. ``cancel`` set
    by another thread stops the write (``Interrupted``). Returns data bytes.
    """
    with _target_errors(path, "the target was not created"):
        out = _Partial(path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        try:
            written = _fill(
                repo, image, out, fmt, threads=threads, progress=progress, cancel=cancel
            )
        except BaseException:
            out.discard()
            raise
        out.release()
        return written


def _fill(
    repo: Repository,
    image: ImageIndex,
    out: _Partial,
    fmt: str,
    *,
    threads: int | None,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> int:
    """Write ``image`` into ``out`` in format ``fmt``, fsynced; returns data bytes."""
    if fmt == "raw":
        return _fill_raw(repo, image, out.fd, threads=threads, progress=progress, cancel=cancel)
    raw = _Partial.create(out.path.parent)
    try:
        written = _fill_raw(repo, image, raw.fd, threads=threads, progress=progress, cancel=cancel)
        convert_raw(raw.path, out.path, fmt)
    finally:
        raw.discard()
    os.fsync(out.fd)
    return written


def _fill_raw(
    repo: Repository,
    image: ImageIndex,
    fd: int,
    *,
    threads: int | None,
    progress: Progress,
    cancel: threading.Event | None,
) -> int:
    os.ftruncate(fd, image.size)
    written = _write_chunks(
        repo, image=image, fd=fd, is_block=False, threads=threads, progress=progress, cancel=cancel
    )
    os.fsync(fd)
    return written


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset``: a short write goes on, a write of nothing is ENOSPC."""
    view = memoryview(data)
    while view:
        count = os.pwrite(fd, view, offset)
        if count == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[count:], offset + count


# From radosgw (bench/s3.py, 1 GiB): 4 MiB / 128 KiB / 256 made 276 GETs, these 54 (restic
# 45) for the same bytes fetched. A worker holds one span: memory stays bounded.
# Twice the pack target: a pack passes its target by up to one chunk, and a run of 16 MiB
# cut a full pack in two, the second read a few KiB (bench/s3.py, 4 GiB: 170 GETs -> 119 for
# the same 1.46 GiB; a GET costs ~1 ms of client and ~2 ms of server CPU). A span never
# exceeds its pack.
RUN_BYTES = 2 * PACK_SIZE_TARGET  # at most this span of a pack fetched by one read
RUN_GAP = 256 << 10  # stored bytes of other chunks one read may step over
# Object storage: a request costs more than 1 MiB read (bench/s3.py's changed image from
# radosgw: 121 GETs of 369 MiB at 256 KiB, 42 GETs of 393 MiB at 1 MiB).
RUN_GAP_OBJECT = 1 << 20
RUN_WINDOW = 1024  # image chunks looked at before every pending run is fetched


@dataclass
class _Run:
    """Chunks of one pack fetched by one read (``Repository.read_run``), and where each
    goes in the image."""

    chunks: list[tuple[bytes, Location | None]]
    offsets: list[int]


@dataclass
class _Pending:
    """Chunks met in image order whose copies lie within ``RUN_BYTES`` of one pack."""

    start: int
    end: int
    members: list[tuple[bytes, Location, int]]

    def takes(self, loc: Location) -> bool:
        return max(self.end, loc.offset + loc.length) - min(self.start, loc.offset) <= RUN_BYTES

    def add(self, chunk_id: bytes, loc: Location, offset: int) -> None:
        self.start, self.end = min(self.start, loc.offset), max(self.end, loc.offset + loc.length)
        self.members.append((chunk_id, loc, offset))

    def runs(self, gap: int) -> Iterator[_Run]:
        """Sorted by their place in the pack, split where a gap exceeds ``gap`` bytes."""
        run: _Run | None = None
        end = 0
        for chunk_id, loc, offset in sorted(self.members, key=lambda m: m[1].offset):
            if run is not None and loc.offset - end > gap:
                yield run
                run = None
            if run is None:
                run, end = _Run([], []), loc.offset
            run.chunks.append((chunk_id, loc))
            run.offsets.append(offset)
            end = max(end, loc.offset + loc.length)
        if run is not None:
            yield run


def _runs(
    image: ImageIndex, locate: Callable[[bytes], Location | None], gap: int | None = None
) -> Iterator[_Run | int]:
    """The image's stored chunks grouped into runs, and (as ints) its zero chunks' numbers.

    Backup threads finish chunks out of order, so a pack holds an image region's chunks
    close together but not in order: chunks met within ``RUN_WINDOW`` of each other are
    grouped per pack, then read in the pack's order, one read stepping over at most
    ``gap`` bytes of other chunks (``RUN_GAP``; ``RUN_GAP_OBJECT`` on object storage)."""
    gap = RUN_GAP if gap is None else gap
    pending: dict[str, _Pending] = {}
    seen = 0
    for number, chunk_id in enumerate(image.chunk_ids):
        if chunk_id == ZERO_ID:
            yield number
            continue
        offset = number * image.chunk_size
        loc = locate(chunk_id)
        if loc is None:  # read_chunk names it missing
            yield _Run([(chunk_id, None)], [offset])
            continue
        group = pending.get(loc.pack)
        if group is not None and not group.takes(loc):
            yield from group.runs(gap)
            group = None
        if group is None:
            group = pending[loc.pack] = _Pending(loc.offset, loc.offset + loc.length, [])
        group.add(chunk_id, loc, offset)
        seen += 1
        if seen >= RUN_WINDOW:
            for group in pending.values():
                yield from group.runs(gap)
            pending, seen = {}, 0
    for group in pending.values():
        yield from group.runs(gap)


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
    """Every chunk of ``image`` at its offset in ``fd``; zeros only on a block device.

    Chunks stored close together in one pack are fetched together (``_runs``), each
    still hash-checked; runs are decoded and written by a pool of threads, a bounded
    window of them in flight, each thread into its own reused buffers (``Scratch``). On
    object storage the reads are made ahead by their own pool (``_ReadAhead``): the
    network is kept busy while the writers decrypt."""
    index = repo.index()
    workers = threads or (os.cpu_count() or 2) + 1
    zero = bytes(image.chunk_size)
    window: dict[Future[int], int] = {}  # write -> the span bytes it holds
    written = 0
    scratches = threading.local()

    def fetch_and_write(run: _Run, fetch: Callable[[], bytes] | None) -> int:
        scratch: Scratch | None = getattr(scratches, "scratch", None)
        if scratch is None:
            scratch = scratches.scratch = Scratch(image.chunk_size)
        total = 0
        chunks = iter_run(repo, run.chunks, fetch, scratch)
        for data, offset in zip(chunks, run.offsets, strict=True):
            _pwrite_all(fd, data, offset)
            total += len(data)
        _start_writeback(fd, min(run.offsets), max(run.offsets) + image.chunk_size)
        return total

    def drain() -> None:
        nonlocal written
        done, _ = wait(window, return_when=FIRST_COMPLETED)
        for future in done:
            del window[future]
            length = future.result()
            written += length
            progress.advance(length)

    with ExitStack() as pools:
        pool = pools.enter_context(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="surety-restore")
        )
        remote = repo.object_lock is not None  # object storage
        ahead = pools.enter_context(_ReadAhead(repo)) if remote else None
        try:
            for item in _runs(image, index.get, RUN_GAP_OBJECT if remote else RUN_GAP):
                if cancel is not None and cancel.is_set():
                    raise Interrupted("restore cancelled")
                if isinstance(item, _Run):
                    fetch, held = ahead.submit(item) if ahead is not None else (None, 0)
                    window[pool.submit(fetch_and_write, item, fetch)] = held
                    while window and (
                        len(window) >= max(workers * 2, READ_AHEAD)
                        or sum(window.values()) > READ_AHEAD_BYTES
                    ):
                        drain()
                    continue
                length = image.chunk_length(item)
                if is_block:
                    _pwrite_all(fd, zero[:length], item * image.chunk_size)
                progress.advance(length)
            while window:
                drain()
        finally:
            for future in window:
                future.cancel()
            if ahead is not None:
                ahead.cancel()
    return written


# Object storage (bench/s3.py, radosgw): with the reads made by the 3 writers, no GET was in
# flight 46 % of the data phase (bench/restore_profile.py --timeline); GETs made ahead keep
# the server busy while the writers decrypt. Memory: at most READ_AHEAD_BYTES of spans being
# read, read, or being written (+ one run, at most RUN_BYTES), whatever the image's size.
# The spans on object storage are large (RUN_GAP_OBJECT: median 14 MiB on the bench's image),
# and the writers hold one each: 64 MiB leaves a run or two read ahead of three writers
# (32 MiB left none; peak RSS +76 MiB on the 1 GiB image, +35 MiB with 32).
READ_AHEAD = 8  # GETs in flight at most (a pool of this many threads)
READ_AHEAD_BYTES = 64 << 20  # span bytes held at most (being read, read, being written)


class _ReadAhead:
    """A pool that reads runs' spans (``runs.read_span``) ahead of the writers."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.pool = ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="surety-get")
        self.reads: list[Future[bytes]] = []

    def __enter__(self) -> _ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, run: _Run) -> tuple[Callable[[], bytes] | None, int]:
        """The read of ``run``'s span, started (its ``result``), and its length; (None, 0)
        when the run cannot be read in one (``iter_run`` falls back on its own)."""
        span = span_of(run.chunks)
        if span is None:
            return None, 0
        read = self.pool.submit(read_span, self.repo, span)
        self.reads = [r for r in self.reads if not r.done()] + [read]
        return read.result, span.length

    def cancel(self) -> None:
        for read in self.reads:
            read.cancel()


def _start_writeback(fd: int, start: int, end: int) -> None:
    """Start writing ``[start, end)`` to disk now, without waiting (``POSIX_FADV_DONTNEED``
    on dirty pages starts their writeback; clean ones leave the page cache).

    The final ``fsync`` then waits for little: the disk writes overlap decryption and
    decompression instead of following them (0.2-0.25 s per GiB of wall time in
    ``bench/restore_profile.py``), and a restore of a large disk does not fill the
    host's page cache with dirty pages."""
    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)


def write_private_file(path: Path, data: bytes) -> None:
    """``data`` at ``path``, mode 0600, fsynced (small files: NVRAM, TPM state, records)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
