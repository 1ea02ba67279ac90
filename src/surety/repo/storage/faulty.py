"""A fault-injecting wrapper around any storage (for tests of failure paths).

Faults are armed explicitly: ``fail_put_after(n, exc)`` lets ``n`` more writes
(puts and creates) succeed and then raises ``exc`` for every later one. Everything else passes
through unchanged.
"""

from __future__ import annotations

from surety.core.errors import SuretyError
from surety.repo.storage.base import Storage
from surety.repo.storage.wrapper import StorageWrapper

__all__ = ["FaultyStorage"]


class FaultyStorage(StorageWrapper):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
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
        super().put(name, data)

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._count_write()
        super().create(name, data)
