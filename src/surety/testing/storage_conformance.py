"""The storage conformance suite: every backend must pass it.

Use it by subclassing ``StorageConformance`` in a test module and providing a
``storage`` pytest fixture that yields a fresh, empty backend::

    class TestLocal(StorageConformance):
        @pytest.fixture
        def storage(self, tmp_path): return LocalStorage(tmp_path)
"""

from __future__ import annotations

import threading

import pytest

from surety.core.errors import ObjectExists, ObjectNotFound, StorageError, UsageError
from surety.repo.storage.base import Storage

__all__ = ["StorageConformance"]


class StorageConformance:
    def test_put_get_roundtrip(self, storage: Storage) -> None:
        storage.put("data/" + "ab" * 32, b"hello world")
        assert storage.get("data/" + "ab" * 32) == b"hello world"

    def test_empty_object(self, storage: Storage) -> None:
        storage.put("index/empty", b"")
        assert storage.get("index/empty") == b""
        assert storage.size("index/empty") == 0

    def test_range_reads(self, storage: Storage) -> None:
        storage.put("data/r1", bytes(range(256)))
        assert storage.get("data/r1", 10, 5) == bytes(range(10, 15))
        assert storage.get("data/r1", 250) == bytes(range(250, 256))
        assert storage.get("data/r1", 256, 0) == b""

    def test_range_past_end_is_an_error(self, storage: Storage) -> None:
        storage.put("data/r2", b"12345")
        with pytest.raises(StorageError):
            storage.get("data/r2", 3, 10)

    def test_missing_object(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            storage.get("points/nothing")
        with pytest.raises(ObjectNotFound):
            storage.size("points/nothing")
        with pytest.raises(ObjectNotFound):
            storage.delete("points/nothing")
        assert not storage.exists("points/nothing")

    def test_put_replaces(self, storage: Storage) -> None:
        storage.put("config", b"one")
        storage.put("config", b"two, longer")
        assert storage.get("config") == b"two, longer"
        assert storage.size("config") == len(b"two, longer")

    def test_delete(self, storage: Storage) -> None:
        storage.put("locks/a", b"x")
        storage.delete("locks/a")
        assert not storage.exists("locks/a")
        assert list(storage.list("locks/")) == []

    def test_list_by_prefix_with_sizes(self, storage: Storage) -> None:
        names = {"data/" + f"{i:02x}" * 32: i for i in range(20)}
        for name, size in names.items():
            storage.put(name, b"x" * size)
        storage.put("index/i1", b"idx")
        storage.put("config", b"c")
        assert dict(storage.list("data/")) == names
        assert dict(storage.list("index/")) == {"index/i1": 3}
        assert set(dict(storage.list("")).keys()) == {*names, "index/i1", "config"}

    def test_bytearray_and_memoryview_accepted(self, storage: Storage) -> None:
        storage.put("data/ba", bytearray(b"abc"))
        storage.put("data/mv", memoryview(b"xyzabc")[3:])
        assert storage.get("data/ba") == b"abc"
        assert storage.get("data/mv") == b"abc"

    @pytest.mark.parametrize("bad", ["", "../x", "a/b/c", ".hidden", "data/.tmp", "sp ace"])
    def test_invalid_names_rejected(self, storage: Storage, bad: str) -> None:
        with pytest.raises(UsageError):
            storage.put(bad, b"x")

    def test_large_object(self, storage: Storage) -> None:
        blob = bytes(range(256)) * (64 * 1024)  # 16 MiB, a full pack
        storage.put("data/big", blob)
        assert storage.size("data/big") == len(blob)
        assert storage.get("data/big", len(blob) - 100, 100) == blob[-100:]

    def test_concurrent_puts(self, storage: Storage) -> None:
        def writer(n: int) -> None:
            for i in range(25):
                storage.put(f"data/t{n}-{i}", f"{n}:{i}".encode())

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        listed = dict(storage.list("data/"))
        assert len(listed) == 100
        assert storage.get("data/t3-24") == b"3:24"

    def test_create_refuses_an_existing_name(self, storage: Storage) -> None:
        storage.create("config", b"first")
        with pytest.raises(ObjectExists):
            storage.create("config", b"second")
        assert storage.get("config") == b"first"
        assert dict(storage.list("")) == {"config": 5}  # nothing left of the loser

    def test_concurrent_creates_have_one_winner(self, storage: Storage) -> None:
        barrier = threading.Barrier(8)
        winners: list[int] = []

        def creator(n: int) -> None:
            barrier.wait()
            try:
                storage.create("config", f"creator {n}".encode())
                winners.append(n)
            except ObjectExists:
                pass

        threads = [threading.Thread(target=creator, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        assert storage.get("config") == f"creator {winners[0]}".encode()
