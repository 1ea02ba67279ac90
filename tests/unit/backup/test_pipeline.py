"""The backup data path on an in-memory disk: fulls, zero chunks, changed-block patching."""

from __future__ import annotations

import random
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from surety.backup.pipeline import ChangedBlocks, backup_disk
from surety.core.progress import NullProgress
from surety.repo.format import CHUNK_SIZE_MIN, ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.repo.writer import ChunkWriter
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

CHUNK = CHUNK_SIZE_MIN


class MemoryDisk:
    """A DiskSource over bytes that counts what was read."""

    def __init__(self, data: bytes, name: str = "vda") -> None:
        self.data, self.name, self.size = bytearray(data), name, len(data)
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> bytes:
        self.bytes_read += length
        return bytes(self.data[offset : offset + length])

    def data_extents(self) -> Iterator[tuple[int, int]]:
        yield 0, self.size


def _backup(repo: Repository, disk: MemoryDisk, changed: ChangedBlocks | None = None) -> ImageIndex:
    writer = ChunkWriter(repo)
    image, _stats = backup_disk(
        repo, writer=writer, source=disk, progress=NullProgress(), threads=2, changed=changed
    )
    writer.finish()
    return image


def _restore(repo: Repository, image: ImageIndex) -> bytes:
    return b"".join(
        bytes(image.chunk_length(i)) if cid == ZERO_ID else repo.read_chunk(cid)
        for i, cid in enumerate(image.chunk_ids)
    )


def test_from_extents_splits_at_chunk_boundaries() -> None:
    parent = ImageIndex(CHUNK, 4 * CHUNK, (ZERO_ID,) * 4)
    changed = ChangedBlocks.from_extents(parent, [(CHUNK - 100, 300), (3 * CHUNK, CHUNK)])
    assert changed.dirty == {0: [(CHUNK - 100, 100)], 1: [(CHUNK, 200)], 3: [(3 * CHUNK, CHUNK)]}
    assert changed.action(0, CHUNK) == ("patch", 100)
    assert changed.action(2, CHUNK) == ("parent", 0)
    assert changed.action(3, CHUNK) == ("read", CHUNK)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    writes=st.lists(
        st.tuples(st.integers(0, 6 * CHUNK - 1), st.integers(1, CHUNK // 2)), max_size=12
    ),
)
def test_incremental_equals_full_and_reads_only_dirty(
    seed: int, writes: list[tuple[int, int]]
) -> None:
    repo = Repository.init(MemoryStorage(), PASSPHRASE, chunk_size=CHUNK, kdf=CHEAP_KDF)
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(6 * CHUNK + 1000))
    data[2 * CHUNK : 3 * CHUNK] = bytes(CHUNK)  # a zero chunk
    disk = MemoryDisk(bytes(data))
    parent = _backup(repo, disk)
    assert parent.chunk_ids[2] == ZERO_ID
    extents = []
    for offset, wanted in writes:
        length = min(wanted, disk.size - offset)
        disk.data[offset : offset + length] = rng.randbytes(length)
        extents.append((offset, length))
    disk.bytes_read = 0
    incremental = _backup(repo, disk, ChangedBlocks.from_extents(parent, extents))
    assert _restore(repo, incremental) == bytes(disk.data)
    assert incremental == _backup(repo, MemoryDisk(bytes(disk.data)))
    assert disk.bytes_read <= sum(n for _, n in extents)  # never whole chunks for small writes


def test_an_incremental_reads_and_stores_afresh_a_chunk_recorded_damaged() -> None:
    """Dedup never propagates damage: clean and dirty chunks over a damaged parent copy heal."""
    storage = MemoryStorage()
    repo = Repository.init(storage, PASSPHRASE, chunk_size=CHUNK, kdf=CHEAP_KDF)
    disk = MemoryDisk(random.Random(5).randbytes(4 * CHUNK))
    parent = _backup(repo, disk)
    for number in (1, 2):  # 1 stays clean, 2 gets a small write
        chunk_id = parent.chunk_ids[number]
        loc = repo.index().get(chunk_id)
        assert loc is not None
        repo.record_damage(chunk_id, loc.pack, "authentication failed (test)")
    disk.data[2 * CHUNK : 2 * CHUNK + 10] = b"x" * 10
    disk.bytes_read = 0
    fresh = Repository.open(storage, PASSPHRASE)  # another host: reads the records
    changed = ChangedBlocks.from_extents(parent, [(2 * CHUNK, 10)])
    incremental = _backup(fresh, disk, changed)
    assert disk.bytes_read == 2 * CHUNK  # both read whole; chunks 0 and 3 taken unread
    reopened = Repository.open(storage, PASSPHRASE)
    assert parent.chunk_ids[1] in reopened.index()  # a healthy copy now: the parent heals too
    assert _restore(reopened, incremental) == bytes(disk.data)
