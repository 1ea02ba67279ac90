"""The chunk index: chunk id -> where its sealed blob lives.

Stored as ``index/<id>`` objects, each sealed, each listing the blobs of some
packs. The in-memory ``ChunkIndex`` is the union of all index objects;
a chunk listed twice (possible after an interrupted prune) is found in
whichever pack was listed first — both copies are valid until prune has
deleted the index object that names the older one.

Plaintext of an index object::

    INDEX_MAGIC | u32 pack count | per pack: pack id (32) | u32 n | n x PACK_ENTRY
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from surety.core.errors import IntegrityError
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
    """Union of index objects; thread-safe for lookups while one thread adds."""

    def __init__(self) -> None:
        self._map: dict[bytes, Location] = {}
        self.index_names: set[str] = set()

    def add_pack(self, pack_id: str, entries: Iterable[PackEntry]) -> None:
        for e in entries:
            self._map.setdefault(e.chunk_id, Location(pack_id, e.offset, e.length, e.raw_length))

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._map

    def get(self, chunk_id: bytes) -> Location | None:
        return self._map.get(chunk_id)

    def __len__(self) -> int:
        return len(self._map)

    def items(self) -> Iterator[tuple[bytes, Location]]:
        return iter(self._map.items())

    def packs(self) -> dict[str, list[tuple[bytes, Location]]]:
        by_pack: dict[str, list[tuple[bytes, Location]]] = {}
        for chunk_id, loc in self._map.items():
            by_pack.setdefault(loc.pack, []).append((chunk_id, loc))
        return by_pack
