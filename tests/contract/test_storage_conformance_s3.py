"""The S3 backend passes the storage conformance suite against a real radosgw.

The server is Ceph radosgw on loopback (``scripts/s3-up``); every test gets a
fresh prefix in one bucket, so the backend starts empty. The suite runs on the
composition production uses (``RetryingStorage(S3Storage(...))``) on an
unversioned bucket, and the create-if-absent rules once more on a versioned
bucket, where radosgw does not enforce ``If-None-Match: *``.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from surety.core.errors import ObjectExists, ObjectNotFound, RepositoryNotFound, StorageError
from surety.repo.storage import RetryingStorage
from surety.repo.storage.s3 import S3Storage, make_s3_client
from surety.testing.storage_conformance import StorageConformance
from tests.prerequisites import require


@pytest.fixture(scope="module")
def s3_environ() -> dict[str, str]:
    """The radosgw's endpoint and keys (from ``eval "$(scripts/s3-up DIR)"``)."""
    environ = dict(os.environ)
    require(bool(environ.get("AWS_ENDPOINT_URL")), 'a radosgw: eval "$(scripts/s3-up DIR)"')
    return environ


@pytest.fixture(scope="module")
def client(s3_environ: dict[str, str]) -> Iterator[Any]:
    client = make_s3_client(s3_environ)
    yield client
    client.close()


@pytest.fixture(scope="module")
def bucket(client: Any) -> str:
    name = f"conformance-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def versioned_bucket(client: Any) -> str:
    name = f"versioned-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


class TestS3Storage(StorageConformance):
    @pytest.fixture
    def storage(self, client: Any, bucket: str) -> RetryingStorage:
        return RetryingStorage(S3Storage(bucket, f"t-{secrets.token_hex(6)}", client))


class TestS3StorageVersionedBucket(StorageConformance):
    """Every guarantee holds on a versioned bucket too (create checks versions there)."""

    @pytest.fixture
    def storage(self, client: Any, versioned_bucket: str) -> RetryingStorage:
        return RetryingStorage(S3Storage(versioned_bucket, f"t-{secrets.token_hex(6)}", client))


def test_multipart_upload_round_trips_and_leaves_no_upload(client: Any, bucket: str) -> None:
    prefix = f"mp-{secrets.token_hex(4)}"
    storage = S3Storage(bucket, prefix, client, part_size=5 << 20, multipart_threshold=6 << 20)
    blob = secrets.token_bytes(1 << 20) * 12  # 12 MiB: parts of 5, 5 and 2 MiB
    storage.put("data/big", blob)
    assert storage.size("data/big") == len(blob)
    assert storage.get("data/big") == blob
    assert storage.get("data/big", (5 << 20) - 10, 20) == blob[(5 << 20) - 10 : (5 << 20) + 10]
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    assert uploads == []


def test_clean_temporary_aborts_a_crashed_multipart_upload(client: Any, bucket: str) -> None:
    prefix = f"crash-{secrets.token_hex(4)}"
    client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/data/torn")
    storage = S3Storage(bucket, prefix, client)
    assert storage.clean_temporary(older_than=3600) == 0  # young: may be a running writer's
    assert storage.clean_temporary(older_than=-60) == 1
    assert client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
    assert list(storage.list("")) == []


def test_range_reads_at_and_past_the_end(client: Any, bucket: str) -> None:
    storage = S3Storage(bucket, f"r-{secrets.token_hex(4)}", client)
    storage.put("data/r", b"0123456789")
    assert storage.get("data/r", 10) == b""
    assert storage.get("data/r", 10, 0) == b""
    for offset, length in [(8, 5), (11, None), (10, 1)]:
        with pytest.raises(StorageError):
            storage.get("data/r", offset, length)


def test_versioned_create_finds_a_deleted_name_taken(client: Any, versioned_bucket: str) -> None:
    storage = S3Storage(versioned_bucket, f"v-{secrets.token_hex(4)}", client)
    storage.create("config", b"one")
    storage.delete("config")
    with pytest.raises(ObjectNotFound):
        storage.get("config")
    with pytest.raises(ObjectExists):  # its history is there: never re-created silently
        storage.create("config", b"two")


def test_versioned_concurrent_creates_leave_the_winner_current(
    client: Any, versioned_bucket: str
) -> None:
    storage = S3Storage(versioned_bucket, f"c-{secrets.token_hex(4)}", client)
    barrier, winners = threading.Barrier(4), []

    def creator(n: int) -> None:
        barrier.wait()
        try:
            storage.create("config", f"creator {n}".encode())
            winners.append(n)
        except ObjectExists:
            pass

    threads = [threading.Thread(target=creator, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert storage.get("config") == f"creator {winners[0]}".encode()


def test_missing_bucket_is_repository_not_found(client: Any) -> None:
    storage = S3Storage(f"absent-{secrets.token_hex(4)}", "", client)
    with pytest.raises(RepositoryNotFound, match="does not exist"):
        storage.check_bucket()
    with pytest.raises(RepositoryNotFound):
        storage.get("config")
