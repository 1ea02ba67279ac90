"""RetryingStorage: transient failures retried with capped backoff, never turned into damage.

The wrapper is what an S3 repository runs behind (``storage_for`` composes
``RetryingStorage(S3Storage(...))``); here it wraps a memory storage with
scripted faults, and once S3Storage with a stubbed botocore, so each rule is
seen without a server and without real sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from surety.core.errors import ObjectExists, ObjectNotFound, StorageError, StorageFull
from surety.repo.storage import (
    MemoryStorage,
    RetryingStorage,
    StorageUnavailable,
    TransientStorageError,
)
from surety.repo.storage.s3 import S3Storage
from surety.repo.storage.wrapper import StorageWrapper
from surety.testing.storage_conformance import StorageConformance


class Flaky(StorageWrapper):
    """Raises the scripted faults, one per call, before (or after) doing the call."""

    def __init__(self, inner: MemoryStorage, faults: list[Exception], after: bool = False) -> None:
        super().__init__(inner)
        self.faults, self.after, self.calls = faults, after, 0

    def _maybe(self, call: Any) -> Any:
        self.calls += 1
        if not self.faults:
            return call()
        fault = self.faults.pop(0)
        if self.after:
            call()  # it reached the server; the answer was lost
        raise fault

    def put(self, name: str, data: Any) -> None:
        self._maybe(lambda: self.inner.put(name, data))

    def create(self, name: str, data: Any) -> None:
        self._maybe(lambda: self.inner.create(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        result: bytes = self._maybe(lambda: self.inner.get(name, offset, length))
        return result

    def delete(self, name: str) -> None:
        self._maybe(lambda: self.inner.delete(name))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        result: Iterator[tuple[str, int]] = self._maybe(lambda: self.inner.list(prefix))
        return result


def _transient() -> TransientStorageError:
    return TransientStorageError("s3://b: get x: transient: connection reset")


class TestRetryingPassThrough(StorageConformance):
    @pytest.fixture
    def storage(self) -> RetryingStorage:
        return RetryingStorage(MemoryStorage(), sleep=lambda _s: None)


def test_transient_failures_are_retried_with_growing_capped_delays() -> None:
    sleeps: list[float] = []
    inner = MemoryStorage()
    inner.put("data/a", b"abc")
    flaky = Flaky(inner, [_transient(), _transient(), _transient()])
    storage = RetryingStorage(
        flaky, attempts=4, base_delay=1.0, max_delay=3.0, sleep=sleeps.append, jitter=lambda: 1.0
    )
    assert storage.get("data/a") == b"abc"
    assert flaky.calls == 4
    assert sleeps == [1.0, 2.0, 3.0]  # 1, 2, then 4 capped at 3


def test_jitter_scales_the_delay_down() -> None:
    storage = RetryingStorage(MemoryStorage(), base_delay=2.0, jitter=lambda: 0.25)
    assert storage.delay(1) == 0.5
    assert storage.delay(3) == 2.0


def test_after_the_last_attempt_storage_unavailable_says_transient_and_counts() -> None:
    flaky = Flaky(MemoryStorage(), [_transient() for _ in range(5)])
    storage = RetryingStorage(flaky, attempts=3, sleep=lambda _s: None)
    with pytest.raises(StorageError, match=r"transient.*\(3 attempts\)") as caught:
        storage.put("data/a", b"x")
    assert type(caught.value) is StorageUnavailable  # not transient: nobody retries it again
    assert not isinstance(caught.value, TransientStorageError)
    assert flaky.calls == 3


@pytest.mark.parametrize(
    "fault",
    [ObjectNotFound("gone"), StorageFull("full"), StorageError("range 0+8 returned 4 bytes")],
)
def test_definitive_failures_are_not_retried(fault: Exception) -> None:
    flaky = Flaky(MemoryStorage(), [fault])
    storage = RetryingStorage(flaky, sleep=lambda _s: pytest.fail("slept"))
    with pytest.raises(type(fault)):
        storage.get("data/a")
    assert flaky.calls == 1


def test_a_create_whose_answer_was_lost_counts_as_ours() -> None:
    inner = MemoryStorage()
    storage = RetryingStorage(Flaky(inner, [_transient()], after=True), sleep=lambda _s: None)
    storage.create("config", b"mine")  # the retry meets our own object: done
    assert inner.get("config") == b"mine"


def test_a_create_meeting_someone_elses_object_after_a_transient_failure_fails() -> None:
    inner = MemoryStorage()
    flaky = Flaky(inner, [_transient()])
    storage = RetryingStorage(flaky, sleep=lambda _s: None)
    inner.put("config", b"theirs")
    with pytest.raises(ObjectExists):
        storage.create("config", b"mine")


def test_a_delete_whose_answer_was_lost_is_done() -> None:
    inner = MemoryStorage()
    inner.put("locks/a", b"x")
    storage = RetryingStorage(Flaky(inner, [_transient()], after=True), sleep=lambda _s: None)
    storage.delete("locks/a")
    assert not inner.exists("locks/a")
    with pytest.raises(ObjectNotFound):  # a first-attempt not-found stays not-found
        storage.delete("locks/a")


def test_a_listing_is_retried_as_a_whole() -> None:
    inner = MemoryStorage()
    inner.put("index/a", b"1")
    storage = RetryingStorage(Flaky(inner, [_transient()]), sleep=lambda _s: None)
    assert list(storage.list("index/")) == [("index/a", 1)]


def test_s3_throttling_then_success_through_the_wrapper() -> None:
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    sleeps: list[float] = []
    storage = RetryingStorage(
        S3Storage("bkt", "", client, versioned=False), sleep=sleeps.append, jitter=lambda: 1.0
    )
    with Stubber(client) as stub:
        stub.add_client_error("head_object", "SlowDown", "slow down", 503)
        stub.add_client_error("head_object", "ServiceUnavailable", "busy", 503)
        stub.add_response("head_object", {"ContentLength": 42})
        assert storage.size("data/a") == 42
        stub.add_client_error("head_object", "QuotaExceeded", "quota", 403)
        with pytest.raises(StorageFull):
            storage.size("data/a")
    assert sleeps == [0.5, 1.0]
