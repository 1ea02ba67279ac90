"""A fault-injecting wrapper around any storage (for tests of failure paths).

Faults are armed explicitly: ``fail_put_after(n, exc)`` lets ``n`` more writes
(puts and creates) succeed and then raises ``exc`` for every later one. Everything else passes
through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

from surety.core.errors import SuretyError
from surety.repo.storage.base import Storage

__all__ = ["FaultyStorage"]


class FaultyStorage:
    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self._puts_left: int | None = None
        self._fault: SuretyError | None = None

    def fail_put_after(self, count: int, fault: SuretyError) -> None:
        self._puts_left, self._fault = count, fault

    def describe(self) -> str:
        return f"faulty({self.inner.describe()})"

    def _count_write(self) -> None:
        if self._puts_left is not None and self._fault is not None:
            if self._puts_left <= 0:
                raise self._fault
            self._puts_left -= 1

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._count_write()
        self.inner.put(name, data)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._count_write()
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
