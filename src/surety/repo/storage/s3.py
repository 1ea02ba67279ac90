"""S3 storage: repository objects in an S3-compatible bucket, through botocore (the core of boto3).

Layout: object ``<name>`` is the key ``<prefix>/<name>`` (or ``<name>`` when
the prefix is empty); no fan-out (S3 has no directories to grow).

How the port's guarantees are kept (see ``surety.repo.storage.base``):

* ``put``: one ``PutObject`` with ``Content-MD5`` up to ``multipart_threshold``
  (32 MiB), else a multipart upload in ``part_size`` (16 MiB) parts. A PUT is
  atomic on S3 and a multipart object appears only at
  ``CompleteMultipartUpload``; a failed upload is aborted (and
  ``clean_temporary``, which prune calls, aborts uploads left by a crash).
  Why 32/16 MiB: packs aim at 16 MiB (``PACK_SIZE_TARGET``), so a pack is one
  request (the fewest requests per GiB, and a retry resends one pack); only
  larger objects (a repository made with bigger packs) go in parts, each part
  the size of a pack.
* ``create``: a ``PutObject`` with ``If-None-Match: *`` (boto3 1.26 has no
  parameter for it: a ``before-sign`` hook adds the header); 412 ->
  ``ObjectExists``. **On a versioned bucket (every object-lock bucket) radosgw
  does not enforce the header**, so there ``create`` checks that the key has no
  version first, writes, then lists the key's versions: if an older version
  than ours exists another creator won, ours is deleted again (by version id)
  and ``ObjectExists`` raised. That narrows the race to two creators within
  one round trip; the repository uses ``create`` only for the ``config`` at
  ``init`` and must rely on nothing more there.
* ``get``: ``GetObject`` with a ``Range``; the body must have exactly the
  asked length: a shorter answer is damage (``StorageError``), a body cut by
  the connection is transient. ``delete`` HEADs first (S3's DELETE succeeds on
  a missing key) so a missing object is ``ObjectNotFound``. ``list`` pages
  with ``ListObjectsV2``; ``size``/``exists`` use ``HeadObject``.

Object Lock (immutable repositories, format 3; docs/format.md "Version 3"):

* ``enable_object_lock(period)``: from then on every ``put``/``create`` of a
  name outside ``MUTABLE_PREFIXES`` (``locks/``) carries
  ``ObjectLockMode=COMPLIANCE`` and ``RetainUntilDate = now + period``; a
  multipart object gets its retention by ``PutObjectRetention`` after
  ``CompleteMultipartUpload`` (radosgw 16 ignores the lock headers on
  ``CreateMultipartUpload``: measured). ``written`` keeps the date of each.
* Reads on a bucket with Object Lock: when the current version of a name is a
  delete marker, or a version without a COMPLIANCE retention (an overwrite),
  the oldest version carrying one is read instead (its id pinned for later
  range reads) and a warning naming the object is queued (``drain_warnings``);
  ``list`` of a retained kind lists versions, so a name hidden by a delete
  marker is still listed. ``locked_versions``/``pin_version`` let the
  repository try another locked version when a hash does not match.
* ``delete`` of a retained name on such a bucket deletes every version (the
  maintenance identity's right); a version still locked is refused by the
  server (``StorageReadOnly``). ``retained_until`` (the latest date over the
  versions), ``extend_retention``, ``put_locked`` (a given date, read back),
  ``clock_skew`` (the server's ``Date`` against this host) and
  ``check_object_lock`` serve the repository's lock rules.

Errors: NoSuchKey/404 -> ``ObjectNotFound``; AccessDenied/403 on a write ->
``StorageReadOnly``, on a read -> ``StorageError``, both naming the action and
"credentials/permissions"; QuotaExceeded -> ``StorageFull``; NoSuchBucket ->
``RepositoryNotFound``; 5xx, throttling, timeouts, resets, cut bodies ->
``TransientStorageError`` (retried by ``RetryingStorage``); anything else ->
``StorageError``. No boto exception escapes. botocore is imported
here and nowhere else in surety (an import-linter contract holds it).
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from surety.core.errors import (
    ObjectExists,
    ObjectNotFound,
    RepositoryNotFound,
    StorageError,
    StorageFull,
    StorageReadOnly,
    SuretyError,
    UsageError,
)
from surety.repo.storage.base import Storage, validate_name
from surety.repo.storage.retry import RetryingStorage, TransientStorageError

__all__ = [
    "MAINTENANCE_NEEDED",
    "MULTIPART_THRESHOLD",
    "MUTABLE_PREFIXES",
    "PART_SIZE",
    "S3Storage",
    "apply_bucket_policy",
    "bucket_policy",
    "maintenance_configured",
    "make_s3_client",
    "open_s3_storage",
    "parse_s3_location",
    "s3_storage_from_spec",
]

PART_SIZE = 16 * 1024 * 1024
MULTIPART_THRESHOLD = 32 * 1024 * 1024
BOTOCORE_ATTEMPTS = 3  # botocore's own retries per request (standard mode)

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
_BAD_CREDENTIALS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})
_FULL = frozenset({"QuotaExceeded", "EntityTooLarge"})
_TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",  # AWS: a concurrent conditional write; retry
    }
)
_SLACK = timedelta(seconds=1)  # RetainUntilDate as the server stores it (sub-second rounding)
_WRITES = frozenset({"put", "create", "delete", "extend retention"})
MUTABLE_PREFIXES = ("locks/",)  # short-lived objects: never retained, deletable by the backup host
COMPLIANCE = "COMPLIANCE"


def parse_s3_location(location: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without surrounding slashes)."""
    rest = location.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket or "//" in prefix:
        raise UsageError(f"{location}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    return bucket, prefix


def make_s3_client(
    environ: Mapping[str, str] | None = None,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    ca_bundle: str | None = None,
    maintenance: bool = False,
) -> Any:
    """An S3 client configured by the usual AWS conventions, never probing cloud metadata.

    Credentials and region: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE`` and ``~/.aws/{credentials,config}``; endpoint:
    ``AWS_ENDPOINT_URL`` (boto3 1.26 does not read it itself; path-style
    addressing there); custom CA: ``AWS_CA_BUNDLE``. ``endpoint``, ``region``
    and ``ca_bundle`` given here win over the environment (a process that
    reopens a repository another one opened: the export document). Missing
    credentials are a ``UsageError`` here, before any request.

    ``maintenance``: the maintenance identity (``forget``/``prune`` of an
    immutable repository): ``SURETY_S3_MAINT_ACCESS_KEY_ID`` +
    ``SURETY_S3_MAINT_SECRET_ACCESS_KEY``, else the profile
    ``SURETY_S3_MAINT_PROFILE``; neither set is a ``UsageError``.
    """
    env = os.environ if environ is None else environ
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # region or credentials: never 169.254.169.254
    try:
        core = botocore.session.get_session()
        core.get_component("credential_provider").remove("iam-role")
        session = _session(core, env, maintenance)
        credentials = session.get_credentials()
    except ProfileNotFound as exc:
        raise UsageError(f"S3: {exc}") from exc
    except (PartialCredentialsError, BotoCoreError) as exc:
        raise UsageError(f"S3 credentials: {exc}") from exc
    if credentials is None:
        raise UsageError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE / a profile in ~/.aws/credentials"
        )
    endpoint = endpoint or env.get("AWS_ENDPOINT_URL") or None
    config = Config(
        retries={"mode": "standard", "max_attempts": BOTOCORE_ATTEMPTS},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
        s3={"addressing_style": "path"} if endpoint else {},
    )
    region = region or session.get_config_variable("region") or "us-east-1"
    verify = ca_bundle or None  # None: botocore's own choice (AWS_CA_BUNDLE, the config file)
    try:
        return session.create_client(
            "s3", endpoint_url=endpoint, region_name=region, config=config, verify=verify
        )
    except (BotoCoreError, ValueError) as exc:
        raise UsageError(f"S3 client: {exc}") from exc


