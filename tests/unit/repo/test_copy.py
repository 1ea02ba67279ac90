"""``copy_points``: restore points from one repository into another with other keys.

Copies restore byte-exact from the target, keep their metadata and record their
origin; a second copy transfers nothing; an interrupted copy shows no point and
its rerun uploads only what is missing; chunk sizes may differ; damage in the
source stops the copy before anything is committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surety.backup.image import ImageBackupOptions, backup_image
from surety.core.errors import IntegrityError, StorageError, UsageError
from surety.core.progress import NullProgress
from surety.repo.copy import copied_from, copy_points
from surety.repo.reader import ImageReader
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.repo.storage.base import Storage
from surety.repo.storage.faulty import FaultyStorage
from surety.repo.storage.wrapper import StorageWrapper
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

CHUNK = 64 << 10


class Counting(StorageWrapper):
    """Counts the pack bytes written."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.pack_bytes = 0

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        if name.startswith("data/"):
            self.pack_bytes += len(data)
        super().put(name, data)


def _repo(chunk_size: int = CHUNK) -> tuple[MemoryStorage, Repository]:
    memory = MemoryStorage()
    return memory, Repository.init(memory, PASSPHRASE, chunk_size=chunk_size, kdf=CHEAP_KDF)


def _disk(path: Path, seed: int, size: int = 1 << 20) -> Path:
    data = bytearray(os.urandom(size)) if seed else bytearray(size)
    data[size // 4 : size // 2] = bytes(size // 4)  # zeros: never stored
    path.write_bytes(bytes(data))
    return path


def _backup(repo: Repository, image: Path, name: str = "web01") -> str:
    return backup_image(repo, ImageBackupOptions(image, name), NullProgress()).id


def _restored(repo: Repository, point_id: str) -> bytes:
    point = repo.points_get(point_id)
    (disk,) = point.disks
    return ImageReader(repo, repo.get_image(disk.image)).read(0, disk.size)


def test_copied_points_restore_byte_exact_and_keep_their_metadata(tmp_path: Path) -> None:
    _, source = _repo()
    _, target = _repo()
    first = _disk(tmp_path / "a.img", 1)
    a = _backup(source, first)
    second = _disk(tmp_path / "b.img", 2)
    b = _backup(source, second)
    report = copy_points(source, target, source.points())
    assert [o.status for o in report.outcomes] == ["copied", "copied"]
    assert report.bytes > 0
    by_origin = {copied_from(p): p for p in target.points()}
    for point_id, image in ((a, first), (b, second)):
        copy = by_origin[(source.config.id, point_id)]
        original = source.points_get(point_id)
        assert _restored(target, copy.id) == image.read_bytes()
        assert (copy.name, copy.started, copy.finished, copy.consistency) == (
            original.name,
            original.started,
            original.finished,
            original.consistency,
        )
        assert copy.id != point_id  # other keys, other ids
    copy_b = by_origin[(source.config.id, b)]
    assert copy_b.parent == by_origin[(source.config.id, a)].id


def test_a_second_copy_transfers_nothing(tmp_path: Path) -> None:
    _, source = _repo()
    memory, _ = _repo()
    counting = Counting(memory)
    target = Repository.open(counting, PASSPHRASE)
    _backup(source, _disk(tmp_path / "a.img", 1))
    copy_points(source, target, source.points())
    sent = counting.pack_bytes
    again = copy_points(source, target, source.points())
    assert [o.status for o in again.outcomes] == ["skipped"]
    assert again.bytes == 0
    assert counting.pack_bytes == sent
    assert len(target.points()) == 1


def test_unchanged_chunks_are_not_sent_again(tmp_path: Path) -> None:
    _, source = _repo()
    _, target = _repo()
    image = _disk(tmp_path / "a.img", 1)
    _backup(source, image)
    first = copy_points(source, target, source.points())
    data = bytearray(image.read_bytes())
    data[:CHUNK] = os.urandom(CHUNK)  # one chunk changed
    image.write_bytes(bytes(data))
    _backup(source, image)
    second = copy_points(source, target, source.points())
    assert [o.status for o in second.outcomes] == ["skipped", "copied"]
    assert second.chunks == 1
    assert second.bytes < first.bytes / 4


def test_a_target_with_another_chunk_size_restores_byte_exact(tmp_path: Path) -> None:
    _, source = _repo(CHUNK)
    _, target = _repo(4 * CHUNK)
    image = _disk(tmp_path / "a.img", 3, size=(1 << 20) + 12345)
    point = _backup(source, image)
    (outcome,) = copy_points(source, target, [source.points_get(point)]).outcomes
    assert outcome.target_point is not None
    assert _restored(target, outcome.target_point) == image.read_bytes()


def test_an_interrupted_copy_shows_no_point_and_its_rerun_sends_only_the_rest(
    tmp_path: Path,
) -> None:
    _, source = _repo()
    memory, _ = _repo()
    image = _disk(tmp_path / "a.img", 1, size=4 << 20)
    _backup(source, image)
    faulty = FaultyStorage(Counting(memory))
    target = Repository.open(faulty, PASSPHRASE)
    faulty.fail_put_after(6, StorageError("disk gone"))  # lock, then packs and indexes
    with pytest.raises(StorageError):
        copy_points(source, target, source.points(), checkpoint_bytes=1 << 20)
    assert not any(True for _ in memory.list("points/"))
    indexed = sum(1 for _ in memory.list("index/"))
    assert indexed >= 1  # the checkpoints before the failure
    for name, _ in list(memory.list("locks/")):
        memory.delete(name)  # as a lock of a killed process, judged stale
    counting = Counting(memory)
    resumed = Repository.open(counting, PASSPHRASE)
    (outcome,) = copy_points(source, resumed, source.points(), checkpoint_bytes=1 << 20).outcomes
    assert outcome.status == "copied"
    assert outcome.target_point is not None
    assert _restored(resumed, outcome.target_point) == image.read_bytes()
    assert counting.pack_bytes < 4 << 20  # part of it was already there


def test_a_damaged_source_chunk_stops_the_copy_before_any_commit(tmp_path: Path) -> None:
    source_memory, source = _repo()
    _, target = _repo()
    _backup(source, _disk(tmp_path / "a.img", 1))
    name, _ = next(iter(source_memory.list("data/")))
    blob = bytearray(source_memory.get(name))
    blob[100] ^= 0xFF
    source_memory.put(name, bytes(blob))
    with pytest.raises(IntegrityError):
        copy_points(source, target, source.points())
    assert target.points() == []


def test_refused_and_dry_run_points_are_not_copied(tmp_path: Path) -> None:
    _, source = _repo()
    _, target = _repo()
    a = _backup(source, _disk(tmp_path / "a.img", 1))
    b = _backup(source, _disk(tmp_path / "b.img", 2))
    dry = copy_points(source, target, source.points(), dry_run=True)
    assert [o.status for o in dry.outcomes] == ["would copy", "would copy"]
    assert target.points() == []
    report = copy_points(source, target, source.points(), refused={a: "failed"})
    assert {o.point: o.status for o in report.outcomes} == {a: "not verified", b: "copied"}
    assert [copied_from(p) for p in target.points()] == [(source.config.id, b)]


def test_copying_into_the_same_repository_is_refused(tmp_path: Path) -> None:
    _, source = _repo()
    with pytest.raises(UsageError):
        copy_points(source, source, [])
