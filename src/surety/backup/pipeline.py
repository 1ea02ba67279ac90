"""Chunk a disk source into the repository: the backup data path.

Worker threads read (``os.pread`` releases the GIL), hash, compress and seal
chunks; the calling thread only collects results in order and appends them to
packs; pack stores happen in the writer's background thread. At most
``4 * workers`` chunks are in flight, so memory is bounded by that many
chunks plus three packs.

An incremental takes clean chunks from its parent unread and rebuilds dirty
ones from the parent's chunk, except where the parent's copy is damaged or
absent (recorded in ``repo.damage``, or in a damaged index object): those are
read whole from the source and stored afresh, so damage never propagates and
the parent's restore points heal with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from surety.core.progress import Progress
from surety.repo.format import ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.repository import Repository
from surety.repo.writer import ChunkWriter, PreparedChunk, prepare_chunk

__all__ = ["ChangedBlocks", "DiskSource", "DiskStats", "backup_disk"]


class DiskSource(Protocol):
    """A disk to read at one point in time."""

    name: str
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def data_extents(self) -> Iterable[tuple[int, int]]:
        """(offset, length) ranges that may hold data; the rest reads as zeros."""


@dataclass(frozen=True)
class ChangedBlocks:
    """Changed-block tracking for one disk: the parent's image index + dirty ranges.

    ``dirty`` maps a chunk number to the (absolute offset, length) ranges written
    since the parent. Clean chunks are taken from the parent unread; a dirty
    chunk is rebuilt from the parent's chunk with only its dirty ranges read,
    so the bytes read from the disk follow the bytes changed, not the chunk size.
    """

    parent: ImageIndex
    dirty: dict[int, list[tuple[int, int]]]

    @classmethod
    def from_extents(cls, parent: ImageIndex, extents: Iterable[tuple[int, int]]) -> ChangedBlocks:
        size = parent.chunk_size
        dirty: dict[int, list[tuple[int, int]]] = {}
        for start, length in extents:
            position, end = start, start + length
            while position < end:
                stop = min(end, (position // size + 1) * size)
                dirty.setdefault(position // size, []).append((position, stop - position))
                position = stop
        return cls(parent, dirty)

    def action(self, number: int, length: int) -> tuple[str, int]:
        """How to get chunk ``number``: ("parent", 0), ("patch", n) or ("read", n)."""
        ranges = self.dirty.get(number)
        if ranges is None:
            return "parent", 0
        dirty_bytes = sum(size for _, size in ranges)
        return ("patch", dirty_bytes) if dirty_bytes < length else ("read", length)


@dataclass
class DiskStats:
    read_bytes: int = 0
    zero_bytes: int = 0
    new_chunks: int = 0
    new_bytes: int = 0
    stored_bytes: int = 0
    healed_chunks: int = 0  # clean or dirty chunks read whole: the parent's copy is damaged


def _chunks_with_data(source: DiskSource, chunk_size: int) -> set[int]:
    wanted: set[int] = set()
    for offset, length in source.data_extents():
        if length > 0:
            wanted.update(range(offset // chunk_size, (offset + length - 1) // chunk_size + 1))
    return wanted


def backup_disk(
    repo: Repository,
    *,
    writer: ChunkWriter,
    source: DiskSource,
    progress: Progress,
    threads: int | None = None,
    changed: ChangedBlocks | None = None,
) -> tuple[ImageIndex, DiskStats]:
    """Store every chunk of ``source``; return its image index (a synthetic full).

    With ``changed`` (changed-block tracking against a parent of the same size),
    only dirty ranges are read; everything else comes from the parent.
    """
    run = _DiskBackup(repo, writer, source, progress, changed)
    before = (writer.new_chunks, writer.new_bytes, writer.stored_bytes)
    run.run(threads or (os.cpu_count() or 2) + 1)
    run.stats.new_chunks = writer.new_chunks - before[0]
    run.stats.new_bytes = writer.new_bytes - before[1]
    run.stats.stored_bytes = writer.stored_bytes - before[2]
    return ImageIndex(run.chunk_size, source.size, tuple(run.ids)), run.stats


class _DiskBackup:
    """The state of one disk's backup: chunk ids so far, stats, the in-flight window."""

    def __init__(
        self,
        repo: Repository,
        writer: ChunkWriter,
        source: DiskSource,
        progress: Progress,
        changed: ChangedBlocks | None,
    ) -> None:
        self.repo, self.writer, self.source = repo, writer, source
        self.progress, self.changed = progress, changed
        self.chunk_size = repo.config.chunk_size
        self.ids: list[bytes] = [ZERO_ID] * -(-source.size // self.chunk_size)
        self.stats = DiskStats()
        self.zero = bytes(self.chunk_size)
        self.level = repo.config.compression_level
        self.window: dict[Future[PreparedChunk], int] = {}  # in flight -> chunk number
        self.index = repo.index()

    def run(self, workers: int) -> None:
        with_data = _chunks_with_data(self.source, self.chunk_size)
        self.progress.phase(f"backup {self.source.name}", self.source.size)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="surety-chunk") as pool:
            try:
                for number in range(len(self.ids)):
                    self._one(pool, number, number in with_data)
                    if len(self.window) >= workers * 4:
                        self._drain()
                while self.window:
                    self._drain()
            finally:
                for future in self.window:
                    future.cancel()

    def _one(self, pool: ThreadPoolExecutor, number: int, has_data: bool) -> None:
        length = min(self.chunk_size, self.source.size - number * self.chunk_size)
        changed = self.changed
        how, to_read = changed.action(number, length) if changed else ("read", length)
        if how != "read" and not self._parent_chunk_healthy(number):
            how, to_read = "read", length  # heal: never build on a damaged or absent chunk
            self.stats.healed_chunks += 1
        if how == "parent" and changed is not None:
            self.ids[number] = changed.parent.chunk_ids[number]  # clean: taken unread
        elif not has_data:  # a hole, or known zeros
            self.stats.zero_bytes += length
        else:
            self.stats.read_bytes += to_read
            work = self._patch if how == "patch" else self._read
            self.window[pool.submit(work, number, length)] = number
            return
        self.progress.advance(length)

    def _parent_chunk_healthy(self, number: int) -> bool:
        assert self.changed is not None
        parent_id = self.changed.parent.chunk_ids[number]
        return parent_id == ZERO_ID or parent_id in self.index

    def _drain(self) -> None:
        """Collect whatever finished (order does not matter: ids go by number)."""
        done, _pending = wait(self.window, return_when=FIRST_COMPLETED)
        for future in done:
            number = self.window.pop(future)
            chunk = future.result()
            self.writer.add(chunk)
            self.ids[number] = chunk.chunk_id
            if chunk.chunk_id == ZERO_ID:
                self.stats.zero_bytes += chunk.raw_length
            self.progress.advance(chunk.raw_length)

    def _read(self, number: int, length: int) -> PreparedChunk:
        data = self.source.read(number * self.chunk_size, length)
        return prepare_chunk(self.repo.keys, data, self.zero, self.writer, self.level)

    def _patch(self, number: int, length: int) -> PreparedChunk:
        """The parent's chunk with this chunk's dirty ranges read anew."""
        assert self.changed is not None
        parent_id = self.changed.parent.chunk_ids[number]
        parent = self.zero[:length] if parent_id == ZERO_ID else self.repo.read_chunk(parent_id)
        base, start = bytearray(parent), number * self.chunk_size
        for offset, size in self.changed.dirty[number]:
            base[offset - start : offset - start + size] = self.source.read(offset, size)
        return prepare_chunk(self.repo.keys, bytes(base), self.zero, self.writer, self.level)
