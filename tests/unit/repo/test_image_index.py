"""ImageIndex: the ordered chunk ids of one disk, and its binary encoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surety.core.errors import IntegrityError
from surety.repo.format import ID_LEN, IMAGE_MAGIC, ZERO_ID
from surety.repo.image import ImageIndex

ids = st.one_of(st.just(ZERO_ID), st.binary(min_size=ID_LEN, max_size=ID_LEN))


@st.composite
def images(draw: st.DrawFn) -> ImageIndex:
    chunk_size = draw(st.integers(min_value=1, max_value=2**32 - 1))
    count = draw(st.integers(min_value=0, max_value=40))
    if count == 0:
        size = 0
    else:
        # any size whose last chunk is 1..chunk_size bytes long
        size = draw(
            st.integers(min_value=(count - 1) * chunk_size + 1, max_value=count * chunk_size)
        )
    chunk_ids = draw(st.lists(ids, min_size=count, max_size=count))
    return ImageIndex(chunk_size, size, tuple(chunk_ids))


@given(images())
def test_encode_decode_round_trip(image: ImageIndex) -> None:
    data = image.encode()
    assert data.startswith(IMAGE_MAGIC)
    assert len(data) == len(IMAGE_MAGIC) + 20 + ID_LEN * len(image.chunk_ids)
    assert ImageIndex.decode(data, "test") == image


@given(images())
def test_chunk_lengths_cover_the_disk_exactly(image: ImageIndex) -> None:
    lengths = [image.chunk_length(i) for i in range(len(image.chunk_ids))]
    assert sum(lengths) == image.size
    assert all(1 <= n <= image.chunk_size for n in lengths)
    assert all(n == image.chunk_size for n in lengths[:-1])


def test_last_short_chunk_length() -> None:
    image = ImageIndex(1000, 2500, (b"a" * 32, b"b" * 32, b"c" * 32))
    assert [image.chunk_length(i) for i in range(3)] == [1000, 1000, 500]


def test_exact_multiple_has_full_last_chunk() -> None:
    image = ImageIndex(1000, 3000, (b"a" * 32, b"b" * 32, b"c" * 32))
    assert image.chunk_length(2) == 1000


def test_empty_disk_has_no_chunks() -> None:
    image = ImageIndex(65536, 0, ())
    assert image.stored_ids() == set()
    assert image.allocated_bytes() == 0
    assert ImageIndex.decode(image.encode(), "empty") == image


def test_stored_ids_excludes_zero_id_and_deduplicates() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    image = ImageIndex(10, 55, (a, ZERO_ID, b, a, ZERO_ID, b))
    assert image.stored_ids() == {a, b}


def test_allocated_bytes_counts_non_zero_chunks_only() -> None:
    a = b"\x01" * 32
    image = ImageIndex(10, 25, (ZERO_ID, a, a))  # lengths 10, 10, 5
    assert image.allocated_bytes() == 15
    assert ImageIndex(10, 25, (ZERO_ID,) * 3).allocated_bytes() == 0


@pytest.mark.parametrize(
    ("size", "count"),
    [(2500, 2), (2500, 4), (0, 1), (1, 0), (3000, 4)],
)
def test_construction_with_wrong_count_raises(size: int, count: int) -> None:
    with pytest.raises(IntegrityError, match="chunks"):
        ImageIndex(1000, size, (b"x" * 32,) * count)


def _valid() -> bytes:
    return ImageIndex(1000, 2500, (b"a" * 32, ZERO_ID, b"c" * 32)).encode()


@pytest.mark.parametrize("keep", [0, 4, 8, 20, 27, 28, 29, 60, len(_valid()) - 1])
def test_decode_rejects_truncated_data(keep: int) -> None:
    with pytest.raises(IntegrityError):
        ImageIndex.decode(_valid()[:keep], "image")


def test_decode_rejects_trailing_bytes() -> None:
    with pytest.raises(IntegrityError):
        ImageIndex.decode(_valid() + b"\0" * 32, "image")


def test_decode_rejects_wrong_magic() -> None:
    data = _valid()
    with pytest.raises(IntegrityError, match="not an image index"):
        ImageIndex.decode(b"SRTYIMG2" + data[8:], "image")


def test_decode_rejects_count_that_does_not_fit_size() -> None:
    # header claims 3 chunks of 1000 bytes for a 5000-byte disk (needs 5)
    head = struct.pack("<IQQ", 1000, 5000, 3)
    with pytest.raises(IntegrityError):
        ImageIndex.decode(IMAGE_MAGIC + head + b"a" * 96, "image")


def test_decode_rejects_zero_chunk_size() -> None:
    head = struct.pack("<IQQ", 0, 0, 0)
    with pytest.raises(IntegrityError):
        ImageIndex.decode(IMAGE_MAGIC + head, "image")


def test_decode_rejects_huge_count() -> None:
    head = struct.pack("<IQQ", 1, 2**64 - 1, 2**64 - 1)
    with pytest.raises(IntegrityError):
        ImageIndex.decode(IMAGE_MAGIC + head + b"a" * 32, "image")


@given(st.binary(max_size=200))
def test_decode_of_garbage_raises_only_integrity_error(garbage: bytes) -> None:
    try:
        image = ImageIndex.decode(garbage, "garbage")
    except IntegrityError:
        return
    # the rare garbage that parses must be a consistent image index
    assert image.encode() == garbage


@given(st.binary(max_size=120))
def test_decode_of_magic_prefixed_garbage_raises_only_integrity_error(tail: bytes) -> None:
    data = IMAGE_MAGIC + tail
    try:
        image = ImageIndex.decode(data, "garbage")
    except IntegrityError:
        return
    assert image.encode() == data
