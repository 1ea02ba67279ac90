"""Immutable repositories' bad input against the real radosgw, in process.

The server's answers are changed on the way in (a botocore ``after-call`` hook
on the real, parsed response), so the repository meets what a real bad server or host
would show it: a ``Date`` an hour off (clock skew: refuse to lock, nothing
written), and a retention read back shorter than the one asked (refuse: the
bucket does not honour Object Lock). And the cost of keeping shared chunks
locked: a second backup of unchanged data extends nothing while its parent's
lock still covers it; one that no parent covers extends each reused pack once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

import pytest

from surety.core.errors import StorageError, UsageError
from surety.repo.crypto import KdfParams
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.repo.storage.retry import RetryingStorage
from surety.repo.storage.s3 import S3Storage
from tests.cli import PASSPHRASE
from tests.s3.fixtures import S3Bucket
from tests.unit.backup.test_pipeline import CHUNK, MemoryDisk, _backup

CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)


@pytest.fixture
def locked_bucket(s3_make_bucket: Callable[..., S3Bucket]) -> S3Bucket:
    return s3_make_bucket("backup", object_lock=True)


@pytest.fixture(autouse=True)
def short_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURETY_TESTING_LOCK_SECONDS", "40")


def _storage(bucket: S3Bucket) -> tuple[RetryingStorage, S3Storage]:
    inner = S3Storage(bucket.name, "repo", bucket.client("backup"))
    return RetryingStorage(inner, attempts=1), inner


def _hook(storage: S3Storage, operation: str, change: Callable[[dict[str, Any]], None]) -> None:
    def handler(parsed: dict[str, Any], **_: Any) -> None:
        change(parsed)

    storage.client.meta.events.register(f"after-call.s3.{operation}", handler)


def test_clock_skew_refuses_to_lock(locked_bucket: S3Bucket) -> None:
    storage, inner = _storage(locked_bucket)

    def an_hour_behind(parsed: dict[str, Any]) -> None:
        headers = parsed["ResponseMetadata"]["HTTPHeaders"]
        headers["date"] = formatdate(time.time() - 3600, usegmt=True)

    _hook(inner, "HeadBucket", an_hour_behind)
    with pytest.raises(UsageError, match=r"clock is 36\d\d s ahead of the S3 server's"):
        Repository.init(storage, PASSPHRASE, CHUNK, CHEAP_KDF, immutable_days=1)
    assert list(inner.list("")) == []  # nothing written


def test_retention_shorter_than_asked_is_refused(locked_bucket: S3Bucket) -> None:
    storage, inner = _storage(locked_bucket)

    def shortened(parsed: dict[str, Any]) -> None:
        if "ObjectLockRetainUntilDate" in parsed:
            parsed["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(seconds=2)

    _hook(inner, "HeadObject", shortened)
    with pytest.raises(StorageError, match="shorter than asked"):
        Repository.init(storage, PASSPHRASE, CHUNK, CHEAP_KDF, immutable_days=1)


def _point(repo: Repository, disk: MemoryDisk, parent: str | None) -> str:
    image = _backup(repo, disk)
    now = datetime.now(UTC)
    record = DiskRecord("vda", len(disk.data), repo.put_image(image))
    manifest = Manifest("web01", "image", now, now, "kvm01", (record,), parent=parent)
    return repo.commit(manifest)


def test_shared_chunks_are_extended_once_per_step(locked_bucket: S3Bucket) -> None:
    """The request cost of keeping shared chunks locked (docs/format.md "Version 3")."""
    storage, inner = _storage(locked_bucket)
    repo = Repository.init(storage, PASSPHRASE, CHUNK, CHEAP_KDF, immutable_days=1)
    disk = MemoryDisk(random.Random(3).randbytes(6 * CHUNK))
    first = _point(repo, disk, None)  # writes everything, locked 40 s + a 10 s step
    assert repo.lock_extensions == 0

    def reopened() -> Repository:
        return Repository.open(
            RetryingStorage(S3Storage(inner.bucket, "repo", inner.client)), PASSPHRASE
        )

    covered = reopened()
    second = _point(covered, disk, first)  # the parent's lock (~50 s) reaches now + 40 s
    assert covered.lock_extensions == 0
    time.sleep(11)  # the parent's lock no longer reaches now + 40 s
    stepped = reopened()
    _point(stepped, disk, second)
    # extended once each: the config, the key file and the one pack (the image index is
    # content-addressed and written again by every backup, so it is locked afresh)
    assert stepped.lock_extensions == 3
    now = datetime.now(UTC)
    for point in stepped.points():
        until = stepped.object_lock.retained_until(f"points/{point.id}")  # type: ignore[union-attr]
        assert until is not None
        assert until > now
