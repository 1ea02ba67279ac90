"""Retry a storage's transient failures with capped exponential backoff and jitter.

A backend raises ``TransientStorageError`` for a failure that may pass by
itself (a 5xx, throttling, a timeout, a connection reset or a body cut
short); ``RetryingStorage`` tries such a call again, at most ``attempts``
times in all, sleeping ``random() * min(max_delay, base_delay * 2**n)``
between tries ("full jitter"). When the last attempt fails it raises
``StorageUnavailable`` ("transient: ..., N attempts"), a ``StorageError`` that
is no longer transient, so no outer layer retries it again; a caller that
records damage must treat it as "the storage could not be read", never as
damage.

What is never retried: ``ObjectNotFound``, ``ObjectExists``, ``StorageFull``,
``StorageReadOnly`` and every other ``StorageError`` (e.g. a range read that
returns the wrong length: objects are immutable, so that is damage and must
reach the repository, which hashes every chunk above this port).

Two answers change meaning after an attempt that may have reached the server:
a ``create`` that fails transiently and then meets ``ObjectExists`` may have
written the object itself, so the object is read back and the create counts
as done iff it holds exactly our bytes; a ``delete`` that then meets
``ObjectNotFound`` counts as done (the object is gone either way). ``list``
is retried as a whole (the listing is collected before it is returned).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from surety.core.errors import ObjectExists, ObjectNotFound, StorageError
from surety.repo.storage.base import Storage
from surety.repo.storage.wrapper import StorageWrapper

__all__ = ["RetryingStorage", "StorageUnavailable", "TransientStorageError"]

T = TypeVar("T")


class TransientStorageError(StorageError):
    """A failure that may pass if the call is tried again (raised by backends)."""


class StorageUnavailable(StorageError):
    """Transient failures persisted through every attempt: not damage, not retried again."""


class RetryingStorage(StorageWrapper):
    """A ``Storage`` that retries the transient failures of ``inner``."""

    def __init__(
        self,
        inner: Storage,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(inner)
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts, self.base_delay, self.max_delay = attempts, base_delay, max_delay
        self._sleep, self._jitter = sleep, jitter

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        backoff: float = self.base_delay * float(2 ** (retry - 1))
        return self._jitter() * min(self.max_delay, backoff)

    def _call(
        self, what: str, call: Callable[[], T], after_transient: Callable[[], T] | None = None
    ) -> T:
        """Run ``call``; retry transient failures; ``after_transient`` runs instead of a
        definitive failure met after an earlier transient one (see the module docstring)."""
        last: TransientStorageError | None = None
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self._sleep(self.delay(attempt - 1))
            try:
                return call()
            except TransientStorageError as exc:
                last = exc
            except (ObjectExists, ObjectNotFound):
                if last is None or after_transient is None:
                    raise
                return after_transient()
        raise StorageUnavailable(
            f"{what}: transient failure persisted: {last} ({self.attempts} attempts)"
        ) from last

    def retry(self, what: str, call: Callable[[], T]) -> T:
        """``call`` (another request to the same server) with this storage's retries."""
        return self._call(what, call)

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self._call(f"put {name}", lambda: self.inner.put(name, data))

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        def ours() -> None:  # our earlier attempt may have written it
            try:
                if self.inner.get(name) == bytes(data):
                    return
            except StorageError:
                pass
            raise ObjectExists(f"{name}: already exists")

        self._call(f"create {name}", lambda: self.inner.create(name, data), ours)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"get {name}", lambda: self.inner.get(name, offset, length))

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", lambda: self.inner.delete(name), lambda: None)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        listing = self._call(f"list {prefix or '/'}", lambda: list(self.inner.list(prefix)))
        return iter(listing)

    def size(self, name: str) -> int:
        return self._call(f"size {name}", lambda: self.inner.size(name))

    def exists(self, name: str) -> bool:
        return self._call(f"exists {name}", lambda: self.inner.exists(name))

    def clean_temporary(self, older_than: float) -> int:
        """The inner storage's ``clean_temporary`` (prune calls it), if it has one."""
        clean: Callable[..., int] | None = getattr(self.inner, "clean_temporary", None)
        return 0 if clean is None else self._call("clean", lambda: clean(older_than=older_than))
