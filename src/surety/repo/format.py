"""Format constants of the repository, defined once (see docs/format.md).

A released magic value or constant is never edited: a format change adds a new
version and keeps the reader of the old one.
"""

from __future__ import annotations

__all__ = [
    "CHUNK_SIZE_DEFAULT",
    "CHUNK_SIZE_MAX",
    "CHUNK_SIZE_MIN",
    "CODEC_RAW",
    "CODEC_ZSTD",
    "CONFIG_MAGIC",
    "FORMAT_VERSION",
    "FORMAT_VERSION_IMMUTABLE",
    "FORMAT_VERSION_OBJECT_STORAGE",
    "ID_LEN",
    "IMAGE_MAGIC",
    "INDEX_MAGIC",
    "MANIFEST_FORMAT",
    "MANIFEST_FORMATS",
    "MANIFEST_FORMAT_SALVAGED",
    "PACK_ENTRY",
    "PACK_HEADER_MAGIC",
    "PACK_MAGIC",
    "PACK_SIZE_TARGET",
    "READABLE_FORMATS",
    "SEAL_VERSION",
    "ZERO_ID",
]

FORMAT_VERSION = 2  # what a new repository's config says (docs/format.md "Versions")
FORMAT_VERSION_IMMUTABLE = 3  # an immutable repository's config (``immutable_days``)
FORMAT_VERSION_OBJECT_STORAGE = 4  # a new repository on object storage: prune in two phases
READABLE_FORMATS = (1, 2, 3, 4)  # every repository format this release reads and writes
MANIFEST_FORMAT = 1  # a restore point's manifest
MANIFEST_FORMAT_SALVAGED = 2  # a salvaged point (source["salvaged"]): older readers refuse it
MANIFEST_FORMATS = (MANIFEST_FORMAT, MANIFEST_FORMAT_SALVAGED)

# Object magics (first bytes of the *plaintext* of sealed objects, or of the
# object itself where it is not sealed).
CONFIG_MAGIC = b"SURETYR1"  # plaintext prefix of the `config` object
INDEX_MAGIC = b"SRTYIDX1"  # plaintext of an `index/<id>` object
IMAGE_MAGIC = b"SRTYIMG1"  # plaintext of an `images/<id>` object
PACK_MAGIC = b"SRTYPAK1"  # last 8 bytes of every `data/<id>` pack
PACK_HEADER_MAGIC = b"SRTYPHD1"  # plaintext prefix of a pack's sealed header

SEAL_VERSION = 1  # first byte of every sealed blob: AES-256-GCM, 96-bit random nonce

CODEC_RAW = 0  # payload codec byte (first plaintext byte of a chunk blob)
CODEC_ZSTD = 1

ID_LEN = 32  # chunk ids and object ids: 32 bytes (64 hex digits)
ZERO_ID = bytes(ID_LEN)  # image-index marker of an all-zero chunk (never stored)

# struct of one pack-header / index entry: chunk id, offset, sealed length, raw length
PACK_ENTRY = "<32sQII"

CHUNK_SIZE_MIN = 64 * 1024
CHUNK_SIZE_MAX = 16 * 1024 * 1024
CHUNK_SIZE_DEFAULT = 256 * 1024  # measured choice: docs/format.md "Chunk size"
PACK_SIZE_TARGET = 16 * 1024 * 1024
