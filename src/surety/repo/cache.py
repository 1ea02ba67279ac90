"""The local chunk-index cache: a sorted, memory-mapped chunk table per repository.

Not part of the repository (``docs/format.md``, "The local index cache"): a
rebuildable copy of what the repository's ``index/<id>`` objects say, kept on
this host so a command neither holds every chunk in Python objects nor reads
every index object from storage each time it opens the repository.

One directory per repository id (``cache_root()/<repo id>``) holds:

``table``
    the current table, replaced only by an atomic rename (readers map a
    complete file and need no lock)::

        prelude (4096 bytes): magic | u64 records | u64 distinct chunks |
                              u32 packs | u32 index objects
        records: n x (chunk id 32 | u32 pack number | u64 offset |
                      u32 sealed length | u32 raw length), big-endian,
                      sorted by the record's bytes (chunk id, then pack number)
        fan-out: 65537 x u32 (first record of each 16-bit chunk-id prefix)
        packs:   n x 32 (pack number -> pack id)
        names:   n x (index object id 32 | u64 stored size)  (merged objects)
        MAC:     32 bytes, keyed BLAKE3 of all the above with a key derived
                 from the repository's id key

``lock``
    ``flock``-ed by a process updating the table; a kill leaves at most a
    ``table.tmp-*`` file, removed by the next update.

A table that does not authenticate is rebuilt from storage, never trusted.
Copies of one chunk in several packs are all kept, in table order; the index
picks the first whose copy is not recorded as damaged.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import blake3

from surety.repo.pack import PackEntry

__all__ = [
    "CacheDamaged",
    "ChunkTable",
    "Copy",
    "Loaded",
    "Spill",
    "cache_dir_for",
    "cache_disabled",
    "cache_key",
    "load_table",
    "write_table",
]

MAGIC = b"SRTYCCH1"
PRELUDE = 4096
RECORD = struct.Struct(">32sIQII")
_HEAD = struct.Struct("<8sQQII")
_U32 = struct.Struct("<I")
_NAME = struct.Struct("<32sQ")
FANOUT = 65537
MAC_SIZE = 32
_SPILL_BUCKETS = 256
_COPY_BLOCK = 1 << 22
LOCK_WAIT = 10.0  # seconds a command waits for another's cache update

Copy = tuple[str, int, int, int]  # pack id, offset, sealed length, raw length
IndexPacks = list[tuple[str, list[PackEntry]]]


class CacheDamaged(Exception):
    """The table file is not a complete, authentic table (it is rebuilt)."""


def cache_disabled() -> bool:
    return os.environ.get("SURETY_NO_CACHE", "") not in ("", "0")


def cache_root() -> Path:
    """``$SURETY_CACHE_DIR``, else /var/cache/surety for root, else the XDG cache home."""
    explicit = os.environ.get("SURETY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/cache/surety")
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "surety"


def cache_dir_for(repo_id: str) -> Path:
    return cache_root() / repo_id


def cache_key(object_id: Callable[[bytes], str]) -> bytes:
    """The table's MAC key, derived from the repository's id key (via its keyed hash)."""
    return bytes.fromhex(object_id(b"surety local chunk-index cache, MAC key v1"))


class ChunkTable:
    """A read-only view of one table file (memory-mapped; file-backed, not anonymous, memory)."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < PRELUDE + FANOUT * 4 + MAC_SIZE:
                raise CacheDamaged(f"{path}: truncated")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        try:
            magic, records, chunks, packs, names = _HEAD.unpack_from(self._mm, 0)
            if magic != MAGIC:
                raise CacheDamaged(f"{path}: not a chunk table")
            self.records: int = records
            self.chunks: int = chunks
            self._fanout = PRELUDE + records * RECORD.size
            self._packs = self._fanout + FANOUT * 4
            self._names = self._packs + packs * 32
            end = self._names + names * _NAME.size
            if end + MAC_SIZE != size:
                raise CacheDamaged(f"{path}: wrong size")
            mac = blake3.blake3(key=key)  # one thread: safe in forked processes
            mac.update(memoryview(self._mm)[:end])
            if not secrets.compare_digest(mac.digest(), self._mm[end:]):
                raise CacheDamaged(f"{path}: does not authenticate")
        except CacheDamaged:
            self.close()
            raise
        self.pack_count = packs
        self.index_names = {
            f"index/{oid.hex()}": stored
            for oid, stored in _NAME.iter_unpack(self._mm[self._names : end])
        }

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()

    def pack_id(self, number: int) -> str:
        pos = self._packs + number * 32
        return self._mm[pos : pos + 32].hex()

    def pack_table(self) -> list[bytes]:
        """Every pack id (32 bytes), by pack number."""
        raw = self._mm[self._packs : self._packs + self.pack_count * 32]
        return [raw[i : i + 32] for i in range(0, len(raw), 32)]

    def first_copies(self) -> Iterator[tuple[bytes, bytes, int, int, int]]:
        """Each chunk's first copy in table order, as (chunk id, pack id bytes, offset,
        sealed length, raw length), streamed."""
        packs = self.pack_table()
        previous = b""
        step = 65536
        for start in range(0, self.records, step):
            stop = min(self.records, start + step)
            block = self._mm[PRELUDE + start * RECORD.size : PRELUDE + stop * RECORD.size]
            for chunk_id, pack, offset, length, raw in RECORD.iter_unpack(block):
                if chunk_id != previous:
                    previous = chunk_id
                    yield chunk_id, packs[pack], offset, length, raw

    def pack_ids(self) -> Iterator[str]:
        for n in range(self.pack_count):
            yield self.pack_id(n)

    def _bounds(self, chunk_id: bytes) -> tuple[int, int]:
        prefix = int.from_bytes(chunk_id[:2], "big")
        lo, hi = struct.unpack_from("<II", self._mm, self._fanout + prefix * 4)
        return lo, hi

    def _first(self, chunk_id: bytes) -> int:
        """Index of the first record whose chunk id is >= ``chunk_id``."""
        lo, hi = self._bounds(chunk_id)
        mm, size = self._mm, RECORD.size
        while lo < hi:
            mid = (lo + hi) // 2
            pos = PRELUDE + mid * size
            if mm[pos : pos + 32] < chunk_id:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def chunk_at(self, i: int) -> bytes:
        pos = PRELUDE + i * RECORD.size
        return self._mm[pos : pos + 32]

    def after(self, chunk_id: bytes) -> int:
        """Index of the first record whose chunk id is > ``chunk_id``."""
        i = self._first(chunk_id)
        while i < self.records and self.chunk_at(i) == chunk_id:
            i += 1
        return i

    def copies(self, chunk_id: bytes) -> list[Copy]:
        """Every copy the table lists of ``chunk_id``, in table order."""
        i = self._first(chunk_id)
        found: list[Copy] = []
        mm, size = self._mm, RECORD.size
        while i < self.records:
            pos = PRELUDE + i * size
            if mm[pos : pos + 32] != chunk_id:
                break
            _, pack, offset, length, raw = RECORD.unpack_from(mm, pos)
            found.append((self.pack_id(pack), offset, length, raw))
            i += 1
        return found

    def __contains__(self, chunk_id: bytes) -> bool:
        i = self._first(chunk_id)
        pos = PRELUDE + i * RECORD.size
        return i < self.records and self._mm[pos : pos + 32] == chunk_id

    def runs(self) -> Iterator[tuple[bytes, list[Copy]]]:
        """Each chunk with its copies, in chunk-id order (streamed)."""
        current: bytes | None = None
        copies: list[Copy] = []
        step = 65536
        for start in range(0, self.records, step):
            stop = min(self.records, start + step)
            block = self._mm[PRELUDE + start * RECORD.size : PRELUDE + stop * RECORD.size]
            for chunk_id, pack, offset, length, raw in RECORD.iter_unpack(block):
                if chunk_id != current:
                    if current is not None:
                        yield current, copies
                    current, copies = chunk_id, []
                copies.append((self.pack_id(pack), offset, length, raw))
        if current is not None:
            yield current, copies

    def record_bytes(self) -> memoryview:
        return memoryview(self._mm)[PRELUDE : PRELUDE + self.records * RECORD.size]

    def counts(self) -> list[int]:
        """Records per 16-bit prefix."""
        fan = struct.unpack_from(f"<{FANOUT}I", self._mm, self._fanout)
        return [fan[i + 1] - fan[i] for i in range(FANOUT - 1)]


