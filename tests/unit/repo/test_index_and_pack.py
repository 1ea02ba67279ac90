"""Index objects (encode/decode), packs (build/parse) and the in-memory ChunkIndex."""

from __future__ import annotations

import itertools
import struct

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from surety.core.errors import IntegrityError
from surety.repo.crypto import MasterKeys
from surety.repo.format import INDEX_MAGIC, PACK_MAGIC
from surety.repo.index import ChunkIndex, Location, decode_index, encode_index
from surety.repo.pack import PackBuilder, PackEntry, chunk_kind, parse_pack

ENTRY_SIZE = 48  # struct <32sQII
TRAILER_SIZE = 12  # u32 header length + 8-byte magic

entries = st.builds(
    PackEntry,
    chunk_id=st.binary(min_size=32, max_size=32),
    offset=st.integers(min_value=0, max_value=2**64 - 1),
    length=st.integers(min_value=0, max_value=2**32 - 1),
    raw_length=st.integers(min_value=0, max_value=2**32 - 1),
)
pack_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
index_contents = st.lists(st.tuples(pack_ids, st.lists(entries, max_size=8)), max_size=6)


def _entry(n: int, offset: int = 0) -> PackEntry:
    return PackEntry(bytes([n]) * 32, offset, 100 + n, 1000 + n)


def _sample_index() -> bytes:
    return encode_index([("aa" * 32, [_entry(1), _entry(2, 101)]), ("bb" * 32, [_entry(3)])])


# -- index objects ------------------------------------------------------------------


@given(index_contents)
def test_index_round_trip(packs: list[tuple[str, list[PackEntry]]]) -> None:
    data = encode_index(packs)
    assert data.startswith(INDEX_MAGIC)
    expected_len = 8 + 4 + sum(32 + 4 + ENTRY_SIZE * len(e) for _, e in packs)
    assert len(data) == expected_len
    assert decode_index(data, "index") == packs


def test_index_accepts_a_generator() -> None:
    packs = [("aa" * 32, [_entry(1)])]
    assert decode_index(encode_index(iter(packs)), "index") == packs


def test_index_truncated_at_any_length_is_rejected() -> None:
    data = _sample_index()
    for keep in range(len(data)):
        with pytest.raises(IntegrityError):
            decode_index(data[:keep], "index")


@given(st.binary(min_size=1, max_size=64))
def test_trailing_garbage_after_index_is_rejected(tail: bytes) -> None:
    with pytest.raises(IntegrityError):
        decode_index(_sample_index() + tail, "index")


def test_index_with_wrong_magic_is_rejected() -> None:
    with pytest.raises(IntegrityError, match="not an index"):
        decode_index(b"SRTYIDX2" + _sample_index()[8:], "index")


def test_index_with_overlong_entry_count_is_rejected() -> None:
    data = INDEX_MAGIC + struct.pack("<I", 1) + b"\xaa" * 32 + struct.pack("<I", 2**32 - 1)
    with pytest.raises(IntegrityError, match="truncated"):
        decode_index(data, "index")


@given(st.binary(max_size=200))
def test_index_garbage_raises_only_integrity_error(tail: bytes) -> None:
    data = INDEX_MAGIC + tail
    try:
        packs = decode_index(data, "index")
    except IntegrityError:
        return
    assert encode_index(packs) == data


# -- packs --------------------------------------------------------------------------


def _build(keys: MasterKeys, blobs: list[bytes]) -> tuple[str, bytes, list[PackEntry]]:
    builder = PackBuilder()
    for n, plaintext in enumerate(blobs):
        chunk_id = keys.chunk_id(plaintext)
        builder.add(chunk_id, keys.seal(chunk_kind(chunk_id), plaintext), len(plaintext) + n)
    return builder.finish(keys)


@given(st.lists(st.binary(max_size=300), max_size=10))
def test_pack_round_trip(keys: MasterKeys, blobs: list[bytes]) -> None:
    pack_id, data, built = _build(keys, blobs)
    assert data.endswith(PACK_MAGIC)
    assert pack_id == blake3.blake3(data).hexdigest()
    parsed = parse_pack(data, keys, "pack")
    assert parsed == built
    assert [e.raw_length for e in parsed] == [len(b) + n for n, b in enumerate(blobs)]
    for entry, plaintext in zip(parsed, blobs, strict=True):
        sealed = data[entry.offset : entry.offset + entry.length]
        assert keys.unseal(chunk_kind(entry.chunk_id), sealed, "blob") == plaintext


def test_pack_entries_are_contiguous_from_offset_zero(keys: MasterKeys) -> None:
    _, _, built = _build(keys, [b"a" * 10, b"b" * 20, b"c" * 30])
    assert built[0].offset == 0
    for before, after in itertools.pairwise(built):
        assert after.offset == before.offset + before.length


