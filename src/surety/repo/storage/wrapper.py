"""The base of every storage wrapper: each port method passes through to ``inner``.

A wrapper (fault injection, counting, later retry or read-only) subclasses
``StorageWrapper`` and overrides only the methods it changes; everything else
reaches the wrapped storage unchanged, so a wrapper keeps the guarantees of
``surety.repo.storage.base`` (checked by the conformance suite) unless it
means to break one.
"""

from __future__ import annotations

from collections.abc import Iterator

from surety.repo.storage.base import Storage

__all__ = ["StorageWrapper"]


class StorageWrapper:
    """A ``Storage`` that delegates every port method to ``inner``."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.put(name, data)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.create(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(name, offset, length)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)