@dataclass
class Loaded:
    """What ``load_table`` made of the cache: the table (if usable) and, when it could
    not be written, the index objects to hold in memory on top of it."""

    table: ChunkTable | None
    in_memory: list[tuple[str, IndexPacks]] = field(default_factory=list)
    merged: int = 0  # index objects merged into the table by this call
    rebuilt: bool = False


def load_table(
    cache_dir: Path,
    key: bytes,
    listing: dict[str, int],
    *,
    read: Callable[[str], IndexPacks | None],
    notes: list[str],
    rebuild: bool = False,
) -> Loaded:
    """The table for ``listing`` (index object name -> size), updated from storage.

    ``read`` returns an index object's packs, or None when it does not open (the
    caller names it as damaged; it is not merged, so it is read again next time).
    An update that cannot be written (read-only or full disk), or that another
    process holds the lock for longer than ``LOCK_WAIT``, keeps what is missing
    in memory and says so once in ``notes``.
    """
    table = None if rebuild else _open(cache_dir / "table", key, notes)
    if table is not None and _current(table, listing):
        return Loaded(table)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir):
            # another process may have updated it while we waited for the lock
            if table is not None:
                table.close()
            table = None if rebuild else _open(cache_dir / "table", key, [])
            if table is not None and _current(table, listing):
                return Loaded(table)
            for stale in cache_dir.glob("table.tmp-*"):  # of an update that was killed
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            return _update(cache_dir, key, table, listing, read)
    except _Busy:
        why = f"the local index cache in {cache_dir} is being updated by another process"
    except OSError as exc:
        why = f"the local index cache in {cache_dir} cannot be written ({exc.strerror or exc})"
    notes.append(f"{why}; what it lacks is held in memory for this command")
    table = None if rebuild else _open(cache_dir / "table", key, [])
    if table is not None and not any(_vanished(table, listing)):
        new = [n for n in sorted(listing) if n not in table.index_names]
        return Loaded(table, _read_all(new, read))
    if table is not None:
        table.close()
    return Loaded(None, _read_all(sorted(listing), read))


