"""A restore fetches chunks stored in order in one pack with one read, and still checks each.

On object storage every read is a request: one ranged GET per 64-256 KiB chunk
made a restore from radosgw ~3,000 requests per GiB (bench/s3.py). Reading a
pack's consecutive chunks together must not weaken a single check: a flipped
byte in one chunk of a run still fails the restore naming that chunk, and
only that chunk is recorded as damaged.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from surety.core.errors import IntegrityError
from surety.core.progress import NullProgress
from surety.repo.format import ZERO_ID
from surety.repo.index import Location
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.restore.image import RUN_BYTES, RUN_GAP, _runs, write_image_file
from surety.testing.counting import CountingStorage
from tests.unit.backup.test_pipeline import CHUNK, MemoryDisk, _backup
from tests.unit.conftest import PASSPHRASE

CHUNKS = 96


def _disk() -> bytes:
    data = bytearray(os.urandom(CHUNKS * CHUNK))
    data[10 * CHUNK : 14 * CHUNK] = bytes(4 * CHUNK)  # a hole: zero chunks in the middle
    return bytes(data)


def test_runs_of_a_pack_are_one_read_each(
    repo: Repository, storage: MemoryStorage, tmp_path: Path
) -> None:
    data = _disk()
    image = _backup(repo, MemoryDisk(data))
    counting = CountingStorage(storage)
    reopened = Repository.open(counting, PASSPHRASE)
    reopened.index()
    counting.reset()
    out = tmp_path / "disk.raw"
    written = write_image_file(reopened, image, out, "raw", threads=2, progress=NullProgress())
    assert out.read_bytes() == data
    assert written == (CHUNKS - 4) * CHUNK
    packs = {n for n, _ in storage.list("data/")}
    reads = sum(counting.reads("data/").values())
    # one read per run: runs end at a pack's end, at the hole, and at RUN_BYTES
    assert reads <= len(packs) + 1 + counting.bytes_read // RUN_BYTES + 1
    assert reads < (CHUNKS - 4) / 4, reads


def test_a_flipped_byte_in_one_chunk_of_a_run_is_named_and_only_it_is_damaged(
    repo: Repository, storage: MemoryStorage, tmp_path: Path
) -> None:
    data = _disk()
    image = _backup(repo, MemoryDisk(data))
    index = repo.index()
    victim = image.chunk_ids[40]
    assert victim != ZERO_ID
    loc = index.get(victim)
    assert loc is not None
    name = f"data/{loc.pack}"
    pack = bytearray(storage.get(name))
    pack[loc.offset + loc.length // 2] ^= 0x01
    storage.put(name, bytes(pack))

    reopened = Repository.open(storage, PASSPHRASE)
    with pytest.raises(IntegrityError, match=victim.hex()[:12]):
        write_image_file(
            reopened, image, tmp_path / "disk.raw", "raw", threads=2, progress=NullProgress()
        )
    assert not (tmp_path / "disk.raw").exists()
    damaged = {d.chunk for d in Repository.open(storage, PASSPHRASE).damage_records()}
    assert damaged == {victim.hex()}


def test_runs_group_a_packs_chunks_in_its_order_and_split_at_gaps() -> None:
    locations = {
        b"1": Location("A", 300, 100, 1),
        b"2": Location("A", 0, 100, 1),
        b"3": Location("B", 0, 50, 1),
        b"4": Location("A", 100, 200, 1),
        b"5": Location("A", 400 + RUN_GAP + 1, 10, 1),
    }
    image = SimpleNamespace(chunk_ids=[b"1", b"2", ZERO_ID, b"3", b"4", b"5"], chunk_size=1000)
    found = [
        item if isinstance(item, int) else ([c for c, _ in item.chunks], item.offsets)
        for item in _runs(image, locations.get)  # type: ignore[arg-type]
    ]
    assert found == [
        2,  # the zero chunk, at once
        ([b"2", b"4", b"1"], [1000, 4000, 0]),  # pack A, in the pack's order
        ([b"5"], [5000]),  # beyond RUN_GAP: a read of its own
        ([b"3"], [3000]),
    ]