def test_pack_builder_len_counts_blob_bytes(keys: MasterKeys) -> None:
    builder = PackBuilder()
    assert len(builder) == 0
    builder.add(b"\1" * 32, b"x" * 77, 5)
    builder.add(b"\2" * 32, b"y" * 23, 5)
    assert len(builder) == 100


def test_pack_id_is_blake3_of_bytes(keys: MasterKeys) -> None:
    pack_id, data, _ = _build(keys, [b"hello", b"world"])
    assert pack_id == blake3.blake3(data).hexdigest()
    assert len(pack_id) == 64


def test_same_content_packs_differ_because_of_random_nonces(keys: MasterKeys) -> None:
    first, _, _ = _build(keys, [b"hello"])
    second, _, _ = _build(keys, [b"hello"])
    assert first != second


def _header_start(data: bytes) -> int:
    (header_len,) = struct.unpack_from("<I", data, len(data) - TRAILER_SIZE)
    return len(data) - TRAILER_SIZE - header_len


@pytest.fixture(scope="module")
def sample_pack() -> tuple[MasterKeys, bytes]:
    keys = MasterKeys.generate()
    _, data, _ = _build(keys, [b"first blob" * 10, b"second blob" * 20, b""])
    return keys, data


def test_every_flipped_byte_in_header_or_trailer_is_detected(
    sample_pack: tuple[MasterKeys, bytes],
) -> None:
    keys, data = sample_pack
    start = _header_start(data)
    assert start > 0
    for position in range(start, len(data)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[position] ^= mask
            with pytest.raises(IntegrityError):
                parse_pack(bytes(damaged), keys, "pack")


@pytest.mark.parametrize("keep", [0, 5, 11, 12, 40])
def test_truncated_pack_is_rejected(sample_pack: tuple[MasterKeys, bytes], keep: int) -> None:
    keys, data = sample_pack
    with pytest.raises(IntegrityError):
        parse_pack(data[:keep], keys, "pack")


def test_pack_cut_at_the_front_is_rejected(sample_pack: tuple[MasterKeys, bytes]) -> None:
    keys, data = sample_pack
    with pytest.raises(IntegrityError):
        parse_pack(data[1:], keys, "pack")


def test_pack_parsed_with_other_keys_is_rejected(sample_pack: tuple[MasterKeys, bytes]) -> None:
    _, data = sample_pack
    with pytest.raises(IntegrityError):
        parse_pack(data, MasterKeys.generate(), "pack")


def test_pack_header_entry_beyond_data_is_rejected(keys: MasterKeys) -> None:
    builder = PackBuilder()
    builder.add(b"\1" * 32, b"x" * 10, 10)
    # an entry that claims more bytes than the pack has before its header
    builder.entries.append(PackEntry(b"\2" * 32, 5, 10, 10))
    _, data, _ = builder.finish(keys)
    with pytest.raises(IntegrityError, match="beyond"):
        parse_pack(data, keys, "pack")


def test_empty_pack_round_trips(keys: MasterKeys) -> None:
    _, data, built = PackBuilder().finish(keys)
    assert built == []
    assert parse_pack(data, keys, "pack") == []


@given(st.binary(max_size=120))
def test_pack_garbage_raises_only_integrity_error(keys: MasterKeys, garbage: bytes) -> None:
    with pytest.raises(IntegrityError):
        parse_pack(garbage + PACK_MAGIC, keys, "pack")


# -- ChunkIndex ---------------------------------------------------------------------


def test_chunk_index_keeps_first_location_of_a_duplicate() -> None:
    index = ChunkIndex()
    dup = _entry(7)
    index.add_pack("aa" * 32, [dup, _entry(1)])
    index.add_pack("bb" * 32, [PackEntry(dup.chunk_id, 999, 5, 6), _entry(2)])
    assert len(index) == 3
    assert index.get(dup.chunk_id) == Location("aa" * 32, dup.offset, dup.length, dup.raw_length)
    packs = index.packs()
    assert sorted(packs) == ["aa" * 32, "bb" * 32]
    assert [c for c, _ in packs["bb" * 32]] == [_entry(2).chunk_id]


def test_chunk_index_lookup() -> None:
    index = ChunkIndex()
    index.add_pack("cc" * 32, [_entry(4, 40)])
    chunk_id = _entry(4).chunk_id
    assert chunk_id in index
    assert b"\x05" * 32 not in index
    assert index.get(b"\x05" * 32) is None
    assert dict(index.items()) == {chunk_id: Location("cc" * 32, 40, 104, 1004)}
