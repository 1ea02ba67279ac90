"""The test S3 server itself: what scripts/s3-up promises and what radosgw 16 does.

The fixture's server answers S3 for two distinct identities; multipart works;
``If-None-Match: *`` on PUT is enforced on an unversioned bucket and not on a
versioned one (the fact the commit protocol is designed around). And the
script's own contract, on a private cluster: the export lines, loopback only,
idempotent when running, ``s3-down`` stops every daemon, and ``s3-up`` on the
same directory restarts the same cluster with its data and keys.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.prerequisites import require
from tests.s3.fixtures import CEPH_PACKAGES, CEPH_TOOLS, S3Bucket
from tests.s3.server import (
    S3_UP,
    S3Server,
    is_loopback_endpoint,
    parse_exports,
    start_server,
    stop_server,
)

EXPECTED_NAMES = {
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SURETY_S3_MAINT_ACCESS_KEY_ID",
    "SURETY_S3_MAINT_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_METADATA_DISABLED",
}


def test_parse_exports_reads_plain_and_quoted_values() -> None:
    text = "s3-up: ready\nexport A_B=plain\nexport C='quoted value'\n# export D=no\nE=no\n"
    assert parse_exports(text) == {"A_B": "plain", "C": "quoted value"}


def test_only_loopback_endpoints_count() -> None:
    assert is_loopback_endpoint("http://127.0.0.1:8000")
    assert is_loopback_endpoint("http://localhost:8000")
    assert not is_loopback_endpoint("https://s3.eu-west-1.amazonaws.com")
    assert not is_loopback_endpoint("")


def test_server_answers_on_loopback_for_two_identities(s3_server: S3Server) -> None:
    assert is_loopback_endpoint(s3_server.endpoint_url)
    assert s3_server.backup.access_key_id != s3_server.maintenance.access_key_id
    backup, maint = s3_server.client("backup"), s3_server.client("maintenance")
    try:
        name = f"surety-test-{secrets.token_hex(6)}"
        backup.create_bucket(Bucket=name)
        assert name in {b["Name"] for b in backup.list_buckets()["Buckets"]}
        assert name not in {b["Name"] for b in maint.list_buckets()["Buckets"]}
        with pytest.raises(ClientError):  # not the maintenance identity's bucket
            maint.put_object(Bucket=name, Key="x", Body=b"x")
        backup.delete_bucket(Bucket=name)
    finally:
        backup.close()
        maint.close()


def test_put_get_range_and_multipart(s3_bucket: S3Bucket) -> None:
    client, name = s3_bucket.client(), s3_bucket.name
    client.put_object(Bucket=name, Key="data/small", Body=b"0123456789")
    got = client.get_object(Bucket=name, Key="data/small", Range="bytes=2-4")["Body"].read()
    assert got == b"234"
    part = secrets.token_bytes(5 << 20)
    upload = client.create_multipart_upload(Bucket=name, Key="data/big")["UploadId"]
    etags = [
        client.upload_part(Bucket=name, Key="data/big", UploadId=upload, PartNumber=n, Body=body)[
            "ETag"
        ]
        for n, body in [(1, part), (2, b"tail")]
    ]
    client.complete_multipart_upload(
        Bucket=name,
        Key="data/big",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    assert client.get_object(Bucket=name, Key="data/big")["Body"].read() == part + b"tail"


def _put_if_absent(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """PUT with ``If-None-Match: *`` (boto3 1.26 has no parameter for it): True if stored."""

    def add_header(request: Any, **_: Any) -> None:
        request.headers["If-None-Match"] = "*"

    client.meta.events.register("before-sign.s3.PutObject", add_header)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412:
            return False
        raise
    finally:
        client.meta.events.unregister("before-sign.s3.PutObject", add_header)
    return True


def test_if_none_match_is_enforced_only_on_unversioned_buckets(
    s3_make_bucket: Callable[..., S3Bucket],
) -> None:
    plain, versioned = s3_make_bucket(), s3_make_bucket(versioned=True)
    client = plain.client()
    assert _put_if_absent(client, plain.name, "config", b"first")
    assert not _put_if_absent(client, plain.name, "config", b"second")
    assert client.get_object(Bucket=plain.name, Key="config")["Body"].read() == b"first"
    client = versioned.client()
    assert _put_if_absent(client, versioned.name, "config", b"first")
    assert _put_if_absent(client, versioned.name, "config", b"second")  # not enforced
    assert client.get_object(Bucket=versioned.name, Key="config")["Body"].read() == b"second"


def _daemons(directory: Path) -> list[str]:
    """Command lines of the processes running with this cluster's ceph.conf."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split()[2]
        except (OSError, IndexError):
            continue
        if f"{directory}/ceph.conf" in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_s3_up_restarts_the_same_cluster_with_its_data(tmp_path: Path) -> None:
    require(all(shutil.which(tool) for tool in CEPH_TOOLS), CEPH_PACKAGES)
    directory = tmp_path / "s3"
    try:
        first = start_server(directory)
        assert is_loopback_endpoint(first.endpoint_url)
        assert set(parse_exports((directory / "env").read_text())) == EXPECTED_NAMES
        assert len(_daemons(directory)) == 3  # mon, osd, radosgw
        client = first.client()
        client.create_bucket(Bucket="kept")
        client.put_object(Bucket="kept", Key="data/x", Body=b"survives a restart")
        client.close()
        again = subprocess.run(
            [str(S3_UP), str(directory)], capture_output=True, text=True, check=True, timeout=60
        )
        assert parse_exports(again.stdout) == parse_exports((directory / "env").read_text())
        stop_server(directory)
        assert _daemons(directory) == []
        second = start_server(directory)
        assert second == first
        client = second.client()
        assert client.get_object(Bucket="kept", Key="data/x")["Body"].read() == (
            b"survives a restart"
        )
        client.close()
    finally:
        if directory.exists():
            stop_server(directory)
    assert _daemons(directory) == []
    assert not os.listdir(directory / "run") or all(
        not name.endswith(".pid") for name in os.listdir(directory / "run")
    )
