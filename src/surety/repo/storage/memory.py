"""In-memory storage: the fake every test may use; passes the conformance suite."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from surety.core.errors import ObjectExists, ObjectNotFound, StorageError
from surety.repo.storage.base import validate_name

__all__ = ["MemoryStorage"]


class MemoryStorage:
    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "memory:"

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        validate_name(name)
        with self._lock:
            self._objects[name] = bytes(data)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        validate_name(name)
        with self._lock:
            if name in self._objects:
                raise ObjectExists(f"{name}: already exists")
            self._objects[name] = bytes(data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            data = self._objects.get(name)
        if data is None:
            raise ObjectNotFound(f"{name}: no such object")
        end = len(data) if length is None else offset + length
        if offset < 0 or end > len(data):
            raise StorageError(f"{name}: range {offset}+{length} beyond size {len(data)}")
        return data[offset:end]

    def delete(self, name: str) -> None:
        with self._lock:
            if self._objects.pop(name, None) is None:
                raise ObjectNotFound(f"{name}: no such object")

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        with self._lock:
            items = [(n, len(d)) for n, d in self._objects.items() if n.startswith(prefix)]
        yield from items

    def size(self, name: str) -> int:
        with self._lock:
            data = self._objects.get(name)
        if data is None:
            raise ObjectNotFound(f"{name}: no such object")
        return len(data)

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._objects