def _open(path: Path, key: bytes, notes: list[str]) -> ChunkTable | None:
    try:
        return ChunkTable(path, key)
    except FileNotFoundError:
        return None
    except (CacheDamaged, OSError, struct.error) as exc:
        notes.append(f"the local index cache is damaged ({exc}); rebuilt from the repository")
        return None


def _vanished(table: ChunkTable, listing: dict[str, int]) -> Iterator[str]:
    for name, stored in table.index_names.items():
        if listing.get(name) != stored:
            yield name


def _current(table: ChunkTable, listing: dict[str, int]) -> bool:
    return len(table.index_names) == len(listing) and not any(_vanished(table, listing))


def _read_all(
    names: list[str], read: Callable[[str], IndexPacks | None]
) -> list[tuple[str, IndexPacks]]:
    found = []
    for name in names:
        packs = read(name)
        found.append((name, packs or []))
    return found


class _Busy(Exception):
    """Another process holds the cache's lock longer than ``LOCK_WAIT``."""


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """The cache's update lock; ``_Busy`` after ``LOCK_WAIT`` seconds (its holder may be
    stopped or slow: this command then goes on without updating the cache)."""
    fd = os.open(cache_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _Busy from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _update(
    cache_dir: Path,
    key: bytes,
    table: ChunkTable | None,
    listing: dict[str, int],
    read: Callable[[str], IndexPacks | None],
) -> Loaded:
    if table is not None and any(_vanished(table, listing)):
        table.close()
        table = None  # an index object was deleted or replaced (prune, repair): rebuild
    known = table.index_names if table is not None else {}
    new = [n for n in sorted(listing) if n not in known]
    packs: list[bytes] = []
    names: list[tuple[bytes, int]] = []
    spill = Spill(cache_dir, RECORD.size) if table is None else None
    fresh: list[bytes] = []
    add = spill.add if spill is not None else fresh.append
    first_pack = table.pack_count if table is not None else 0
    for name in new:
        content, oid = read(name), _object_id(name)
        if content is None or oid is None:
            continue  # damaged: not merged, read (and named) again next time
        names.append((oid, listing[name]))
        for pack_id, entries in content:
            number = first_pack + len(packs)
            packs.append(bytes.fromhex(pack_id))
            for e in entries:
                add(RECORD.pack(e.chunk_id, number, e.offset, e.length, e.raw_length))
    if table is not None and not names:
        return Loaded(table)  # only damaged objects were new: nothing to merge
    tmp = cache_dir / f"table.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "w+b") as out:
            if spill is not None:
                counts, records, chunks = spill.write_sorted(out)
                all_packs, all_names = packs, names
            else:
                assert table is not None
                counts, records, chunks = _merge(table, sorted(fresh), out)
                all_packs = [bytes.fromhex(p) for p in table.pack_ids()] + packs
                all_names = [
                    (bytes.fromhex(n[6:]), s) for n, s in table.index_names.items()
                ] + names
            write_tail(
                out, key, counts, records=records, chunks=chunks, packs=all_packs, names=all_names
            )
        os.replace(tmp, cache_dir / "table")
        _fsync_dir(cache_dir)
    finally:
        tmp.unlink(missing_ok=True)
        if spill is not None:
            spill.close()
        if table is not None:
            table.close()
    return Loaded(
        ChunkTable(cache_dir / "table", key), merged=len(names), rebuilt=spill is not None
    )


def _object_id(name: str) -> bytes | None:
    hexid = name[6:]
    if not name.startswith("index/") or len(hexid) != 64:
        return None
    try:
        return bytes.fromhex(hexid)
    except ValueError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spill:
    """Fixed-size records spilled by their first byte into 256 files, each small enough
    to sort in memory (``buckets``): an external sort whose peak is one bucket."""

    def __init__(self, parent: Path, size: int, prefix: str = "table.tmp-spill-") -> None:
        self.size = size
        self._dir = parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        self._dir.mkdir()
        self._files: list[BinaryIO] = [
            open(self._dir / f"{b:02x}", "w+b")  # noqa: SIM115 -- closed in close()
            for b in range(_SPILL_BUCKETS)
        ]

    def add(self, record: bytes) -> None:
        self._files[record[0]].write(record)

    def buckets(self, unique: bool = False) -> Iterator[list[bytes]]:
        """Each bucket's records sorted (``unique``: without duplicates), in byte order;
        a bucket's file is emptied once read."""
        size = self.size
        for f in self._files:
            f.flush()
            f.seek(0)
            data = f.read()
            f.truncate(0)
            recs = [data[i : i + size] for i in range(0, len(data), size)]
            del data
            yield sorted(set(recs)) if unique else sorted(recs)

    def write_sorted(self, out: BinaryIO) -> tuple[list[int], int, int]:
        counts = [0] * (FANOUT - 1)
        records = chunks = 0
        out.write(bytes(PRELUDE))
        for recs in self.buckets():
            previous = b""
            for rec in recs:
                counts[(rec[0] << 8) | rec[1]] += 1
                if rec[:32] != previous:
                    chunks += 1
                    previous = rec[:32]
            out.write(b"".join(recs))
            records += len(recs)
        return counts, records, chunks

    def close(self) -> None:
        for f in self._files:
            f.close()
        for b in range(_SPILL_BUCKETS):
            (self._dir / f"{b:02x}").unlink(missing_ok=True)
        self._dir.rmdir()


def _merge(table: ChunkTable, fresh: list[bytes], out: BinaryIO) -> tuple[list[int], int, int]:
    """Write the table's records with ``fresh`` (sorted) merged in; new pack numbers
    are higher than old ones, so a new copy of a chunk follows the old copies."""
    counts = table.counts()
    chunks = table.chunks
    out.write(bytes(PRELUDE))
    old = table.record_bytes()
    size = RECORD.size
    done = 0
    previous = b""
    for rec in fresh:
        chunk_id = rec[:32]
        counts[(rec[0] << 8) | rec[1]] += 1
        at = table.after(chunk_id)
        if chunk_id != previous and (at == 0 or table.chunk_at(at - 1) != chunk_id):
            chunks += 1
        previous = chunk_id
        _copy(out, old, done * size, at * size)
        done = at
        out.write(rec)
    _copy(out, old, done * size, table.records * size)
    del old
    return counts, table.records + len(fresh), chunks


def _copy(out: BinaryIO, data: memoryview, start: int, stop: int) -> None:
    for pos in range(start, stop, _COPY_BLOCK):
        out.write(data[pos : min(stop, pos + _COPY_BLOCK)])


def write_tail(
    out: BinaryIO,
    key: bytes,
    counts: list[int],
    *,
    records: int,
    chunks: int,
    packs: list[bytes],
    names: list[tuple[bytes, int]],
) -> None:
    """After the records: fan-out, packs, names, then the prelude and the MAC; fsync."""
    fan = [0] * FANOUT
    total = 0
    for i, n in enumerate(counts):
        total += n
        fan[i + 1] = total
    assert total == records, (total, records)
    out.write(struct.pack(f"<{FANOUT}I", *fan))
    out.write(b"".join(packs))
    out.write(b"".join(_NAME.pack(oid, stored) for oid, stored in names))
    out.seek(0)
    out.write(_HEAD.pack(MAGIC, records, chunks, len(packs), len(names)))
    out.flush()
    end = out.seek(0, os.SEEK_END)
    mac = blake3.blake3(key=key)  # one thread: safe in forked processes
    with mmap.mmap(out.fileno(), end, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        mac.update(view)
        view.release()
    out.write(mac.digest())
    out.flush()
    os.fsync(out.fileno())


def write_table(path: Path, key: bytes, content: list[tuple[str, IndexPacks]]) -> None:
    """A complete table of ``content`` at ``path`` (tests and benches; no spill)."""
    packs: list[bytes] = []
    names: list[tuple[bytes, int]] = []
    recs: list[bytes] = []
    for name, index_packs in content:
        oid = _object_id(name)
        assert oid is not None
        names.append((oid, 0))
        for pack_id, entries in index_packs:
            number = len(packs)
            packs.append(bytes.fromhex(pack_id))
            recs.extend(
                RECORD.pack(e.chunk_id, number, e.offset, e.length, e.raw_length) for e in entries
            )
    recs.sort()
    counts = [0] * (FANOUT - 1)
    chunks = 0
    previous = b""
    for rec in recs:
        counts[(rec[0] << 8) | rec[1]] += 1
        if rec[:32] != previous:
            chunks, previous = chunks + 1, rec[:32]
    with open(path, "w+b") as out:
        out.write(bytes(PRELUDE))
        out.write(b"".join(recs))
        write_tail(out, key, counts, records=len(recs), chunks=chunks, packs=packs, names=names)
