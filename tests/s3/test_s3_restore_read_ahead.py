"""Restore from S3 reads ahead (several GETs in flight), bounded, and keeps every check.

On the real radosgw: an image backed up into an S3 repository is written back
byte for byte by restore's threaded path (``restore.image.write_image_file``)
while a probe around the storage sees several ranged GETs in flight at once,
never more than ``READ_AHEAD``, and never more span bytes read and not yet
written than the bound the code states. A pack damaged in the bucket (one
byte flipped) or deleted there is named, through the same read-ahead, and
nothing is left at the target.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from surety.backup.pipeline import backup_disk
from surety.core.errors import IntegrityError
from surety.core.progress import NullProgress
from surety.repo.format import CHUNK_SIZE_MIN
from surety.repo.image import ImageIndex
from surety.repo.repository import Repository
from surety.repo.storage import RetryingStorage
from surety.repo.storage.s3 import S3Storage
from surety.repo.storage.wrapper import StorageWrapper
from surety.repo.writer import ChunkWriter
from surety.restore import image as restore_image
from surety.restore.image import write_image_file
from tests.s3.fixtures import S3Bucket
from tests.unit.backup.test_pipeline import MemoryDisk
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

SIZE = 8 << 20
RUN_BYTES = 640 << 10  # small runs (two chunks each): many GETs from a small image


class Probe(StorageWrapper):
    """Counts the GETs in flight and the bytes read by GETs so far."""

    def __init__(self, inner: RetryingStorage) -> None:
        super().__init__(inner)
        self.guard = threading.Lock()
        self.in_flight = self.most_in_flight = self.gets = self.got = 0

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self.guard:
            self.in_flight += 1
            self.gets += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            data = self.inner.get(name, offset, length)
        finally:
            with self.guard:
                self.in_flight -= 1
        with self.guard:
            self.got += len(data)
        return data


@pytest.fixture
def backed_up(s3_bucket: S3Bucket) -> tuple[Repository, ImageIndex, bytes, S3Bucket]:
    storage = RetryingStorage(S3Storage(s3_bucket.name, "repo", s3_bucket.client()))
    repo = Repository.init(storage, PASSPHRASE, chunk_size=CHUNK_SIZE_MIN, kdf=CHEAP_KDF)
    data = os.urandom(SIZE)
    writer = ChunkWriter(repo)
    # one backup thread: the packs hold the chunks in the image's order, so the runs' spans
    # do not overlap and the bytes fetched ahead can be told from the chunks written
    image, _stats = backup_disk(
        repo, writer=writer, source=MemoryDisk(data), progress=NullProgress(), threads=1
    )
    writer.finish()
    return Repository.open(Probe(storage), PASSPHRASE), image, data, s3_bucket


def test_restore_keeps_several_gets_in_flight_within_its_bounds(
    backed_up: tuple[Repository, ImageIndex, bytes, S3Bucket],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, image, data, _bucket = backed_up
    bound = 1 << 20
    monkeypatch.setattr(restore_image, "RUN_BYTES", RUN_BYTES)
    monkeypatch.setattr(restore_image, "READ_AHEAD_BYTES", bound)
    probe = repo.storage
    assert isinstance(probe, Probe)
    index = repo.index()
    grouped = restore_image._runs(image, index.get, restore_image.RUN_GAP_OBJECT)
    runs = [r for r in grouped if isinstance(r, restore_image._Run)]
    probe.gets = probe.got = 0
    sealed = threading.Lock()
    held = []  # stored bytes fetched and not yet written, whenever a chunk is written
    written_sealed = 0
    write = restore_image._pwrite_all

    def watched(fd: int, chunk: bytes | memoryview, offset: int) -> None:
        nonlocal written_sealed
        loc = index.get(image.chunk_ids[offset // image.chunk_size])
        assert loc is not None
        with sealed:
            held.append(probe.got - written_sealed)
            written_sealed += loc.length
        write(fd, chunk, offset)

    monkeypatch.setattr(restore_image, "_pwrite_all", watched)
    target = tmp_path / "restored.img"
    # one writer: without the read-ahead, one GET at a time
    written = write_image_file(repo, image, target, "raw", threads=1, progress=NullProgress())
    assert written == SIZE
    assert target.read_bytes() == data
    assert probe.gets == len(runs) >= SIZE // RUN_BYTES  # one GET per run
    assert 1 < probe.most_in_flight <= restore_image.READ_AHEAD
    assert 0 < max(held) <= bound + RUN_BYTES


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_pack_in_the_bucket_is_named_through_the_read_ahead(
    backed_up: tuple[Repository, ImageIndex, bytes, S3Bucket],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    repo, image, _data, bucket = backed_up
    monkeypatch.setattr(restore_image, "RUN_BYTES", RUN_BYTES)
    client = bucket.client()
    packs = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=bucket.name, Prefix="repo/data/")["Contents"]
    ]
    victim = sorted(packs)[0]
    if damage == "flip":
        body = bytearray(client.get_object(Bucket=bucket.name, Key=victim)["Body"].read())
        body[len(body) // 2] ^= 0x01
        client.put_object(Bucket=bucket.name, Key=victim, Body=bytes(body))
    else:
        client.delete_object(Bucket=bucket.name, Key=victim)
    pack = victim.removeprefix("repo/data/")[:12]
    why = "authentication failed|does not match" if damage == "flip" else "is missing"
    target = tmp_path / "restored.img"
    with pytest.raises(IntegrityError, match=f"chunk [0-9a-f]{{12}}.*(pack {pack}.*)?({why})"):
        write_image_file(repo, image, target, "raw", threads=2, progress=NullProgress())
    assert not target.exists()
    assert {r.pack[:12] for r in repo.damage_records()} == {pack}