def maintenance_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was given the maintenance identity (see ``make_s3_client``)."""
    env = os.environ if environ is None else environ
    keys = env.get("SURETY_S3_MAINT_ACCESS_KEY_ID") and env.get("SURETY_S3_MAINT_SECRET_ACCESS_KEY")
    return bool(keys or env.get("SURETY_S3_MAINT_PROFILE"))


def _session(core: Any, env: Mapping[str, str], maintenance: bool) -> Any:
    """The botocore session with the identity asked for (boto3's ``Session`` is not
    needed: it adds resources and transfer helpers surety does not use, and 50 ms of
    imports to every command on S3)."""
    if not maintenance:
        return core
    key, secret = (
        env.get("SURETY_S3_MAINT_ACCESS_KEY_ID"),
        env.get("SURETY_S3_MAINT_SECRET_ACCESS_KEY"),
    )
    if key and secret:
        core.set_credentials(key, secret)
        return core
    profile = env.get("SURETY_S3_MAINT_PROFILE")
    if profile:
        core.set_config_variable("profile", profile)
        return core
    raise UsageError(MAINTENANCE_NEEDED)


MAINTENANCE_NEEDED = (
    "this needs the maintenance identity: set SURETY_S3_MAINT_ACCESS_KEY_ID and "
    "SURETY_S3_MAINT_SECRET_ACCESS_KEY (or SURETY_S3_MAINT_PROFILE) on the maintenance host"
)


def open_s3_storage(
    location: str,
    *,
    create: bool = False,
    endpoint: str | None = None,
    region: str | None = None,
    ca_bundle: str | None = None,
    maintenance: bool = False,
) -> Storage:
    """The one place that composes an S3 repository's storage: ``RetryingStorage(S3Storage)``.

    The CLI's wiring (``app.repository``) and a reopened export document
    (``s3_storage_from_spec``) both come here, so retries and client settings
    are the same for every process that reads a repository. ``create``: the
    bucket must exist (``RepositoryNotFound`` otherwise). ``maintenance``: use
    the maintenance identity (``make_s3_client``).
    """
    bucket, prefix = parse_s3_location(location)
    ca_bundle = ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
    if ca_bundle:  # absolute: a detached server runs in /
        ca_bundle = os.path.abspath(os.path.expanduser(ca_bundle))
    client = make_s3_client(
        endpoint=endpoint, region=region, ca_bundle=ca_bundle, maintenance=maintenance
    )
    storage = S3Storage(bucket, prefix, client, ca_bundle=ca_bundle)
    storage.maintenance = maintenance
    if create:
        storage.check_bucket()
    return RetryingStorage(storage)


def s3_storage_from_spec(spec: Mapping[str, str | None]) -> Storage:
    """The storage ``S3Storage.spec()`` describes (credentials: this process's environment)."""
    bucket, prefix = spec.get("bucket"), spec.get("prefix") or ""
    if not bucket:
        raise UsageError("an S3 storage spec without a bucket")
    return open_s3_storage(
        f"s3://{bucket}/{prefix}",
        endpoint=spec.get("endpoint") or None,
        region=spec.get("region") or None,
        ca_bundle=spec.get("ca_bundle") or None,
    )


def _principal(name: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:iam:::user/{name}"


def bucket_policy(
    bucket: str, prefix: str, backup_principal: str, maintenance_principal: str
) -> dict[str, Any]:
    """The bucket policy of an immutable repository at ``s3://bucket/prefix``.

    For a bucket the maintenance identity owns (it alone may change the policy):
    ``backup_principal`` (an ARN, or a radosgw user name: ``arn:aws:iam:::user/NAME``)
    may read, list, write, upload in parts and extend retentions under the
    prefix, and delete only under ``PREFIX/locks/``; an explicit Deny keeps it
    from deleting any object or version anywhere else. ``maintenance_principal``
    (the bucket's owner) gets every right on the prefix: objects the backup
    identity wrote are that identity's, and S3 grants a bucket owner nothing on
    them without this. Measured on radosgw 16 (docs/s3-server.md); the same
    statements are standard AWS IAM syntax.
    """
    root = f"{prefix}/" if prefix else ""
    who = {"AWS": [_principal(backup_principal)]}
    mutable = [f"arn:aws:s3:::{bucket}/{root}{kind}*" for kind in MUTABLE_PREFIXES]
    statements = [
        {
            "Sid": "surety-backup-read-write",
            "Effect": "Allow",
            "Principal": who,
            "Action": [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:GetObjectRetention",
                "s3:PutObject",
                "s3:PutObjectRetention",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": [f"arn:aws:s3:::{bucket}/{root}*"],
        },
        {
            "Sid": "surety-backup-list",
            "Effect": "Allow",
            "Principal": who,
            "Action": [
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:ListBucketMultipartUploads",
                "s3:GetBucketVersioning",
                "s3:GetBucketObjectLockConfiguration",
            ],
            "Resource": [f"arn:aws:s3:::{bucket}"],
        },
        {
            "Sid": "surety-backup-delete-short-lived",
            "Effect": "Allow",
            "Principal": who,
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": mutable,
        },
        {
            "Sid": "surety-backup-never-deletes-data",
            "Effect": "Deny",
            "Principal": who,
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "NotResource": mutable,
        },
        {
            "Sid": "surety-maintenance-everything",
            "Effect": "Allow",
            "Principal": {"AWS": [_principal(maintenance_principal)]},
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{root}*"],
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def apply_bucket_policy(location: str, policy: Mapping[str, Any]) -> None:
    """Set ``policy`` on the location's bucket with the maintenance identity (its owner)."""
    import json  # noqa: PLC0415

    bucket, _prefix = parse_s3_location(location)
    client = make_s3_client(maintenance=True)
    storage = S3Storage(bucket, "", client)
    try:
        client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    except Exception as exc:
        raise storage._error("put the bucket policy of", bucket, exc) from exc


def _content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


class S3Storage:
    """Objects of a repository under ``prefix`` in ``bucket``; ``client`` is a boto3 S3 client."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: Any,
        *,
        part_size: int = PART_SIZE,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        versioned: bool | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        self.bucket, self.prefix, self.client = bucket, prefix.strip("/"), client
        self.ca_bundle = ca_bundle  # the client's custom CA, for ``spec``
        self.part_size, self.multipart_threshold = part_size, multipart_threshold
        self._versioned = versioned
        self._conditional = threading.local()
        self.maintenance = False  # opened with the maintenance identity
        self.lock_period: timedelta | None = None  # set: every retained write is locked
        self.expect_locks: bool | None = None  # False: a repository without locks here
        self.written: dict[str, datetime] = {}  # name -> retain-until, written by this process
        self._lock_enabled: bool | None = None
        self._pinned: dict[str, str] = {}  # key -> the locked version id read instead
        self._warnings: list[str] = []
        self._guard = threading.Lock()
        client.meta.events.register("before-sign.s3.PutObject", self._add_if_none_match)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def spec(self) -> dict[str, str | None]:
        """Where this storage is, for another process to reopen it: bucket, prefix,
        endpoint, region and CA bundle - never credentials (``s3_storage_from_spec``)."""
        meta = self.client.meta
        endpoint = getattr(meta, "endpoint_url", None)
        return {
            "kind": "s3",
            "bucket": self.bucket,
            "prefix": self.prefix,
            "endpoint": str(endpoint) if endpoint else None,
            "region": getattr(meta, "region_name", None),
            "ca_bundle": self.ca_bundle,
        }

    def _key(self, name: str) -> str:
        validate_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _add_if_none_match(self, request: Any, **_: Any) -> None:
        if getattr(self._conditional, "active", False):
            request.headers["If-None-Match"] = "*"

    def check_bucket(self) -> None:
        """``RepositoryNotFound`` if the bucket does not exist (``init`` calls it first)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("NoSuchBucket", "404"):
                raise self._no_bucket() from exc
            raise self._error("open bucket", self.bucket, exc) from exc
        except Exception as exc:
            raise self._error("open bucket", self.bucket, exc) from exc

    def _no_bucket(self) -> RepositoryNotFound:
        return RepositoryNotFound(
            f"{self.describe()}: the bucket {self.bucket} does not exist "
            "(surety does not create buckets: make one, e.g. `aws s3 mb s3://BUCKET`)"
        )

    # -- writes ---------------------------------------------------------------
    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        key, body = self._key(name), _as_bytes(data)
        lock = self._lock_arguments(name)
        try:
            if len(body) > self.multipart_threshold:
                self._put_multipart(key, body)
                if lock:  # radosgw ignores lock headers on CreateMultipartUpload
                    self._set_retention(key, lock["ObjectLockRetainUntilDate"])
            else:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentMD5=_content_md5(body), **lock
                )
        except Exception as exc:
            raise self._error("put", name, exc) from exc
        self._wrote(name, lock)

    def _lock_arguments(self, name: str, until: datetime | None = None) -> dict[str, Any]:
        if self.lock_period is None or name.startswith(MUTABLE_PREFIXES):
            return {}
        until = until or datetime.now(UTC) + self.lock_period
        return {"ObjectLockMode": COMPLIANCE, "ObjectLockRetainUntilDate": until}

    def _wrote(self, name: str, lock: dict[str, Any]) -> None:
        if lock:
            with self._guard:
                self.written[name] = lock["ObjectLockRetainUntilDate"]
                self._pinned.pop(self._key(name), None)

    def _set_retention(self, key: str, until: datetime, version: str | None = None) -> None:
        extra = {"VersionId": version} if version else {}
        self.client.put_object_retention(
            Bucket=self.bucket,
            Key=key,
            Retention={"Mode": COMPLIANCE, "RetainUntilDate": until},
            **extra,
        )

    def _put_multipart(self, key: str, body: bytes) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(body), self.part_size), start=1):
                part = body[start : start + self.part_size]
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=number,
                    Body=part,
                    ContentMD5=_content_md5(part),
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with suppress(Exception):  # best effort; clean_temporary aborts what is left
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        key, body = self._key(name), _as_bytes(data)
        try:
            if self._is_versioned():
                lock = self._lock_arguments(name)
                self._create_versioned(name, key, body, lock)
                self._wrote(name, lock)
                return
            self._conditional.active = True
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentMD5=_content_md5(body)
                )
            finally:
                self._conditional.active = False
        except SuretyError:
            raise
        except Exception as exc:
            raise self._error("create", name, exc) from exc

    def _create_versioned(self, name: str, key: str, body: bytes, lock: dict[str, Any]) -> None:
        if self._versions(key):
            raise ObjectExists(f"{name}: already exists")
        ours = self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentMD5=_content_md5(body), **lock
        ).get("VersionId")
        versions = self._versions(key)
        first = min(versions, key=lambda v: (v["LastModified"], v["VersionId"]))
        if ours is None or first["VersionId"] == ours:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=ours)
        except ClientError as exc:
            raise StorageError(
                f"{name}: another writer created it at the same time and our version "
                f"{ours} cannot be removed ({exc}); remove it before using the repository"
            ) from exc
        raise ObjectExists(f"{name}: already exists (created concurrently)")

    def _versions(self, key: str) -> list[dict[str, Any]]:
        answer = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
        found = [*answer.get("Versions", []), *answer.get("DeleteMarkers", [])]
        return [v for v in found if v["Key"] == key]

    def _is_versioned(self) -> bool:
        """Whether the bucket keeps versions (unknown -> assume so: the careful path)."""
        if self._versioned is None:
            try:
                answer = self.client.get_bucket_versioning(Bucket=self.bucket)
                self._versioned = answer.get("Status") in ("Enabled", "Suspended")
            except ClientError as exc:
                if _code(exc) == "NoSuchBucket":
                    raise
                self._versioned = True
        return self._versioned

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            if self._retained(name):
                self._delete_versions(name, key)
                return
            self.client.head_object(Bucket=self.bucket, Key=key)
            if name.startswith(MUTABLE_PREFIXES) and self._is_versioned():
                self._delete_short_lived(name, key)
                return
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error("delete", name, exc) from exc

    def _delete_short_lived(self, name: str, key: str) -> None:
        """A lock in a versioned bucket: every version (each refresh wrote one), so they do not
        pile up under delete markers. A bucket policy from before surety asked for
        ``DeleteObjectVersion`` there refuses that: a delete marker then, as before."""
        try:
            self._delete_versions(name, key)
        except ClientError as exc:
            if _code(exc) != "AccessDenied":
                raise
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def _delete_versions(self, name: str, key: str) -> None:
        """Every version and delete marker of ``key``, newest first (a locked one: refused)."""
        versions = self._versions(key)
        if not versions:
            raise ObjectNotFound(f"{name}: no such object")
        for version in sorted(versions, key=lambda v: v["LastModified"], reverse=True):
            self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version["VersionId"])
        self._pinned.pop(key, None)

    # -- reads ----------------------------------------------------------------
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if offset < 0 or (length is not None and length < 0):
            raise StorageError(f"{name}: invalid range {offset}+{length}")
        try:
            if length == 0 or (length is None and offset > 0):
                return self._get_from_size(name, key, offset, length)
            arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if length is not None:
                arguments["Range"] = f"bytes={offset}-{offset + length - 1}"
            data = self._get_checked(name, key, arguments)
        except SuretyError:
            raise
        except Exception as exc:
            raise self._error("get", name, exc) from exc
        if length is not None and len(data) != length:
            raise StorageError(
                f"{name}: range {offset}+{length} returned {len(data)} bytes "
                "(beyond the end of the object, or damaged)"
            )
        return bytes(data)

    def _get_checked(self, name: str, key: str, arguments: dict[str, Any]) -> bytes:
        """The current version's bytes, or the locked version's when the current one is not it."""
        if not self._retained(name):
            return self._read_body(arguments)[0]
        if key in self._pinned:
            return self._read_body({**arguments, "VersionId": self._pinned[key]})[0]
        try:
            data, answer = self._read_body(arguments)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND or _status(exc) == 404:
                why = "its current version is a delete marker"
            elif _code(exc) == "InvalidRange" or _status(exc) == 416:
                why = "its current version was replaced by a shorter one"
            else:
                raise
            if self._pin_locked(name, key, why) is None:
                raise
            return self._read_body({**arguments, "VersionId": self._pinned[key]})[0]
        if answer.get("ObjectLockMode") == COMPLIANCE or self.expect_locks is False:
            return data
        why = "its current version was replaced by one without a lock"
        if self._pin_locked(name, key, why) is None:
            return data
        return self._read_body({**arguments, "VersionId": self._pinned[key]})[0]

    def _read_body(self, arguments: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        answer = self.client.get_object(**arguments)
        body = answer["Body"]
        try:  # not `with`: StreamingBody.__enter__ gives the raw stream, unchecked
            data = body.read()  # checks the body against its Content-Length
        finally:
            body.close()
        return bytes(data), answer

    def _pin_locked(self, name: str, key: str, why: str) -> str | None:
        """Pin the oldest COMPLIANCE-locked version of ``key`` for reads; warn. None: none."""
        locked = self._locked_version_ids(key)
        if not locked:
            return None
        with self._guard:
            self._pinned[key] = locked[0]
            self._warnings.append(f"{name}: {why}; read its locked version {locked[0]} instead")
        return locked[0]

    def _locked_version_ids(self, key: str) -> list[str]:
        """Ids of the versions of ``key`` under a COMPLIANCE retention, oldest first."""
        versions = [v for v in self._versions(key) if "Size" in v]  # not delete markers
        found = []
        for version in sorted(versions, key=lambda v: v["LastModified"]):
            head = self.client.head_object(
                Bucket=self.bucket, Key=key, VersionId=version["VersionId"]
            )
            if head.get("ObjectLockMode") == COMPLIANCE:
                found.append(str(version["VersionId"]))
        return found

    def _get_from_size(self, name: str, key: str, offset: int, length: int | None) -> bytes:
        size = self._head_size(name, key)
        end = size if length is None else offset + length
        if end > size or offset > size:
            raise StorageError(f"{name}: range {offset}+{length} beyond size {size}")
        if end == offset:
            return b""
        return self.get(name, offset, end - offset)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        root = f"{self.prefix}/" if self.prefix else ""
        if prefix and self._retained(prefix):
            yield from self._list_versions(root, prefix)
            return
        pages = self.client.get_paginator("list_objects_v2")
        try:
            for page in pages.paginate(Bucket=self.bucket, Prefix=root + prefix):
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(root) :]
                    try:
                        validate_name(name)
                    except UsageError:
                        continue  # not ours (a "folder" marker, a foreign key)
                    yield name, int(item["Size"])
        except Exception as exc:
            raise self._error("list", prefix or "/", exc) from exc

    def _list_versions(self, root: str, prefix: str) -> Iterator[tuple[str, int]]:
        """Names with a stored version (also those a delete marker hides).

        A name whose versions all hold the same bytes (one version, or the same
        content-addressed object written again) is listed with its size as is.
        Otherwise - a delete marker, or versions with different ETags (an
        overwrite, locked or not) - the oldest locked version is pinned for reads
        (the first write of a name is the repository's), and its size listed.
        """
        versions: dict[str, list[dict[str, Any]]] = {}
        hidden: set[str] = set()
        pages = self.client.get_paginator("list_object_versions")
        try:
            for page in pages.paginate(Bucket=self.bucket, Prefix=root + prefix):
                for item in page.get("Versions", []):
                    versions.setdefault(item["Key"], []).append(item)
                for item in page.get("DeleteMarkers", []):
                    if item.get("IsLatest"):
                        hidden.add(item["Key"])
            for key, found in versions.items():
                name = key[len(root) :]
                try:
                    validate_name(name)
                except UsageError:
                    continue
                yield name, self._listed_size(name, key, found, key in hidden)
        except SuretyError:
            raise
        except Exception as exc:
            raise self._error("list", prefix, exc) from exc

    def _listed_size(
        self, name: str, key: str, found: builtins.list[dict[str, Any]], hidden: bool
    ) -> int:
        if len({v.get("ETag") for v in found}) == 1 and not hidden:
            return int(found[0]["Size"])
        if not hidden and key not in self._pinned:
            self._pin_locked(name, key, f"it has {len(found)} versions with different bytes")
        return self._head_size(name, key)

    def size(self, name: str) -> int:
        key = self._key(name)
        try:
            return self._head_size(name, key)
        except Exception as exc:
            raise self._error("size", name, exc) from exc

    def _head_size(self, name: str, key: str) -> int:
        if key in self._pinned:
            version = {"VersionId": self._pinned[key]}
            return int(
                self.client.head_object(Bucket=self.bucket, Key=key, **version)["ContentLength"]
            )
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            missing = _code(exc) in _NOT_FOUND or _status(exc) == 404
            if not (missing and self._retained(name)):
                raise
            if self._pin_locked(name, key, "its current version is a delete marker") is None:
                raise
            return self._head_size(name, key)
        locked = answer.get("ObjectLockMode") == COMPLIANCE or self.expect_locks is False
        if not self._retained(name) or locked:
            return int(answer["ContentLength"])
        why = "its current version was replaced by one without a lock"
        if self._pin_locked(name, key, why) is None:
            return int(answer["ContentLength"])
        return self._head_size(name, key)

    def exists(self, name: str) -> bool:
        try:
            self.size(name)
        except ObjectNotFound:
            return False
        return True

    def clean_temporary(self, older_than: float) -> int:
        """Abort multipart uploads under the prefix begun more than ``older_than`` s ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        root = f"{self.prefix}/" if self.prefix else ""
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=root):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        except Exception as exc:
            raise self._error("clean", "multipart uploads", exc) from exc
        return aborted

    # -- object lock (immutable repositories) ---------------------------------
    def _retained(self, name: str) -> bool:
        """Whether ``name`` lives under the bucket's object lock rules (reads, deletes)."""
        if name.startswith(MUTABLE_PREFIXES):
            return False
        return self.lock_period is not None or self.expect_locks is True

    def detect_object_lock(self) -> None:
        """Before a repository is opened: expect locked versions if the bucket has Object Lock
        (one request; until then, and for a bare ``S3Storage``, reads take current versions)."""
        if self.expect_locks is None:
            self.expect_locks = self.object_lock_enabled()

    def object_lock_enabled(self) -> bool:
        """Whether the bucket was created with Object Lock (asked once)."""
        if self._lock_enabled is None:
            try:
                answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
                config = answer.get("ObjectLockConfiguration", {})
                self._lock_enabled = config.get("ObjectLockEnabled") == "Enabled"
            except ClientError as exc:
                if _code(exc) == "NoSuchBucket":
                    raise self._no_bucket() from exc
                self._lock_enabled = False  # ObjectLockConfigurationNotFoundError, or not allowed
        return self._lock_enabled

    def check_object_lock(self) -> None:
        """``UsageError`` unless the bucket has Object Lock (``init --immutable-days``)."""
        try:
            enabled = self.object_lock_enabled()
        except SuretyError:
            raise
        except Exception as exc:
            raise self._error("read the object lock configuration of", self.bucket, exc) from exc
        if not enabled:
            raise UsageError(
                f"{self.describe()}: the bucket {self.bucket} has no Object Lock: immutable "
                "restore points need a bucket created with it (e.g. `aws s3api create-bucket "
                "--object-lock-enabled-for-bucket`); it cannot be turned on later"
            )

    def enable_object_lock(self, period: timedelta) -> None:
        """Lock every retained write for ``period`` from the moment it is written."""
        self.lock_period, self.expect_locks = period, True

    def disable_object_lock(self) -> None:
        """This repository has no locks (formats 1-2): read current versions only."""
        self.lock_period, self.expect_locks = None, False

    def clock_skew(self) -> float:
        """Seconds this host's clock is ahead of the server's (its ``Date`` header)."""
        try:
            answer = self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._error("open bucket", self.bucket, exc) from exc
        date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            raise StorageError(f"{self.describe()}: the server sent no Date header")
        server = parsedate_to_datetime(str(date))
        return (datetime.now(UTC) - server).total_seconds()

    def retained_until(self, name: str) -> datetime | None:
        """The latest COMPLIANCE retain-until date over ``name``'s versions (None: unlocked)."""
        key = self._key(name)
        try:
            latest = None
            for version in self._versions(key):
                if "Size" not in version:
                    continue
                head = self.client.head_object(
                    Bucket=self.bucket, Key=key, VersionId=version["VersionId"]
                )
                until = head.get("ObjectLockRetainUntilDate")
                if head.get("ObjectLockMode") == COMPLIANCE and until is not None:
                    latest = until if latest is None else max(latest, until)
        except Exception as exc:
            raise self._error("read the retention of", name, exc) from exc
        return latest.astimezone(UTC) if latest is not None else None

    def extend_retention(self, name: str, until: datetime) -> None:
        """Lock ``name``'s locked version(s) until at least ``until`` (never shortens)."""
        key = self._key(name)
        try:
            versions = [self._pinned[key]] if key in self._pinned else [None]
            for version in versions:
                try:
                    self._set_retention(key, until, version)
                except ClientError as exc:
                    if _code(exc) not in _DENIED or "shortens" not in str(exc):
                        raise
                    # already locked longer: COMPLIANCE only lengthens
        except Exception as exc:
            raise self._error("extend retention", name, exc) from exc

    def put_locked(self, name: str, data: bytes, until: datetime) -> None:
        """``put`` locked until ``until``, then read the lock back: a server that kept a
        shorter retention (or none) is an error here, not a surprise at prune time."""
        key, lock = self._key(name), self._lock_arguments(name, until)
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentMD5=_content_md5(data), **lock
            )
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error("put", name, exc) from exc
        self._wrote(name, lock)
        kept = head.get("ObjectLockRetainUntilDate")
        if head.get("ObjectLockMode") != COMPLIANCE or kept is None or kept < until - _SLACK:
            raise StorageError(
                f"{self.describe()}: {name}: the server kept retention "
                f"{head.get('ObjectLockMode') or 'none'} until {kept or '-'}, shorter than "
                f"asked ({until.isoformat(timespec='seconds')}): the bucket does not honour "
                "Object Lock as surety needs"
            )

    def locked_versions(self, name: str) -> builtins.list[str]:
        """Ids of ``name``'s COMPLIANCE-locked versions, oldest first."""
        try:
            return self._locked_version_ids(self._key(name))
        except Exception as exc:
            raise self._error("list versions of", name, exc) from exc

    def pin_version(self, name: str, version: str, why: str) -> None:
        """Read ``version`` of ``name`` from now on, and say so (``drain_warnings``)."""
        with self._guard:
            self._pinned[self._key(name)] = version
            self._warnings.append(f"{name}: {why}; read its locked version {version} instead")

    def pinned_version(self, name: str) -> str | None:
        return self._pinned.get(self._key(name))

    def drain_warnings(self) -> builtins.list[str]:
        """The warnings queued since the last call (which locked version was read and why)."""
        with self._guard:
            found, self._warnings = self._warnings, []
        return found

    # -- errors ---------------------------------------------------------------
    def _error(self, action: str, name: str, exc: BaseException) -> SuretyError:
        """The surety error for a failure of ``action`` on ``name``."""
        if isinstance(exc, SuretyError):
            return exc
        where = f"{self.describe()}: {action} {name}"
        if isinstance(exc, ClientError):
            return self._client_error(action, name, where, exc)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return UsageError(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE / a profile in ~/.aws/credentials"
            )
        if isinstance(exc, ConnectionError | HTTPClientError | IncompleteReadError | OSError):
            return TransientStorageError(f"{where}: transient: {exc}")
        return StorageError(f"{where}: {exc}")

    def _client_error(  # noqa: PLR0911 -- one return per row of the error mapping
        self, action: str, name: str, where: str, exc: ClientError
    ) -> SuretyError:
        code, status = _code(exc), _status(exc)
        if code == "NoSuchBucket":
            return self._no_bucket()
        if code in _NOT_FOUND or status == 404:
            return ObjectNotFound(f"{name}: no such object")
        if code == "PreconditionFailed" or status == 412:
            return ObjectExists(f"{name}: already exists")
        if code in _FULL:
            return StorageFull(f"{where}: the bucket's quota is exceeded ({code})")
        if code == "RequestTimeTooSkewed":
            return StorageError(f"{where}: this host's clock differs too much from the server's")
        if code in _BAD_CREDENTIALS:
            return StorageError(f"{where}: the S3 credentials were refused ({code})")
        if code in _DENIED or status == 403:
            problem = StorageReadOnly if action in _WRITES else StorageError
            return problem(f"{where}: access denied: check the credentials/permissions ({code})")
        if code in _TRANSIENT or status >= 500 or status == 429:
            return TransientStorageError(f"{where}: transient: {code or status}")
        return StorageError(f"{where}: {code or status}: {exc}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
