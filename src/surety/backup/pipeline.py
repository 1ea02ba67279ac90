"""Chunk a disk source into the repository: the backup data path.

Worker threads read (``os.pread`` releases the GIL), hash, compress and seal
chunks; the calling thread only collects results in order and appends them to
packs; pack stores happen in the writer's background thread. At most
``2 * workers + 2`` chunks are in flight, so memory is bounded by that many
chunks plus three packs.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from surety.core.progress import Progress
from surety.repo.format import ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.repository import Repository
from surety.repo.writer import ChunkWriter, PreparedChunk, prepare_chunk

__all__ = ["DiskSource", "DiskStats", "backup_disk"]


class DiskSource(Protocol):
    """A disk to read at one point in time."""

    name: str
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def data_extents(self) -> Iterable[tuple[int, int]]:
        """(offset, length) ranges that may hold data; the rest reads as zeros."""


@dataclass
class DiskStats:
    read_bytes: int = 0
    zero_bytes: int = 0
    new_chunks: int = 0
    new_bytes: int = 0
    stored_bytes: int = 0


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
    reuse: Callable[[int], bytes | None] | None = None,
) -> tuple[ImageIndex, DiskStats]:
    """Store every chunk of ``source``; return its image index (a synthetic full).

    ``reuse(i)`` may return the id of chunk ``i`` known unchanged (changed-block
    tracking); such chunks are not read.
    """
    chunk_size = repo.config.chunk_size
    count = -(-source.size // chunk_size)
    with_data = _chunks_with_data(source, chunk_size)
    ids: list[bytes] = [ZERO_ID] * count
    stats = DiskStats()
    zero = bytes(chunk_size)
    workers = threads or (os.cpu_count() or 2) + 1
    window: deque[tuple[int, Future[PreparedChunk]]] = deque()
    progress.phase(f"backup {source.name}", source.size)

    def drain_one() -> None:
        number, future = window.popleft()
        chunk = future.result()
        writer.add(chunk)
        ids[number] = chunk.chunk_id
        if chunk.chunk_id == ZERO_ID:
            stats.zero_bytes += chunk.raw_length
        progress.advance(chunk.raw_length)

    level = repo.config.compression_level
    before = (writer.new_chunks, writer.new_bytes, writer.stored_bytes)

    def read_and_prepare(offset: int, length: int) -> PreparedChunk:
        return prepare_chunk(repo.keys, source.read(offset, length), zero, writer, level)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="surety-chunk") as pool:
        try:
            for number in range(count):
                length = min(chunk_size, source.size - number * chunk_size)
                known = reuse(number) if reuse is not None else None
                if number not in with_data or known is not None:
                    ids[number] = known or ZERO_ID
                    stats.zero_bytes += length if known is None else 0
                    progress.advance(length)
                    continue
                stats.read_bytes += length
                window.append((number, pool.submit(read_and_prepare, number * chunk_size, length)))
                if len(window) >= workers * 2 + 2:
                    drain_one()
            while window:
                drain_one()
        finally:
            for _number, future in window:
                future.cancel()
    stats.new_chunks = writer.new_chunks - before[0]
    stats.new_bytes = writer.new_bytes - before[1]
    stats.stored_bytes = writer.stored_bytes - before[2]
    return ImageIndex(chunk_size, source.size, tuple(ids)), stats
