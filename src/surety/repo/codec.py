"""Payload codec: one leading byte says how the rest is encoded.

``CODEC_ZSTD`` when zstd makes the payload smaller, else ``CODEC_RAW`` (random
or already-compressed data is stored as is, so it costs no decompression).
Compressor objects are per thread: zstandard's are not thread-safe.
``decode_view`` hands a raw payload's body out as a view of the payload (no
copy); zstd allocates its output once, and releases the GIL while it runs.
``decode_into`` decompresses into a buffer the caller reuses (restore's threads).
"""

from __future__ import annotations

import threading

import zstandard

from surety.core.errors import IntegrityError
from surety.repo.format import CODEC_RAW, CODEC_ZSTD

__all__ = ["decode", "decode_into", "decode_view", "encode"]

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if found is None:
        found = _local.decompressor = zstandard.ZstdDecompressor()
    return found


def encode(data: bytes | memoryview, level: int) -> bytes:
    packed: bytes = _compressor(level).compress(data)
    if len(packed) < len(data):
        return bytes([CODEC_ZSTD]) + packed
    return bytes([CODEC_RAW]) + bytes(data)


def decode(payload: bytes | memoryview, raw_length: int, what: str) -> bytes:
    return bytes(decode_view(payload, raw_length, what))  # zstd's bytes: not copied again


def _split(payload: bytes | memoryview, what: str) -> tuple[int, memoryview]:
    """The codec's byte and a view of the body."""
    if not payload:
        raise IntegrityError(f"{what}: empty payload")
    return payload[0], memoryview(payload)[1:]


def decode_view(payload: bytes | memoryview, raw_length: int, what: str) -> bytes | memoryview:
    """``decode`` without a copy of a raw payload: its body is returned as a view."""
    codec, body = _split(payload, what)
    data: bytes | memoryview
    if codec == CODEC_RAW:
        data = body
    elif codec == CODEC_ZSTD:
        try:
            data = _decompressor().decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: cannot decompress ({exc})") from exc
    else:
        raise IntegrityError(f"{what}: unknown codec {codec}")
    if len(data) != raw_length:
        raise IntegrityError(f"{what}: length {len(data)} != recorded {raw_length}")
    return data


def decode_into(
    payload: bytes | memoryview, raw_length: int, out: memoryview, what: str
) -> memoryview:
    """``decode_view`` with a zstd body decompressed into ``out`` (at least ``raw_length``
    long) instead of a new buffer; a raw payload's body is still returned as a view of
    ``payload``. zstd decodes a frame that records its size in one pass straight into
    ``out``, as fast as into its own buffer, and releases the GIL while it runs."""
    codec, body = _split(payload, what)
    if codec == CODEC_RAW:
        if len(body) != raw_length:
            raise IntegrityError(f"{what}: length {len(body)} != recorded {raw_length}")
        return body
    if codec != CODEC_ZSTD:
        raise IntegrityError(f"{what}: unknown codec {codec}")
    target = out[:raw_length]
    try:
        with _decompressor().stream_reader(body) as reader:
            length = 0
            while length < raw_length and (count := reader.readinto(target[length:])):
                length += count
            beyond = reader.read(1)  # the frame must end here: more is a wrong length too
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{what}: cannot decompress ({exc})") from exc
    if length != raw_length or beyond:
        shown = f"more than {raw_length}" if beyond else str(length)
        raise IntegrityError(f"{what}: length {shown} != recorded {raw_length}")
    return target
