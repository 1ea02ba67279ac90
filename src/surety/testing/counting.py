"""A storage wrapper that counts reads, for tests that prove how often an object is read.

``gets`` counts every ``get`` per object name (whole or ranged); ``ranged``
counts the ranged ones; ``bytes_read`` sums what was returned. Everything
passes through to the wrapped storage unchanged.
"""

from __future__ import annotations

import threading
from collections import Counter

from surety.repo.storage.base import Storage
from surety.repo.storage.wrapper import StorageWrapper

__all__ = ["CountingStorage"]


class CountingStorage(StorageWrapper):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.gets: Counter[str] = Counter()
        self.ranged: Counter[str] = Counter()
        self.bytes_read = 0
        self._lock = threading.Lock()

    def reads(self, prefix: str = "") -> Counter[str]:
        """Reads per object whose name starts with ``prefix``."""
        with self._lock:
            return Counter({n: c for n, c in self.gets.items() if n.startswith(prefix)})

    def reset(self) -> None:
        with self._lock:
            self.gets.clear()
            self.ranged.clear()
            self.bytes_read = 0

    def describe(self) -> str:
        return f"counting({self.inner.describe()})"

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = super().get(name, offset, length)
        with self._lock:
            self.gets[name] += 1
            if offset or length is not None:
                self.ranged[name] += 1
            self.bytes_read += len(data)
        return data
