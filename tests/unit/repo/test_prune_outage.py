"""A storage outage during prune is not damage: prune stops, nothing is recorded damaged,
nothing is deleted, and a later prune (storage back) finishes the job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surety.backup.image import ImageBackupOptions, backup_image
from surety.core.progress import NullProgress
from surety.repo.forget import forget_points
from surety.repo.prune import prune_repository
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.repo.storage.retry import StorageUnavailable
from surety.repo.storage.wrapper import StorageWrapper
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE


class Outage(StorageWrapper):
    """Range reads of packs fail as a storage whose retries ran out would make them fail."""

    down = False

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if self.down and name.startswith("data/") and length is not None:
            raise StorageUnavailable(f"{name}: transient: 503 SlowDown, 4 attempts")
        return super().get(name, offset, length)


def _image(path: Path, *parts: bytes) -> Path:
    path.write_bytes(b"".join(parts))
    return path


def test_an_outage_while_repacking_is_not_damage(tmp_path: Path) -> None:
    memory = MemoryStorage()
    Repository.init(memory, PASSPHRASE, chunk_size=65536, kdf=CHEAP_KDF)
    storage = Outage(memory)
    repo = Repository.open(storage, PASSPHRASE)
    kept, dropped = os.urandom(4 << 16), os.urandom(12 << 16)
    first = backup_image(
        repo, ImageBackupOptions(_image(tmp_path / "a", kept, dropped), "a"), NullProgress()
    )
    backup_image(repo, ImageBackupOptions(_image(tmp_path / "b", kept), "b"), NullProgress())
    forget_points(repo, [first.id])
    packs_before = sorted(memory.list("data/"))
    storage.down = True
    with pytest.raises(StorageUnavailable):
        prune_repository(repo, NullProgress())
    assert list(memory.list("damaged/")) == []
    assert sorted(memory.list("data/")) == packs_before
    storage.down = False
    report = prune_repository(Repository.open(storage, PASSPHRASE), NullProgress())
    assert report.repacked_packs >= 1
    assert list(memory.list("damaged/")) == []
