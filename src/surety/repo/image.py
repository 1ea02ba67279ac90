"""Image index: the ordered chunk ids of one disk — a synthetic full.

Chunk ``i`` covers bytes ``[i*chunk_size, min((i+1)*chunk_size, size))``; the
last one may be short. ``ZERO_ID`` marks an all-zero chunk that is not stored.
Plaintext of an ``images/<id>`` object (zstd-compressed, then sealed)::

    IMAGE_MAGIC | u32 chunk_size | u64 size | u64 count | count x 32-byte id

The object id is the keyed hash of this plaintext: an unchanged disk's image
index is stored once however many restore points name it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from surety.core.errors import IntegrityError
from surety.repo.format import ID_LEN, IMAGE_MAGIC, ZERO_ID

__all__ = ["ImageIndex"]

_HEAD = struct.Struct("<IQQ")


@dataclass(frozen=True)
class ImageIndex:
    chunk_size: int
    size: int
    chunk_ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        expected = -(-self.size // self.chunk_size)
        if len(self.chunk_ids) != expected:
            raise IntegrityError(
                f"image index has {len(self.chunk_ids)} chunks, size needs {expected}"
            )

    def chunk_length(self, number: int) -> int:
        return min(self.chunk_size, self.size - number * self.chunk_size)

    def stored_ids(self) -> set[bytes]:
        """Distinct ids of chunks that live in packs (zero chunks excluded)."""
        return {c for c in self.chunk_ids if c != ZERO_ID}

    def allocated_bytes(self) -> int:
        return sum(self.chunk_length(i) for i, c in enumerate(self.chunk_ids) if c != ZERO_ID)

    def encode(self) -> bytes:
        head = _HEAD.pack(self.chunk_size, self.size, len(self.chunk_ids))
        return IMAGE_MAGIC + head + b"".join(self.chunk_ids)

    @classmethod
    def decode(cls, data: bytes, what: str) -> ImageIndex:
        if not data.startswith(IMAGE_MAGIC) or len(data) < len(IMAGE_MAGIC) + _HEAD.size:
            raise IntegrityError(f"{what}: not an image index")
        chunk_size, size, count = _HEAD.unpack_from(data, len(IMAGE_MAGIC))
        body = data[len(IMAGE_MAGIC) + _HEAD.size :]
        if len(body) != count * ID_LEN or chunk_size <= 0:
            raise IntegrityError(f"{what}: image index length does not match its count")
        ids = tuple(body[i : i + ID_LEN] for i in range(0, len(body), ID_LEN))
        return cls(chunk_size, size, ids)
