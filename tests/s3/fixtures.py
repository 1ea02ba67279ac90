"""pytest fixtures for tests that need a real S3 server (radosgw on loopback).

Loaded for every test directory by ``tests/conftest.py`` (``pytest_plugins``),
so any test may ask for:

- ``s3_server`` (session): the running server, an ``S3Server``;
- ``s3_bucket`` (function): a fresh, empty, unversioned bucket owned by the
  backup identity, an ``S3Bucket`` (name + server + ``environ()``);
- ``s3_make_bucket`` (function): a factory for other kinds of bucket
  (owned by the maintenance identity, versioned, with Object Lock).

Buckets are emptied and removed after the test (best effort: versions still
under a retention the server keeps, and so does the bucket holding them).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.prerequisites import require, require_import
from tests.s3.server import (
    S3Server,
    is_loopback_endpoint,
    server_from_environ,
    start_server,
    stop_server,
)

__all__ = ["Owner", "S3Bucket", "s3_bucket", "s3_make_bucket", "s3_server"]

CEPH_TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool")
CEPH_PACKAGES = "Ceph (apt install ceph-mon ceph-osd radosgw ceph-common)"

Owner = Literal["backup", "maintenance"]


@dataclass(frozen=True)
class S3Bucket:
    """A test's bucket on the test server."""

    name: str
    server: S3Server
    owner: Owner = "backup"
    _clients: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def environ(self, identity: Owner = "backup") -> dict[str, str]:
        """The server's variables for ``identity`` (see ``S3Server.environ``)."""
        return self.server.environ(identity)

    def client(self, identity: Owner = "backup") -> Any:
        """``identity``'s boto3 client, one per identity, closed after the test."""
        if identity not in self._clients:
            self._clients[identity] = self.server.client(identity)
        return self._clients[identity]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The radosgw the S3 tests use, found or started in this order.

    1. ``SURETY_TEST_S3=DIR`` (CI: ``.ci/run`` starts ``scripts/s3-up DIR`` before
       stage 1 and stops it after): the fixture runs ``scripts/s3-up DIR`` itself,
       which returns at once when that server answers, waits on the script's lock
       while another ``s3-up`` is still starting it, and starts it if it is down.
       It is left running at the end of the session.
    2. ``AWS_ENDPOINT_URL`` on a loopback address with the keys ``scripts/s3-up``
       prints (a developer's ``eval "$(scripts/s3-up DIR)"``): that server, as is.
       A non-loopback endpoint is never used (tests never touch a real cloud).
    3. Otherwise a private server under the session's tmp dir, stopped at the end.

    Cases 1 and 3 need the Ceph packages: without them the test is skipped on a
    developer's machine and fails under ``CI=true`` (``tests/prerequisites.py``).
    """
    require_import("boto3", "boto3 (the S3 tests' client)")
    directory = os.environ.get("SURETY_TEST_S3", "").strip()
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not directory and is_loopback_endpoint(endpoint):
        try:
            server = server_from_environ(os.environ)
        except KeyError as missing:
            pytest.fail(f"AWS_ENDPOINT_URL={endpoint} is set but {missing} is not", pytrace=False)
        yield server
        return
    require(all(shutil.which(tool) for tool in CEPH_TOOLS), CEPH_PACKAGES)
    if directory:
        yield _started(Path(directory))
        return
    private = tmp_path_factory.mktemp("s3-server")
    try:
        yield _started(private)
    finally:
        stop_server(private)


def _started(directory: Path) -> S3Server:
    try:
        return start_server(directory)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def s3_make_bucket(s3_server: S3Server) -> Iterator[Callable[..., S3Bucket]]:
    """``make(owner="backup", versioned=False, object_lock=False) -> S3Bucket``.

    ``object_lock=True`` creates the bucket with Object Lock (always versioned).
    Every bucket made is emptied and removed after the test, best effort.
    """
    made: list[S3Bucket] = []

    def make(
        owner: Owner = "backup", *, versioned: bool = False, object_lock: bool = False
    ) -> S3Bucket:
        bucket = S3Bucket(f"surety-test-{secrets.token_hex(6)}", s3_server, owner)
        client = bucket.client(owner)
        if object_lock:
            client.create_bucket(Bucket=bucket.name, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=bucket.name)
        if versioned and not object_lock:
            client.put_bucket_versioning(
                Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
            )
        made.append(bucket)
        return bucket

    yield make
    for bucket in made:
        remove_bucket(bucket.client(bucket.owner), bucket.name)
        bucket.close()


@pytest.fixture
def s3_bucket(s3_make_bucket: Callable[..., S3Bucket]) -> S3Bucket:
    """A fresh empty unversioned bucket owned by the backup identity (full rights)."""
    return s3_make_bucket()


def remove_bucket(client: Any, name: str) -> None:
    """Delete every version, marker and unfinished upload, then the bucket; keep what's locked."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
            doomed = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:  # locked versions come back as per-key errors: they stay
                client.delete_objects(Bucket=name, Delete={"Objects": doomed, "Quiet": True})
        client.delete_bucket(Bucket=name)
    except ClientError:
        pass  # a bucket that still holds locked versions stays until they expire
