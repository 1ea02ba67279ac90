"""Random access to one disk of a restore point, as a block device is read.

``ImageReader`` answers "give me bytes [offset, offset + n)" from an image
index: the reader behind serving a restore point over NBD (file-level
restore, instant recovery, the verification lab).

* Every stored chunk comes through ``Repository.read_chunk`` (authenticated,
  decompressed, re-hashed): a damaged chunk raises ``IntegrityError`` and no
  byte of it is returned. Failures are never cached.
* All-zero chunks (``ZERO_ID``) are answered without touching storage, and
  ``extents`` reports them, so a client can skip them.
* Memory is bounded: a small LRU keeps the last ``cache_chunks`` decoded
  chunks. Concurrent reads of the same chunk fetch it once.

Thread-safe. Knows nothing of NBD or of VMs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future

from surety.core.errors import UsageError
from surety.repo.format import ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.repository import Repository

__all__ = ["ImageReader"]


class ImageReader:
    """Reads of one image index; see the module docstring for guarantees."""

    def __init__(self, repo: Repository, image: ImageIndex, cache_chunks: int = 64) -> None:
        if cache_chunks < 1:
            raise UsageError("the chunk cache needs room for at least one chunk")
        self.repo, self.image = repo, image
        self.size = image.size
        self.cache_chunks = cache_chunks
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._inflight: dict[int, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._zero = bytes(image.chunk_size)

    def read(self, offset: int, length: int) -> bytes:
        buffer = bytearray(length)
        self.read_into(memoryview(buffer), offset)
        return bytes(buffer)

    def read_into(self, buffer: memoryview, offset: int) -> None:
        """Fill ``buffer`` with the disk's bytes from ``offset`` (all or nothing)."""
        if offset < 0 or offset + len(buffer) > self.size:
            raise UsageError(f"read of {len(buffer)} bytes at {offset} is past the disk's end")
        chunk_size, done = self.image.chunk_size, 0
        while done < len(buffer):
            number, start = divmod(offset + done, chunk_size)
            take = min(len(buffer) - done, self.image.chunk_length(number) - start)
            if self.image.chunk_ids[number] == ZERO_ID:
                buffer[done : done + take] = self._zero[:take]
            else:
                buffer[done : done + take] = memoryview(self.chunk(number))[start : start + take]
            done += take

    def extents(self, offset: int, length: int) -> Iterator[tuple[int, int, bool]]:
        """``(offset, length, is_zero)`` runs covering ``[offset, offset + length)``."""
        end, chunk_size = min(offset + length, self.size), self.image.chunk_size
        while offset < end:
            number = offset // chunk_size
            zero = self.image.chunk_ids[number] == ZERO_ID
            run_end = min(end, (number + 1) * chunk_size)
            while (
                run_end < end and (self.image.chunk_ids[run_end // chunk_size] == ZERO_ID) == zero
            ):
                run_end = min(end, run_end + chunk_size)
            yield offset, run_end - offset, zero
            offset = run_end

    def chunk(self, number: int) -> bytes:
        """The plaintext of stored chunk ``number``, from the cache or the repository."""
        with self._lock:
            cached = self._cache.get(number)
            if cached is not None:
                self._cache.move_to_end(number)
                return cached
            pending = self._inflight.get(number)
            owner = pending is None
            if pending is None:
                pending = self._inflight[number] = Future()
        if not owner:
            return pending.result()
        try:
            data = self.repo.read_chunk(self.image.chunk_ids[number])
        except BaseException as exc:
            with self._lock:
                del self._inflight[number]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._inflight[number]
            self._cache[number] = data
            while len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
        pending.set_result(data)
        return data
