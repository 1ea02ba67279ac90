"""The chunk index: chunk id -> where its sealed blob lives.

Stored as ``index/<id>`` objects, each sealed, each listing the blobs of some
packs. The in-memory ``ChunkIndex`` is the union of all index objects;
a chunk listed twice (after an interrupted prune, or two backups storing the
same new data at once) is found in whichever pack was listed first, unless
that copy was recorded as damaged (``repo.damage``) — both copies are valid
until prune has deleted the index object that names the older one.

Plaintext of an index object::

    INDEX_MAGIC | u32 pack count | per pack: pack id (32) | u32 n | n x PACK_ENTRY
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from surety.core.errors import IntegrityError
from surety.repo.cache import ChunkTable
from surety.repo.format import INDEX_MAGIC, PACK_ENTRY
from surety.repo.pack import PackEntry

__all__ = ["ChunkIndex", "Location", "decode_index", "encode_index"]

_ENTRY = struct.Struct(PACK_ENTRY)
_COUNT = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Location:
    pack: str
    offset: int
    length: int
    raw_length: int


def encode_index(packs: Iterable[tuple[str, list[PackEntry]]]) -> bytes:
    parts = [INDEX_MAGIC]
    items = list(packs)
    parts.append(_COUNT.pack(len(items)))
    for pack_id, entries in items:
        parts.append(bytes.fromhex(pack_id))
        parts.append(_COUNT.pack(len(entries)))
        parts.extend(_ENTRY.pack(e.chunk_id, e.offset, e.length, e.raw_length) for e in entries)
    return b"".join(parts)


def decode_index(data: bytes, what: str) -> list[tuple[str, list[PackEntry]]]:
    try:
        if not data.startswith(INDEX_MAGIC):
            raise IntegrityError(f"{what}: not an index")
        pos = len(INDEX_MAGIC)
        (count,) = _COUNT.unpack_from(data, pos)
        pos += _COUNT.size
        packs = []
        for _ in range(count):
            pack_id = data[pos : pos + 32].hex()
            (n,) = _COUNT.unpack_from(data, pos + 32)
            pos += 32 + _COUNT.size
            end = pos + n * _ENTRY.size
            if end > len(data):
                raise IntegrityError(f"{what}: truncated index")
            entries = [PackEntry(*f) for f in _ENTRY.iter_unpack(data[pos:end])]
            packs.append((pack_id, entries))
            pos = end
    except struct.error as exc:
        raise IntegrityError(f"{what}: truncated index") from exc
    if pos != len(data):
        raise IntegrityError(f"{what}: trailing bytes in index")
    return packs


class ChunkIndex:
    """Union of index objects, minus what was found damaged.

    Thread-safe for lookups while one thread adds. A chunk has a *healthy*
    location (the first one listed whose (chunk, pack) pair is not recorded
    as damaged) or, failing that, a *damaged* one. ``in`` answers only for
    healthy chunks, so a backup stores a damaged chunk afresh (dedup never
    propagates damage); ``get`` answers with either, healthy first, so a
    restore still tries a chunk whose damage record may have been wrong (and
    hash-checks it as always). Load damage records before index objects: a
    healthy duplicate listed after a damaged copy then wins.

    Backed by a memory-mapped ``ChunkTable`` (``repo.cache``: every copy of
    each chunk, in table order) when the repository has a local cache, plus
    small dicts for what this process adds; without a table, by the dicts alone.
    """

    def __init__(self, table: ChunkTable | None = None) -> None:
        self._table = table
        self._map: dict[bytes, Location] = {}
        self._damaged_only: dict[bytes, Location] = {}
        self._bad: set[tuple[bytes, str]] = set()
        self.index_names: set[str] = set(table.index_names) if table is not None else set()
        self._added_packs: set[str] = set()
        self._table_packs: frozenset[str] | None = None

    @property
    def table(self) -> ChunkTable | None:
        return self._table

    def replace_table(self, table: ChunkTable | None) -> None:
        """Use ``table`` (rebuilt from storage) from now on; what this process added stays."""
        self._table, self._table_packs = table, None
        if table is not None:
            self.index_names |= set(table.index_names)

    @property
    def indexed_packs(self) -> set[str]:
        """Every pack some index names."""
        if self._table is None:
            return self._added_packs
        if self._table_packs is None:
            self._table_packs = frozenset(self._table.pack_ids())
        return self._added_packs | self._table_packs

    def _from_table(self, chunk_id: bytes) -> tuple[Location | None, Location | None]:
        """(first healthy, first damaged) copy the table lists."""
        if self._table is None:
            return None, None
        damaged = None
        for pack, offset, length, raw in self._table.copies(chunk_id):
            loc = Location(pack, offset, length, raw)
            if (chunk_id, pack) not in self._bad:
                return loc, None
            damaged = damaged or loc
        return None, damaged

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        self._added_packs.add(pack_id)
        for e in entries:
            loc = Location(pack_id, e.offset, e.length, e.raw_length)
            if e.chunk_id in self._map or self._from_table(e.chunk_id)[0] is not None:
                continue
            if (e.chunk_id, pack_id) in self._bad:
                self._damaged_only.setdefault(e.chunk_id, loc)
            else:
                self._map[e.chunk_id] = loc
                self._damaged_only.pop(e.chunk_id, None)

    def mark_damaged(self, chunk_id: bytes, pack_id: str) -> None:
        """Record that ``chunk_id``'s copy in ``pack_id`` is damaged or missing."""
        self._bad.add((chunk_id, pack_id))
        loc = self._map.get(chunk_id)
        if loc is not None and loc.pack == pack_id:
            del self._map[chunk_id]
            self._damaged_only[chunk_id] = loc

    def is_damaged(self, chunk_id: bytes, pack_id: str) -> bool:
        return (chunk_id, pack_id) in self._bad

    def damaged_chunks(self) -> set[bytes]:
        """Chunks with a copy recorded as damaged."""
        return {chunk_id for chunk_id, _ in self._bad}

    def damaged_packs(self) -> set[str]:
        """Packs holding a copy recorded as damaged."""
        return {pack for _, pack in self._bad}

    def __contains__(self, chunk_id: object) -> bool:
        if chunk_id in self._map:
            return True
        if not isinstance(chunk_id, bytes) or self._table is None:
            return False
        if not self._bad:  # no damage recorded: any copy is a healthy one
            return chunk_id in self._table
        return self._from_table(chunk_id)[0] is not None

    def get(self, chunk_id: bytes) -> Location | None:
        healthy, damaged = self._from_table(chunk_id)
        return healthy or self._map.get(chunk_id) or damaged or self._damaged_only.get(chunk_id)

    def __len__(self) -> int:
        if self._table is None:
            return len(self._map) + len(self._damaged_only)
        table = self._table
        extra = sum(1 for c in (*self._map, *self._damaged_only) if c not in table)
        return table.chunks + extra

    def items(self) -> Iterator[tuple[bytes, Location]]:
        """Each chunk once, at the location ``get`` gives (streamed from the table)."""
        if self._table is not None:
            bad = self._bad
            for chunk_id, copies in self._table.runs():
                damaged = None
                for pack, offset, length, raw in copies:
                    if (chunk_id, pack) not in bad:
                        yield chunk_id, Location(pack, offset, length, raw)
                        break
                    damaged = damaged or Location(pack, offset, length, raw)
                else:
                    loc = self._map.get(chunk_id) or damaged
                    if loc is not None:
                        yield chunk_id, loc
        table = self._table
        for chunk_id, loc in self._map.items():
            if table is None or chunk_id not in table:
                yield chunk_id, loc
        for chunk_id, loc in self._damaged_only.items():
            if table is None or chunk_id not in table:
                yield chunk_id, loc

    def raw_items(self) -> Iterator[tuple[bytes, bytes, int, int, int]]:
        """``items`` as (chunk id, pack id bytes, offset, length, raw length): the table's
        records as they are when no copy is recorded as damaged (no objects per entry)."""
        table = self._table
        if table is None or self._bad:
            for chunk_id, loc in self.items():
                yield chunk_id, bytes.fromhex(loc.pack), loc.offset, loc.length, loc.raw_length
            return
        yield from table.first_copies()
        for chunk_id, loc in self._map.items():
            if chunk_id not in table:
                yield chunk_id, bytes.fromhex(loc.pack), loc.offset, loc.length, loc.raw_length

    def packs(self) -> dict[str, list[tuple[bytes, Location]]]:
        """Each chunk at the one location ``get`` gives, grouped by pack."""
        by_pack: dict[str, list[tuple[bytes, Location]]] = {}
        for chunk_id, loc in self.items():
            by_pack.setdefault(loc.pack, []).append((chunk_id, loc))
        return by_pack
