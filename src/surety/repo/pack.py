"""Pack files: many sealed chunk blobs in one storage object.

    blob 0 | blob 1 | ... | sealed header | u32 header length | PACK_MAGIC

Each blob is a chunk sealed on its own (associated data: b"chunk" + id), so a
restore reads exactly one blob with a range request. The header lists every
blob (chunk id, offset, sealed length, raw length); the index carries the
same facts, so the header is read only by ``check`` and repair. A pack's name
is the BLAKE3 hash of its bytes: ``check --read-data`` verifies it whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from surety.core.errors import IntegrityError
from surety.repo.crypto import MasterKeys
from surety.repo.format import PACK_ENTRY, PACK_HEADER_MAGIC, PACK_MAGIC
from surety.repo.storage.base import Storage

__all__ = ["PackBuilder", "PackEntry", "chunk_kind", "parse_pack", "read_pack_header"]

_ENTRY = struct.Struct(PACK_ENTRY)
_TRAILER = struct.Struct("<I8s")


def chunk_kind(chunk_id: bytes) -> bytes:
    """Associated data of a chunk blob: binds the ciphertext to its id."""
    return b"chunk" + chunk_id


@dataclass(frozen=True)
class PackEntry:
    chunk_id: bytes
    offset: int
    length: int
    raw_length: int


class PackBuilder:
    """Collects sealed blobs in memory until the pack is big enough to store."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.entries: list[PackEntry] = []

    def add(self, chunk_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(chunk_id, len(self.buffer), len(sealed), raw_length))
        self.buffer += sealed

    def __len__(self) -> int:
        return len(self.buffer)

    def finish(self, keys: MasterKeys) -> tuple[str, bytes, list[PackEntry]]:
        """Seal the header; return (pack id, pack bytes, entries)."""
        header = PACK_HEADER_MAGIC + b"".join(
            _ENTRY.pack(e.chunk_id, e.offset, e.length, e.raw_length) for e in self.entries
        )
        sealed_header = keys.seal(b"packheader", header)
        self.buffer += sealed_header
        self.buffer += _TRAILER.pack(len(sealed_header), PACK_MAGIC)
        data = bytes(self.buffer)
        return blake3.blake3(data).hexdigest(), data, self.entries


def parse_pack(data: bytes, keys: MasterKeys, what: str) -> list[PackEntry]:
    """Read and authenticate a whole pack's header."""
    if len(data) < _TRAILER.size:
        raise IntegrityError(f"{what}: truncated pack")
    header_len, magic = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    start = _header_start(len(data), header_len, magic, what)
    return _entries(keys, data[start : start + header_len], start, what)


def read_pack_header(storage: Storage, keys: MasterKeys, pack_id: str) -> list[PackEntry]:
    """A stored pack's entries from its header alone (two range reads, not the pack).

    Raises ``IntegrityError`` when the trailer or header is damaged and
    ``ObjectNotFound``/``StorageError`` as the storage does.
    """
    name, what = f"data/{pack_id}", f"pack {pack_id[:12]}"
    size = storage.size(name)
    if size < _TRAILER.size:
        raise IntegrityError(f"{what}: truncated pack")
    header_len, magic = _TRAILER.unpack(storage.get(name, size - _TRAILER.size, _TRAILER.size))
    start = _header_start(size, header_len, magic, what)
    return _entries(keys, storage.get(name, start, header_len), start, what)


def _header_start(size: int, header_len: int, magic: bytes, what: str) -> int:
    if magic != PACK_MAGIC or header_len > size - _TRAILER.size:
        raise IntegrityError(f"{what}: pack trailer damaged")
    return size - _TRAILER.size - header_len


def _entries(keys: MasterKeys, sealed_header: bytes, start: int, what: str) -> list[PackEntry]:
    header = keys.unseal(b"packheader", sealed_header, what)
    if not header.startswith(PACK_HEADER_MAGIC):
        raise IntegrityError(f"{what}: pack header damaged")
    body = memoryview(header)[len(PACK_HEADER_MAGIC) :]
    if len(body) % _ENTRY.size:
        raise IntegrityError(f"{what}: pack header length")
    entries = [PackEntry(*fields) for fields in _ENTRY.iter_unpack(body)]
    for entry in entries:
        if entry.offset + entry.length > start:
            raise IntegrityError(f"{what}: pack entry beyond data")
    return entries
