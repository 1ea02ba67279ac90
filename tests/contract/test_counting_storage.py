"""The counting wrapper passes the storage conformance suite and counts every read."""

from __future__ import annotations

import pytest

from surety.repo.storage import MemoryStorage
from surety.testing.counting import CountingStorage
from surety.testing.storage_conformance import StorageConformance


class TestCountingStoragePassThrough(StorageConformance):
    @pytest.fixture
    def storage(self) -> CountingStorage:
        return CountingStorage(MemoryStorage())


def test_counts_whole_and_ranged_reads_per_object() -> None:
    storage = CountingStorage(MemoryStorage())
    storage.put("data/a", b"0123456789")
    storage.put("index/b", b"xyz")
    storage.get("data/a")
    storage.get("data/a", 2, 3)
    storage.get("index/b")
    assert storage.reads("data/") == {"data/a": 2}
    assert storage.ranged == {"data/a": 1}
    assert storage.bytes_read == 10 + 3 + 3
    storage.reset()
    assert storage.reads() == {}
    assert storage.bytes_read == 0
