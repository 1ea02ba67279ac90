"""Writing chunks: dedup, seal, pack, store in the background, then index.

``ChunkWriter`` is used by one thread (the pipeline's ordered consumer), while
``prepare`` (hash, compress, seal) runs in worker threads. Packs are stored by
a single background thread with at most ``MAX_PACKS_IN_FLIGHT`` waiting, so
memory stays bounded. ``finish`` waits for every pack to be durable and only
then writes the index object: a chunk is never indexed before its pack exists.
On an immutable repository the writer first checks this host's clock against
the server's (``Repository.prepare_locked_writes``): every pack is locked from
the host's clock.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from surety.repo import codec
from surety.repo.crypto import MasterKeys
from surety.repo.format import ZERO_ID
from surety.repo.pack import PackBuilder, PackEntry, chunk_kind
from surety.repo.repository import Repository

__all__ = ["ChunkWriter", "PreparedChunk", "prepare_chunk"]

MAX_PACKS_IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    chunk_id: bytes
    raw_length: int
    sealed: bytes | None  # None: zero chunk, or already known to the index


def prepare_chunk(
    keys: MasterKeys, data: bytes, zero: bytes, known: ChunkWriter, level: int
) -> PreparedChunk:
    """Worker-thread part: zero test, keyed hash, dedup test, compress, seal."""
    if data == zero[: len(data)]:
        return PreparedChunk(ZERO_ID, len(data), None)
    chunk_id = keys.chunk_id(data)
    if known.has(chunk_id):
        return PreparedChunk(chunk_id, len(data), None)
    sealed = keys.seal(chunk_kind(chunk_id), codec.encode(data, level))
    return PreparedChunk(chunk_id, len(data), sealed)


class ChunkWriter:
    def __init__(self, repo: Repository) -> None:
        repo.prepare_locked_writes()
        self.repo = repo
        self._index = repo.index()
        self._pending: set[bytes] = set()
        self._pack = PackBuilder()
        self._stored: list[tuple[str, list[PackEntry]]] = []
        self._uploads: list[Future[tuple[str, list[PackEntry]]]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="surety-pack")
        self.new_chunks = 0
        self.new_bytes = 0  # raw bytes of new chunks
        self.stored_bytes = 0  # sealed bytes written

    def has(self, chunk_id: bytes) -> bool:
        return chunk_id in self._index or chunk_id in self._pending

    def add(self, chunk: PreparedChunk) -> None:
        """Add a prepared chunk (no-op if zero or already stored)."""
        if chunk.sealed is None or chunk.chunk_id == ZERO_ID or self.has(chunk.chunk_id):
            return
        self._pending.add(chunk.chunk_id)
        self._pack.add(chunk.chunk_id, chunk.sealed, chunk.raw_length)
        self.new_chunks += 1
        self.new_bytes += chunk.raw_length
        self.stored_bytes += len(chunk.sealed)
        if len(self._pack) >= self.repo.config.pack_size:
            self._ship()

    def _ship(self) -> None:
        if not self._pack.entries:
            return
        builder, self._pack = self._pack, PackBuilder()
        self._uploads.append(self._pool.submit(self._store, builder))
        while sum(not f.done() for f in self._uploads) > MAX_PACKS_IN_FLIGHT:
            next(f for f in self._uploads if not f.done()).result()
        self._collect(block=False)

    def _store(self, builder: PackBuilder) -> tuple[str, list[PackEntry]]:
        pack_id, data, entries = builder.finish(self.repo.keys)
        self.repo.storage.put(f"data/{pack_id}", data)
        return pack_id, entries

    def _collect(self, block: bool) -> None:
        remaining = []
        for future in self._uploads:
            if block or future.done():
                self._stored.append(future.result())  # re-raises a storage failure
            else:
                remaining.append(future)
        self._uploads = remaining

    def finish(self) -> str | None:
        """Store the last pack, wait for all, write the index. Returns its name."""
        try:
            self._ship()
            self._collect(block=True)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if not self._stored:
            return None
        name = self.repo.write_index(self._stored)
        self._pending.clear()
        return name

    def abort(self) -> None:
        """Stop background work; packs already stored stay (unindexed garbage)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
