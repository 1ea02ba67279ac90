"""What restore points use, joined with the chunk index on disk (check and prune).

``check`` and ``prune`` need the set of chunks restore points use and the index
grouped by pack. Held in Python objects both grow with the repository (~100
bytes a chunk); here both live in files, sorted by the cache's external sort
(``cache.Spill``: 256 buckets by first byte, each sorted in memory), and are
streamed:

``UsedChunks``
    the distinct chunk ids every image index names, one sorted file of 32-byte
    ids (memory-mapped: file-backed pages, not anonymous memory). ``in`` is a
    binary search (for the few ad-hoc questions); a pass over the index asks in
    chunk-id order and is answered by a merge (``_Cursor``).
``PackGroups``
    every chunk at the location the index gives (``ChunkIndex.items``), flagged
    used or not, sorted by pack id: iterating yields one pack's entries at a
    time. The peak is one spill bucket (~1/256 of the entries) or one pack.

The files go into a private directory (``workdir``: in the repository's local
cache directory when there is one, else the system's temporary directory) that
is removed when the command ends.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from surety.repo.cache import Spill
from surety.repo.index import ChunkIndex, Location

__all__ = ["PackGroups", "UsedChunks", "workdir"]

ID = 32
_BLOCK = 1 << 16  # records read at a time when streaming a file
_GROUP = struct.Struct(">32s32sQIIB")  # pack id | chunk id | offset | length | raw | used

Entries = list[tuple[bytes, Location]]
Flagged = list[tuple[bytes, Location, bool]]


@contextlib.contextmanager
def workdir(cache_dir: Path | None) -> Iterator[Path]:
    """A private directory for spill files, removed afterwards."""
    parent: Path | None = None
    if cache_dir is not None:
        with contextlib.suppress(OSError):
            cache_dir.mkdir(parents=True, exist_ok=True)
            if os.access(cache_dir, os.W_OK):
                parent = cache_dir
    with tempfile.TemporaryDirectory(prefix="gc.tmp-", dir=parent) as path:
        yield Path(path)


class UsedChunks:
    """Distinct chunk ids, sorted, in a memory-mapped file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        self.count = size // ID
        self._mm: mmap.mmap | None = None
        if size:
            with open(path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    @classmethod
    def build(cls, directory: Path, id_sets: Iterable[Iterable[bytes]]) -> UsedChunks:
        """Write the union of ``id_sets`` (each consumed once, in turn) sorted to
        ``directory/used``."""
        spill = Spill(directory, ID, prefix="used.tmp-")
        try:
            for ids in id_sets:
                for chunk_id in ids:
                    spill.add(chunk_id)
            path = directory / "used"
            with open(path, "wb") as out:
                for recs in spill.buckets(unique=True):
                    out.write(b"".join(recs))
        finally:
            spill.close()
        return cls(path)

    def close(self) -> None:
        if self._mm is not None:
            with contextlib.suppress(BufferError, ValueError):
                self._mm.close()

    def __len__(self) -> int:
        return self.count

    def __contains__(self, chunk_id: object) -> bool:
        mm = self._mm
        if mm is None or not isinstance(chunk_id, bytes):
            return False
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if mm[mid * ID : mid * ID + ID] < chunk_id:
                lo = mid + 1
            else:
                hi = mid
        return lo < self.count and mm[lo * ID : lo * ID + ID] == chunk_id

    def __iter__(self) -> Iterator[bytes]:
        mm = self._mm
        if mm is None:
            return
        step = _BLOCK * ID
        for start in range(0, self.count * ID, step):
            block = mm[start : min(self.count * ID, start + step)]
            for pos in range(0, len(block), ID):
                yield block[pos : pos + ID]


class _Cursor:
    """``in`` for questions asked (mostly) in ascending order: a merge with the sorted
    ids; a question out of order falls back to a binary search."""

    def __init__(self, used: UsedChunks) -> None:
        self._used = used
        self._ids = iter(used)
        self._current: bytes | None = next(self._ids, None)
        self._last = b""
        self.passed: list[bytes] = []  # used ids the merge passed without a question

    def __contains__(self, chunk_id: bytes) -> bool:
        if chunk_id < self._last:
            return chunk_id in self._used
        self._last = chunk_id
        current = self._current
        while current is not None and current < chunk_id:
            self.passed.append(current)
            current = next(self._ids, None)
        if current == chunk_id:
            self._current = next(self._ids, None)
            return True
        self._current = current
        return False

    def finish(self) -> list[bytes]:
        """The used ids never asked about in order (a superset of those not indexed)."""
        while self._current is not None:
            self.passed.append(self._current)
            self._current = next(self._ids, None)
        return self.passed


class PackGroups:
    """The index grouped by pack, on disk: ``(pack id, [(chunk, location, used)])`` in
    pack-id order, one pack at a time; iterate as often as needed.

    ``extra``: entries to add (prune's rescued packs), each flagged as the index's are.
    """

    def __init__(
        self,
        directory: Path,
        index: ChunkIndex,
        used: UsedChunks,
        extra: Mapping[str, Entries] | None = None,
    ) -> None:
        self.path = directory / "groups"
        self.chunks = 0  # entries from the index (each chunk once)
        self.packs = 0
        # used chunks the in-order pass did not meet: every used chunk the index lacks is
        # among them (``check`` filters them with the index)
        self.unmatched: list[bytes] = []
        spill = Spill(directory, _GROUP.size, prefix="groups.tmp-")
        try:
            cursor = _Cursor(used)
            add, pack = spill.add, _GROUP.pack
            for chunk_id, pack_id, offset, length, raw in index.raw_items():
                self.chunks += 1
                add(pack(pack_id, chunk_id, offset, length, raw, chunk_id in cursor))
            self.unmatched = cursor.finish()
            for entries in (extra or {}).values():
                for chunk_id, loc in entries:
                    spill.add(_record(chunk_id, loc, chunk_id in used))
            with open(self.path, "wb") as out:
                previous = b""
                for recs in spill.buckets():
                    for rec in recs:
                        if rec[:ID] != previous:
                            self.packs += 1
                            previous = rec[:ID]
                    out.write(b"".join(recs))
        finally:
            spill.close()

    def __iter__(self) -> Iterator[tuple[str, Flagged]]:
        size = _GROUP.size
        current: bytes | None = None
        group: Flagged = []
        pack_hex = ""
        with open(self.path, "rb") as f:
            while block := f.read(_BLOCK * size):
                for pack, chunk_id, offset, length, raw, flag in _GROUP.iter_unpack(block):
                    if pack != current:
                        if current is not None:
                            yield pack_hex, group
                        current, group, pack_hex = pack, [], pack.hex()
                    group.append((chunk_id, Location(pack_hex, offset, length, raw), bool(flag)))
        if current is not None:
            yield pack_hex, group


def _record(chunk_id: bytes, loc: Location, used: bool) -> bytes:
    return _GROUP.pack(
        bytes.fromhex(loc.pack), chunk_id, loc.offset, loc.length, loc.raw_length, used
    )
