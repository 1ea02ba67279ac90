"""S3 storage: repository objects in an S3-compatible bucket, through boto3.

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

Errors: NoSuchKey/404 -> ``ObjectNotFound``; AccessDenied/403 on a write ->
``StorageReadOnly``, on a read -> ``StorageError``, both naming the action and
"credentials/permissions"; QuotaExceeded -> ``StorageFull``; NoSuchBucket ->
``RepositoryNotFound``; 5xx, throttling, timeouts, resets, cut bodies ->
``TransientStorageError`` (retried by ``RetryingStorage``); anything else ->
``StorageError``. No boto exception escapes. boto3 and botocore are imported
here and nowhere else in surety (an import-linter contract holds it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
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
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "S3Storage",
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
_WRITES = frozenset({"put", "create", "delete"})


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
) -> Any:
    """An S3 client configured by the usual AWS conventions, never probing cloud metadata.

    Credentials and region: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE`` and ``~/.aws/{credentials,config}``; endpoint:
    ``AWS_ENDPOINT_URL`` (boto3 1.26 does not read it itself; path-style
    addressing there); custom CA: ``AWS_CA_BUNDLE``. ``endpoint``, ``region``
    and ``ca_bundle`` given here win over the environment (a process that
    reopens a repository another one opened: the export document). Missing
    credentials are a ``UsageError`` here, before any request.
    """
    env = os.environ if environ is None else environ
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # region or credentials: never 169.254.169.254
    try:
        core = botocore.session.get_session()
        core.get_component("credential_provider").remove("iam-role")
        session = boto3.session.Session(botocore_session=core)
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
    region = region or session.region_name or "us-east-1"
    verify = ca_bundle or None  # None: botocore's own choice (AWS_CA_BUNDLE, the config file)
    try:
        return session.client(
            "s3", endpoint_url=endpoint, region_name=region, config=config, verify=verify
        )
    except (BotoCoreError, ValueError) as exc:
        raise UsageError(f"S3 client: {exc}") from exc


def open_s3_storage(
    location: str,
    *,
    create: bool = False,
    endpoint: str | None = None,
    region: str | None = None,
    ca_bundle: str | None = None,
) -> Storage:
    """The one place that composes an S3 repository's storage: ``RetryingStorage(S3Storage)``.

    The CLI's wiring (``app.repository``) and a reopened export document
    (``s3_storage_from_spec``) both come here, so retries and client settings
    are the same for every process that reads a repository. ``create``: the
    bucket must exist (``RepositoryNotFound`` otherwise).
    """
    bucket, prefix = parse_s3_location(location)
    ca_bundle = ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
    if ca_bundle:  # absolute: a detached server runs in /
        ca_bundle = os.path.abspath(os.path.expanduser(ca_bundle))
    client = make_s3_client(endpoint=endpoint, region=region, ca_bundle=ca_bundle)
    storage = S3Storage(bucket, prefix, client, ca_bundle=ca_bundle)
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
        try:
            if len(body) > self.multipart_threshold:
                self._put_multipart(key, body)
            else:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentMD5=_content_md5(body)
                )
        except Exception as exc:
            raise self._error("put", name, exc) from exc

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
                self._create_versioned(name, key, body)
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

    def _create_versioned(self, name: str, key: str, body: bytes) -> None:
        if self._versions(key):
            raise ObjectExists(f"{name}: already exists")
        ours = self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentMD5=_content_md5(body)
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
            self.client.head_object(Bucket=self.bucket, Key=key)
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error("delete", name, exc) from exc

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
            body = self.client.get_object(**arguments)["Body"]
            try:  # not `with`: StreamingBody.__enter__ gives the raw stream, unchecked
                data = body.read()  # checks the body against its Content-Length
            finally:
                body.close()
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

    def _get_from_size(self, name: str, key: str, offset: int, length: int | None) -> bytes:
        size = int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        end = size if length is None else offset + length
        if end > size or offset > size:
            raise StorageError(f"{name}: range {offset}+{length} beyond size {size}")
        if end == offset:
            return b""
        return self.get(name, offset, end - offset)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        root = f"{self.prefix}/" if self.prefix else ""
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

    def size(self, name: str) -> int:
        key = self._key(name)
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except Exception as exc:
            raise self._error("size", name, exc) from exc

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
