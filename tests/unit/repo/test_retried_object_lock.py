"""The Object Lock calls (versions, retention) get the storage's retries, not only its reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from surety.repo.immutable import ObjectLock, RetriedObjectLock, object_lock_of
from surety.repo.storage.memory import MemoryStorage
from surety.repo.storage.retry import RetryingStorage, StorageUnavailable, TransientStorageError


class FlakyLockStorage(MemoryStorage):
    """A memory storage that is also an Object Lock backend whose calls fail ``fail`` times."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail, self.calls = fail, 0
        self.written: dict[str, datetime] = {}
        self.maintenance = False
        self.until = datetime(2030, 1, 1, tzinfo=UTC)

    def _flaky(self) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise TransientStorageError("503 SlowDown")

    def check_object_lock(self) -> None:
        self._flaky()

    def detect_object_lock(self) -> None:
        self._flaky()

    def enable_object_lock(self, period: timedelta) -> None:
        self._flaky()

    def disable_object_lock(self) -> None:
        self._flaky()

    def clock_skew(self) -> float:
        self._flaky()
        return 0.0

    def retained_until(self, name: str) -> datetime | None:
        self._flaky()
        return self.until

    def extend_retention(self, name: str, until: datetime) -> None:
        self._flaky()
        self.until = until

    def put_locked(self, name: str, data: bytes, until: datetime) -> None:
        self._flaky()
        self.put(name, data)
        self.written[name] = until

    def locked_versions(self, name: str) -> list[str]:
        self._flaky()
        return ["v1", "v2"]

    def pin_version(self, name: str, version: str, why: str) -> None:
        pass

    def pinned_version(self, name: str) -> str | None:
        return None

    def drain_warnings(self) -> list[str]:
        return []


def retrying(inner: FlakyLockStorage, attempts: int = 4) -> RetryingStorage:
    return RetryingStorage(inner, attempts=attempts, sleep=lambda _s: None)


def test_a_bare_backend_is_its_own_lock() -> None:
    backend = FlakyLockStorage(fail=0)
    assert object_lock_of(backend) is backend
    assert object_lock_of(MemoryStorage()) is None


def test_transient_failures_of_lock_calls_are_retried() -> None:
    backend = FlakyLockStorage(fail=2)
    lock = object_lock_of(retrying(backend))
    assert isinstance(lock, RetriedObjectLock)
    assert isinstance(lock, ObjectLock)
    assert lock.locked_versions("data/ab") == ["v1", "v2"]
    assert backend.calls == 3
    backend.calls, backend.fail = 0, 1
    assert lock.retained_until("data/ab") == backend.until
    until = datetime(2031, 1, 1, tzinfo=UTC)
    backend.calls = 0
    lock.put_locked("data/cd", b"x", until)
    assert lock.written == {"data/cd": until}  # the backend's own record, shared
    assert backend.get("data/cd") == b"x"


def test_a_persisting_failure_is_unavailable_not_a_missing_lock() -> None:
    backend = FlakyLockStorage(fail=10)
    lock = object_lock_of(retrying(backend, attempts=3))
    assert lock is not None
    with pytest.raises(StorageUnavailable, match=r"versions of data/ab.*3 attempts"):
        lock.locked_versions("data/ab")
    assert backend.calls == 3
