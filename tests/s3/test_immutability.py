"""What radosgw 16 enforces for "the backup host cannot delete": each claim of docs/s3-server.md.

Bucket policies: a bucket the maintenance identity owns, with ``no_delete_policy``,
lets the backup identity write and read but not delete outside ``locks/``, and not
touch the policy; an explicit Deny binds even a bucket's owner, who can however
drop the policy, so the backup identity must not own the bucket. A policy alone
does not stop an overwrite. Object Lock in COMPLIANCE mode does: a locked version
stays readable after a delete (a delete marker) or an overwrite (a new version),
and no one, the bucket owner included, deletes it or shortens its lock before
the date; extending it works, and once the date passes the version can go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.s3.fixtures import Owner, S3Bucket
from tests.s3.server import no_delete_policy


def _refused(call: Callable[..., Any], *args: Any, code: str = "AccessDenied", **kw: Any) -> None:
    with pytest.raises(ClientError) as caught:
        call(*args, **kw)
    assert caught.value.response["Error"]["Code"] == code


def _body(client: Any, bucket: str, key: str, version: str | None = None) -> bytes:
    extra = {"VersionId": version} if version else {}
    return bytes(client.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())


@pytest.fixture
def guarded(s3_make_bucket: Callable[..., S3Bucket]) -> S3Bucket:
    """A bucket the maintenance identity owns, with the no-delete policy for the backup one."""
    bucket = s3_make_bucket("maintenance")
    policy = no_delete_policy(bucket.name, bucket.server.backup)
    bucket.client("maintenance").put_bucket_policy(Bucket=bucket.name, Policy=policy)
    return bucket


def test_policy_lets_backup_write_and_read_but_not_delete_data(guarded: S3Bucket) -> None:
    backup, name = guarded.client("backup"), guarded.name
    backup.put_object(Bucket=name, Key="data/ab/pack", Body=b"pack")
    backup.put_object(Bucket=name, Key="config", Body=b"config")
    assert _body(backup, name, "data/ab/pack") == b"pack"
    keys = {item["Key"] for item in backup.list_objects_v2(Bucket=name)["Contents"]}
    assert keys == {"data/ab/pack", "config"}
    _refused(backup.delete_object, Bucket=name, Key="data/ab/pack")
    _refused(backup.delete_object, Bucket=name, Key="config")
    _refused(backup.delete_objects, Bucket=name, Delete={"Objects": [{"Key": "config"}]})
    assert _body(backup, name, "data/ab/pack") == b"pack"


def test_policy_lets_backup_delete_its_locks_and_upload_in_parts(guarded: S3Bucket) -> None:
    backup, name = guarded.client("backup"), guarded.name
    backup.put_object(Bucket=name, Key="locks/host-a", Body=b"lease")
    backup.delete_object(Bucket=name, Key="locks/host-a")
    assert "Contents" not in backup.list_objects_v2(Bucket=name, Prefix="locks/")
    upload = backup.create_multipart_upload(Bucket=name, Key="data/cd/big")["UploadId"]
    part = backup.upload_part(
        Bucket=name, Key="data/cd/big", UploadId=upload, PartNumber=1, Body=b"x" * 100
    )
    backup.complete_multipart_upload(
        Bucket=name,
        Key="data/cd/big",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert _body(backup, name, "data/cd/big") == b"x" * 100


def test_backup_cannot_change_or_drop_the_policy(guarded: S3Bucket) -> None:
    backup, name = guarded.client("backup"), guarded.name
    _refused(backup.delete_bucket_policy, Bucket=name)
    _refused(backup.put_bucket_policy, Bucket=name, Policy='{"Statement": []}')
    _refused(backup.delete_bucket, Bucket=name)


def test_maintenance_identity_deletes_data(guarded: S3Bucket) -> None:
    backup, maint, name = guarded.client("backup"), guarded.client("maintenance"), guarded.name
    backup.put_object(Bucket=name, Key="data/ef/pack", Body=b"old")
    maint.delete_object(Bucket=name, Key="data/ef/pack")
    _refused(backup.get_object, Bucket=name, Key="data/ef/pack", code="NoSuchKey")


def test_policy_alone_does_not_stop_an_overwrite(guarded: S3Bucket) -> None:
    """Why immutable points need Object Lock: PutObject replaces an unversioned object."""
    backup, name = guarded.client("backup"), guarded.name
    backup.put_object(Bucket=name, Key="data/ab/pack", Body=b"good")
    backup.put_object(Bucket=name, Key="data/ab/pack", Body=b"ransom")
    assert _body(backup, name, "data/ab/pack") == b"ransom"


def test_deny_binds_the_owner_but_the_owner_can_drop_it(s3_bucket: S3Bucket) -> None:
    """Why the backup identity must not own the bucket."""
    owner, name = s3_bucket.client("backup"), s3_bucket.name
    owner.put_bucket_policy(Bucket=name, Policy=no_delete_policy(name, s3_bucket.server.backup))
    owner.put_object(Bucket=name, Key="data/ab/pack", Body=b"pack")
    _refused(owner.delete_object, Bucket=name, Key="data/ab/pack")
    owner.delete_bucket_policy(Bucket=name)
    owner.delete_object(Bucket=name, Key="data/ab/pack")


def _locked(bucket: S3Bucket, key: str, until: datetime, identity: Owner = "maintenance") -> str:
    response = bucket.client(identity).put_object(
        Bucket=bucket.name,
        Key=key,
        Body=b"locked",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    return str(response["VersionId"])


def test_object_lock_bucket_is_versioned(s3_make_bucket: Callable[..., S3Bucket]) -> None:
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint = bucket.client("maintenance")
    assert maint.get_bucket_versioning(Bucket=bucket.name)["Status"] == "Enabled"
    config = maint.get_object_lock_configuration(Bucket=bucket.name)["ObjectLockConfiguration"]
    assert config["ObjectLockEnabled"] == "Enabled"


def test_compliance_version_survives_delete_and_overwrite(
    s3_make_bucket: Callable[..., S3Bucket],
) -> None:
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint, name = bucket.client("maintenance"), bucket.name
    version = _locked(bucket, "data/ab/pack", datetime.now(UTC) + timedelta(days=1))
    head = maint.head_object(Bucket=name, Key="data/ab/pack")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    marker = maint.delete_object(Bucket=name, Key="data/ab/pack")
    assert marker["DeleteMarker"] is True
    _refused(maint.get_object, Bucket=name, Key="data/ab/pack", code="NoSuchKey")
    assert _body(maint, name, "data/ab/pack", version) == b"locked"
    maint.put_object(Bucket=name, Key="data/ab/pack", Body=b"ransom")
    assert _body(maint, name, "data/ab/pack") == b"ransom"
    assert _body(maint, name, "data/ab/pack", version) == b"locked"


def test_compliance_version_cannot_be_deleted_even_by_the_owner(
    s3_make_bucket: Callable[..., S3Bucket],
) -> None:
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint, name = bucket.client("maintenance"), bucket.name
    version = _locked(bucket, "data/ab/pack", datetime.now(UTC) + timedelta(days=1))
    _refused(maint.delete_object, Bucket=name, Key="data/ab/pack", VersionId=version)
    _refused(
        maint.delete_object,
        Bucket=name,
        Key="data/ab/pack",
        VersionId=version,
        BypassGovernanceRetention=True,
    )
    _refused(maint.delete_bucket, Bucket=name, code="BucketNotEmpty")
    assert _body(maint, name, "data/ab/pack", version) == b"locked"


def test_backup_identity_under_policy_and_lock(s3_make_bucket: Callable[..., S3Bucket]) -> None:
    """The combination the design uses: maintenance owns a lock bucket; backup writes locked."""
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint, backup, name = bucket.client("maintenance"), bucket.client("backup"), bucket.name
    maint.put_bucket_policy(Bucket=name, Policy=no_delete_policy(name, bucket.server.backup))
    version = _locked(bucket, "data/ab/pack", datetime.now(UTC) + timedelta(days=1), "backup")
    _refused(backup.delete_object, Bucket=name, Key="data/ab/pack")
    _refused(backup.delete_object, Bucket=name, Key="data/ab/pack", VersionId=version)
    _refused(maint.delete_object, Bucket=name, Key="data/ab/pack", VersionId=version)
    backup.put_object(Bucket=name, Key="locks/host-a", Body=b"lease")
    backup.delete_object(Bucket=name, Key="locks/host-a")  # a delete marker: allowed there
    assert _body(backup, name, "data/ab/pack", version) == b"locked"


def test_retention_extends_but_never_shortens(s3_make_bucket: Callable[..., S3Bucket]) -> None:
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint, name = bucket.client("maintenance"), bucket.name
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    version = _locked(bucket, "index/1", until)
    where = {"Bucket": name, "Key": "index/1", "VersionId": version}
    shorter = {"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=1)}
    _refused(maint.put_object_retention, **where, Retention=shorter)
    governance = {"Mode": "GOVERNANCE", "RetainUntilDate": until + timedelta(days=2)}
    _refused(maint.put_object_retention, **where, Retention=governance)
    longer = {"Mode": "COMPLIANCE", "RetainUntilDate": until + timedelta(days=1)}
    maint.put_object_retention(**where, Retention=longer)
    now = maint.get_object_retention(**where)["Retention"]
    assert now["Mode"] == "COMPLIANCE"
    assert now["RetainUntilDate"] == until + timedelta(days=1)


def test_expired_version_can_be_deleted(s3_make_bucket: Callable[..., S3Bucket]) -> None:
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint, name = bucket.client("maintenance"), bucket.name
    version = _locked(bucket, "data/ab/short", datetime.now(UTC) + timedelta(seconds=2))
    _refused(maint.delete_object, Bucket=name, Key="data/ab/short", VersionId=version)
    time.sleep(3)
    maint.delete_object(Bucket=name, Key="data/ab/short", VersionId=version)
    assert "Versions" not in maint.list_object_versions(Bucket=name, Prefix="data/ab/short")


def test_default_retention_locks_plain_puts(s3_make_bucket: Callable[..., S3Bucket]) -> None:
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint, name = bucket.client("maintenance"), bucket.name
    maint.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    version = maint.put_object(Bucket=name, Key="data/ab/plain", Body=b"plain")["VersionId"]
    assert maint.head_object(Bucket=name, Key="data/ab/plain")["ObjectLockMode"] == "COMPLIANCE"
    _refused(maint.delete_object, Bucket=name, Key="data/ab/plain", VersionId=version)


def test_no_object_lock_on_a_bucket_created_without_it(s3_bucket: S3Bucket) -> None:
    client, name = s3_bucket.client("backup"), s3_bucket.name
    until = datetime.now(UTC) + timedelta(days=1)
    _refused(
        client.put_object,
        Bucket=name,
        Key="data/x",
        Body=b"x",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
        code="InvalidRequest",
    )
    _refused(
        client.put_object_lock_configuration,
        Bucket=name,
        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"},
        code="InvalidBucketState",
    )
