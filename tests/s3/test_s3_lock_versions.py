"""Locks in a versioned (Object Lock) bucket do not pile up old versions, on the real radosgw.

A lock is rewritten every few minutes while held; in a versioned bucket each
rewrite is a version, and a plain delete only adds a delete marker. The
product's bucket policy lets the backup identity delete versions under
``locks/`` only, so releasing a lock removes every version of it. Under a
policy from before (delete only), the release still works: a marker is left.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from surety.repo.lock import HeldLock
from surety.repo.storage.s3 import S3Storage, bucket_policy
from tests.s3.fixtures import S3Bucket
from tests.s3.server import no_delete_policy


def _versions(bucket: S3Bucket, prefix: str) -> tuple[list[Any], list[Any]]:
    answer = bucket.client("maintenance").list_object_versions(Bucket=bucket.name, Prefix=prefix)
    return answer.get("Versions", []), answer.get("DeleteMarkers", [])


def _hold_refresh_release(bucket: S3Bucket) -> None:
    storage = S3Storage(bucket.name, "repo", bucket.client("backup"))
    lock = HeldLock(storage, "locks/0123abcd", exclusive=False, operation="backup")
    lock.write()
    lock.refresh()
    lock.refresh()
    assert len(_versions(bucket, "repo/locks/")[0]) == 3
    lock.release()
    assert not storage.exists("locks/0123abcd")


@pytest.fixture
def locked_bucket(s3_make_bucket: Callable[..., S3Bucket]) -> S3Bucket:
    return s3_make_bucket("maintenance", object_lock=True)


def test_release_removes_every_version_under_the_product_policy(locked_bucket: S3Bucket) -> None:
    server = locked_bucket.server
    policy = bucket_policy(
        locked_bucket.name, "repo", server.backup.principal, server.maintenance.principal
    )
    locked_bucket.client("maintenance").put_bucket_policy(
        Bucket=locked_bucket.name, Policy=json.dumps(policy)
    )
    _hold_refresh_release(locked_bucket)
    assert _versions(locked_bucket, "repo/locks/") == ([], [])


def test_release_under_an_older_policy_leaves_a_marker(locked_bucket: S3Bucket) -> None:
    policy = no_delete_policy(locked_bucket.name, locked_bucket.server.backup, "repo/locks/")
    locked_bucket.client("maintenance").put_bucket_policy(Bucket=locked_bucket.name, Policy=policy)
    _hold_refresh_release(locked_bucket)
    versions, markers = _versions(locked_bucket, "repo/locks/")
    assert len(versions) == 3
    assert len(markers) == 1
