"""ImageReader: random reads of an image index, hash-checked, zero chunks free, LRU bounded."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surety.core.errors import IntegrityError, UsageError
from surety.repo.crypto import MasterKeys
from surety.repo.format import CHUNK_SIZE_MIN, ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.reader import ImageReader
from surety.repo.repository import RepoConfig, Repository
from surety.repo.storage import MemoryStorage
from surety.repo.writer import ChunkWriter, prepare_chunk
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

CHUNK = CHUNK_SIZE_MIN


class CountingStorage(MemoryStorage):
    """Counts data reads; can hold them at a barrier to make readers overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.data_reads = 0
        self.gate: threading.Event | None = None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            self.data_reads += 1
            if self.gate is not None:
                self.gate.wait(5)
        return super().get(name, offset, length)


def _disk(seed: int = 1) -> bytes:
    """Data, zero and repeated chunks, and a short last chunk."""
    rng = random.Random(seed)
    parts = [rng.randbytes(CHUNK), bytes(CHUNK), bytes(CHUNK), rng.randbytes(CHUNK)]
    parts += [parts[0], bytes(CHUNK), rng.randbytes(CHUNK // 3)]
    return b"".join(parts)


def _store(repo: Repository, data: bytes) -> ImageIndex:
    writer, zero = ChunkWriter(repo), bytes(CHUNK)
    ids = []
    for offset in range(0, len(data), CHUNK):
        prepared = prepare_chunk(repo.keys, data[offset : offset + CHUNK], zero, writer, 1)
        writer.add(prepared)
        ids.append(prepared.chunk_id)
    writer.finish()
    return ImageIndex(CHUNK, len(data), tuple(ids))


@pytest.fixture
def counting() -> CountingStorage:
    return CountingStorage()


@pytest.fixture
def stored(counting: CountingStorage) -> tuple[Repository, ImageIndex, bytes]:
    repo = Repository.init(counting, PASSPHRASE, chunk_size=CHUNK, kdf=CHEAP_KDF)
    data = _disk()
    return repo, _store(repo, data), data


def test_whole_disk_reads_back_exactly(stored: tuple[Repository, ImageIndex, bytes]) -> None:
    repo, image, data = stored
    reader = ImageReader(repo, image)
    assert reader.size == len(data)
    assert reader.read(0, len(data)) == data


@given(
    ranges=st.lists(st.tuples(st.integers(0, 7 * CHUNK), st.integers(0, 3 * CHUNK)), max_size=20)
)
def test_any_range_reads_back_exactly(keys: MasterKeys, ranges: list[tuple[int, int]]) -> None:
    repo = Repository(MemoryStorage(), keys, RepoConfig("0" * 32, CHUNK))
    data = _disk(seed=2)
    reader = ImageReader(repo, _store(repo, data), cache_chunks=2)
    for wanted_offset, wanted_length in ranges:
        offset = min(wanted_offset, len(data))
        length = min(wanted_length, len(data) - offset)
        assert reader.read(offset, length) == data[offset : offset + length]


def test_zero_chunks_never_touch_storage(
    stored: tuple[Repository, ImageIndex, bytes], counting: CountingStorage
) -> None:
    repo, image, _data = stored
    reader = ImageReader(repo, image)
    counting.data_reads = 0
    assert reader.read(CHUNK, 2 * CHUNK) == bytes(2 * CHUNK)
    assert reader.read(5 * CHUNK + 7, 100) == bytes(100)
    assert counting.data_reads == 0


def test_cache_is_bounded_and_hit(
    stored: tuple[Repository, ImageIndex, bytes], counting: CountingStorage
) -> None:
    repo, image, _data = stored
    reader = ImageReader(repo, image, cache_chunks=1)
    counting.data_reads = 0
    reader.read(0, 10)
    reader.read(100, 10)  # same chunk: from the cache
    assert counting.data_reads == 1
    reader.read(3 * CHUNK, 10)  # evicts chunk 0
    reader.read(0, 10)
    assert counting.data_reads == 3
    assert len(reader._cache) == 1


def test_extents_mark_zero_runs(stored: tuple[Repository, ImageIndex, bytes]) -> None:
    repo, image, data = stored
    reader = ImageReader(repo, image)
    runs = list(reader.extents(0, len(data)))
    assert runs == [
        (0, CHUNK, False),
        (CHUNK, 2 * CHUNK, True),
        (3 * CHUNK, 2 * CHUNK, False),
        (5 * CHUNK, CHUNK, True),
        (6 * CHUNK, len(data) - 6 * CHUNK, False),
    ]
    assert list(reader.extents(CHUNK + 5, 10)) == [(CHUNK + 5, 10, True)]
    zero_ids = [i for i, c in enumerate(image.chunk_ids) if c == ZERO_ID]
    assert zero_ids == [1, 2, 5]


def test_damaged_chunk_raises_and_is_not_cached(
    stored: tuple[Repository, ImageIndex, bytes], counting: CountingStorage
) -> None:
    repo, image, data = stored
    location = repo.index().get(image.chunk_ids[3])
    assert location is not None
    name = f"data/{location.pack}"
    good = counting.get(name)
    damaged = bytearray(good)
    damaged[location.offset + location.length // 2] ^= 1
    counting.put(name, bytes(damaged))
    reader = ImageReader(repo, image)
    with pytest.raises(IntegrityError):
        reader.read(3 * CHUNK - 10, 20)  # spans a good chunk and the damaged one
    with pytest.raises(IntegrityError):
        reader.read(3 * CHUNK, 1)  # still refused: the failure was not cached
    counting.put(name, good)
    assert reader.read(3 * CHUNK - 10, 20) == data[3 * CHUNK - 10 : 3 * CHUNK + 10]


def test_concurrent_readers_of_one_chunk_fetch_it_once(
    stored: tuple[Repository, ImageIndex, bytes], counting: CountingStorage
) -> None:
    repo, image, data = stored
    reader = ImageReader(repo, image)
    counting.data_reads, counting.gate = 0, threading.Event()
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(reader.read(4 * CHUNK, CHUNK)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # all four are waiting: one in storage, three on its fetch
    counting.gate.set()
    for thread in threads:
        thread.join()
    assert results == [data[4 * CHUNK : 5 * CHUNK]] * 4
    assert counting.data_reads == 1


def test_reads_past_the_end_are_refused(stored: tuple[Repository, ImageIndex, bytes]) -> None:
    repo, image, data = stored
    reader = ImageReader(repo, image)
    with pytest.raises(UsageError):
        reader.read(len(data) - 1, 2)
    with pytest.raises(UsageError):
        ImageReader(repo, image, cache_chunks=0)
