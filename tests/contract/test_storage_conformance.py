"""Every storage backend passes the same conformance suite."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from surety.core.errors import StorageFull
from surety.repo.storage import LocalStorage, MemoryStorage
from surety.repo.storage.faulty import FaultyStorage
from surety.repo.storage.wrapper import StorageWrapper
from surety.testing.storage_conformance import StorageConformance


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    def storage(self) -> MemoryStorage:
        return MemoryStorage()


class TestLocalStorage(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> LocalStorage:
        return LocalStorage(tmp_path)


class TestStorageWrapperPassThrough(StorageConformance):
    @pytest.fixture
    def storage(self) -> StorageWrapper:
        return StorageWrapper(MemoryStorage())


class TestFaultyStoragePassThrough(StorageConformance):
    @pytest.fixture
    def storage(self) -> FaultyStorage:
        return FaultyStorage(MemoryStorage())


def test_local_storage_leaves_no_temporary_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("data/" + "cd" * 32, b"x" * 1000)
    files = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert files == ["cd" * 32]
    assert (tmp_path / "data" / "cd" / ("cd" * 32)).exists()


def test_local_storage_ignores_and_cleans_only_old_temporary_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("index/a", b"1")
    old, young = tmp_path / "index" / ".tmp-old", tmp_path / "index" / ".tmp-young"
    old.write_bytes(b"torn")
    young.write_bytes(b"another writer's, being written")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert dict(storage.list("index/")) == {"index/a": 1}
    assert storage.clean_temporary(older_than=1800) == 1
    assert not old.exists()
    assert young.exists()


def test_faulty_storage_injects_after_n_puts() -> None:
    storage = FaultyStorage(MemoryStorage())
    storage.fail_put_after(2, StorageFull("full"))
    storage.put("data/a", b"1")
    storage.put("data/b", b"2")
    with pytest.raises(StorageFull):
        storage.put("data/c", b"3")
    assert dict(storage.list("data/")) == {"data/a": 1, "data/b": 1}
