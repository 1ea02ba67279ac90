"""S3Storage against a stubbed botocore: error mapping, ranges, conditional create, multipart.

Fast tests only: the same backend runs the conformance suite against a real
radosgw in tests/contract/test_storage_conformance_s3.py. Two fakes are used:
botocore's ``Stubber`` (answers per operation, checks the parameters sent) and
a ``before-send`` hook that answers the real HTTP request (to see its headers
and to cut a body short, which the Stubber cannot do).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from surety.core.errors import (
    ObjectExists,
    ObjectNotFound,
    RepositoryNotFound,
    StorageError,
    StorageFull,
    StorageReadOnly,
    UsageError,
)
from surety.repo.storage.retry import TransientStorageError
from surety.repo.storage.s3 import S3Storage, parse_s3_location


def _client() -> Any:
    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"mode": "standard", "max_attempts": 1}, s3={"addressing_style": "path"}
        ),
    )


@pytest.fixture
def client() -> Any:
    return _client()


@pytest.fixture
def stub(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _storage(client: Any, **options: Any) -> S3Storage:
    return S3Storage("bkt", "repo/a", client, versioned=False, **options)


def test_location_parsing() -> None:
    assert parse_s3_location("s3://bkt") == ("bkt", "")
    assert parse_s3_location("s3://bkt/") == ("bkt", "")
    assert parse_s3_location("s3://bkt/a/b/") == ("bkt", "a/b")
    with pytest.raises(UsageError):
        parse_s3_location("s3:///prefix")


def test_objects_live_under_the_prefix(client: Any, stub: Stubber) -> None:
    stub.add_response(
        "put_object",
        {},
        {"Bucket": "bkt", "Key": "repo/a/data/ab", "Body": b"x", "ContentMD5": ANY},
    )
    _storage(client).put("data/ab", b"x")
    assert _storage(client).describe() == "s3://bkt/repo/a"


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("NoSuchKey", 404, ObjectNotFound),
        ("NoSuchBucket", 404, RepositoryNotFound),
        ("QuotaExceeded", 403, StorageFull),
        ("SlowDown", 503, TransientStorageError),
        ("InternalError", 500, TransientStorageError),
        ("InvalidArgument", 400, StorageError),
    ],
)
def test_error_mapping_on_get(
    client: Any, stub: Stubber, code: str, status: int, error: type[Exception]
) -> None:
    stub.add_client_error("get_object", code, "msg", status)
    with pytest.raises(error) as caught:
        _storage(client).get("data/ab", 0, 4)
    assert type(caught.value) is error


def test_access_denied_names_action_and_permissions(client: Any, stub: Stubber) -> None:
    stub.add_client_error("put_object", "AccessDenied", "denied", 403)
    stub.add_client_error("get_object", "AccessDenied", "denied", 403)
    storage = _storage(client)
    with pytest.raises(
        StorageReadOnly, match=r"put data/ab: access denied.*credentials/permissions"
    ):
        storage.put("data/ab", b"x")
    with pytest.raises(StorageError, match=r"get data/ab: access denied") as caught:
        storage.get("data/ab", 0, 1)
    assert not isinstance(caught.value, StorageReadOnly)


def test_a_ranged_get_sends_the_range_and_checks_the_length(client: Any, stub: Stubber) -> None:
    params = {"Bucket": "bkt", "Key": "repo/a/data/ab", "Range": "bytes=10-13"}
    stub.add_response("get_object", {"Body": _body(b"abcd"), "ContentLength": 4}, params)
    stub.add_response("get_object", {"Body": _body(b"ab"), "ContentLength": 2}, params)
    storage = _storage(client)
    assert storage.get("data/ab", 10, 4) == b"abcd"
    with pytest.raises(StorageError, match="returned 2 bytes") as caught:
        storage.get("data/ab", 10, 4)  # a short answer: beyond the end, or damage
    assert not isinstance(caught.value, TransientStorageError)


def test_delete_of_a_missing_object_is_not_found(client: Any, stub: Stubber) -> None:
    stub.add_client_error("head_object", "404", "Not Found", 404)
    with pytest.raises(ObjectNotFound):
        _storage(client).delete("locks/x")


def test_list_pages_strips_the_prefix_and_skips_foreign_keys(client: Any, stub: Stubber) -> None:
    first = {
        "Contents": [{"Key": "repo/a/data/aa", "Size": 3}, {"Key": "repo/a/data/", "Size": 0}],
        "IsTruncated": True,
        "NextContinuationToken": "t",
    }
    second = {"Contents": [{"Key": "repo/a/data/bb", "Size": 5}], "IsTruncated": False}
    stub.add_response("list_objects_v2", first, {"Bucket": "bkt", "Prefix": "repo/a/data/"})
    stub.add_response(
        "list_objects_v2",
        second,
        {"Bucket": "bkt", "Prefix": "repo/a/data/", "ContinuationToken": "t"},
    )
    assert dict(_storage(client).list("data/")) == {"data/aa": 3, "data/bb": 5}


def test_large_objects_upload_as_multipart(client: Any, stub: Stubber) -> None:
    key = {"Bucket": "bkt", "Key": "repo/a/data/big"}
    stub.add_response("create_multipart_upload", {"UploadId": "u1"}, key)
    for number, part in enumerate([b"abcd", b"efgh", b"ij"], start=1):
        stub.add_response(
            "upload_part",
            {"ETag": f'"e{number}"'},
            {**key, "UploadId": "u1", "PartNumber": number, "Body": part, "ContentMD5": ANY},
        )
    parts = [{"ETag": f'"e{n}"', "PartNumber": n} for n in (1, 2, 3)]
    stub.add_response(
        "complete_multipart_upload",
        {},
        {**key, "UploadId": "u1", "MultipartUpload": {"Parts": parts}},
    )
    _storage(client, part_size=4, multipart_threshold=5).put("data/big", b"abcdefghij")


def test_a_failed_multipart_upload_is_aborted(client: Any, stub: Stubber) -> None:
    stub.add_response("create_multipart_upload", {"UploadId": "u1"})
    stub.add_client_error("upload_part", "InternalError", "boom", 500)
    stub.add_response(
        "abort_multipart_upload", {}, {"Bucket": "bkt", "Key": "repo/a/data/big", "UploadId": "u1"}
    )
    with pytest.raises(TransientStorageError):
        _storage(client, part_size=4, multipart_threshold=5).put("data/big", b"abcdefghij")


def test_clean_temporary_aborts_only_old_uploads(client: Any, stub: Stubber) -> None:
    now = datetime.now(UTC)
    uploads = [
        {"Key": "repo/a/data/old", "UploadId": "old", "Initiated": now - timedelta(hours=2)},
        {"Key": "repo/a/data/new", "UploadId": "new", "Initiated": now},
    ]
    stub.add_response(
        "list_multipart_uploads", {"Uploads": uploads}, {"Bucket": "bkt", "Prefix": "repo/a/"}
    )
    stub.add_response(
        "abort_multipart_upload", {}, {"Bucket": "bkt", "Key": "repo/a/data/old", "UploadId": "old"}
    )
    assert _storage(client).clean_temporary(older_than=3600) == 1


# -- answers to the real HTTP request (headers, bodies cut short) ---------------------------


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def _answer(client: Any, respond: Callable[[Any], tuple[int, dict[str, str], bytes]]) -> list[Any]:
    seen: list[Any] = []

    def before_send(request: Any, **_: Any) -> AWSResponse:
        seen.append(request)
        status, headers, body = respond(request)
        return AWSResponse(request.url, status, headers, _Raw(body))

    client.meta.events.register("before-send.s3", before_send)
    return seen


_PRECONDITION = b"<Error><Code>PreconditionFailed</Code><Message>no</Message></Error>"


def test_create_sends_if_none_match_and_maps_412(client: Any) -> None:
    answers = iter([(200, {}, b""), (412, {}, _PRECONDITION)])
    seen = _answer(client, lambda _request: next(answers))
    storage = _storage(client)
    storage.create("config", b"first")
    with pytest.raises(ObjectExists):
        storage.create("config", b"second")
    assert [r.headers.get("If-None-Match") for r in seen] == [b"*", b"*"]


def test_put_never_sends_if_none_match(client: Any) -> None:
    seen = _answer(client, lambda _request: (200, {}, b""))
    _storage(client).put("config", b"x")
    assert "If-None-Match" not in seen[0].headers


def test_a_body_cut_short_is_transient_not_damage(client: Any) -> None:
    _answer(client, lambda _request: (206, {"content-length": "8"}, b"abcd"))
    with pytest.raises(TransientStorageError, match="transient"):
        _storage(client).get("data/ab", 0, 8)


def test_a_create_on_a_versioned_bucket_checks_the_versions(client: Any, stub: Stubber) -> None:
    when = datetime.now(UTC)
    key = "repo/a/config"
    versions = {"Bucket": "bkt", "Prefix": key}
    stub.add_response("list_object_versions", {}, versions)
    stub.add_response("put_object", {"VersionId": "mine"})
    theirs = {"Key": key, "VersionId": "theirs", "LastModified": when - timedelta(seconds=1)}
    mine = {"Key": key, "VersionId": "mine", "LastModified": when}
    stub.add_response("list_object_versions", {"Versions": [mine, theirs]}, versions)
    stub.add_response("delete_object", {}, {"Bucket": "bkt", "Key": key, "VersionId": "mine"})
    storage = S3Storage("bkt", "repo/a", client, versioned=True)
    with pytest.raises(ObjectExists, match="concurrently"):
        storage.create("config", b"mine")


def test_a_create_on_a_versioned_bucket_refuses_a_key_with_history(
    client: Any, stub: Stubber
) -> None:
    marker = {"Key": "repo/a/config", "VersionId": "v", "LastModified": datetime.now(UTC)}
    stub.add_response("list_object_versions", {"DeleteMarkers": [marker]})
    with pytest.raises(ObjectExists):
        S3Storage("bkt", "repo/a", client, versioned=True).create("config", b"x")


def test_missing_bucket_is_a_clear_error_at_init(client: Any, stub: Stubber) -> None:
    stub.add_client_error("head_bucket", "404", "Not Found", 404)
    with pytest.raises(RepositoryNotFound, match="bucket bkt does not exist"):
        _storage(client).check_bucket()


def _body(data: bytes) -> Any:
    return StreamingBody(io.BytesIO(data), len(data))
