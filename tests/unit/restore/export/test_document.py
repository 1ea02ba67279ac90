"""The export document's storage specs: local and S3, never a secret, reopened the CLI's way.

An nbdkit plugin process reopens the repository from the document alone (plus
its environment): a local root, or an S3 bucket, prefix, endpoint, region and
CA bundle. These tests build an S3 client without any request (boto3 makes
none until an operation), so no server is needed here; the round trip through
a real nbdkit and radosgw is ``tests/integration/test_s3_restore_paths.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from surety.core.errors import UsageError
from surety.repo.storage import LocalStorage, MemoryStorage, RetryingStorage
from surety.repo.storage.s3 import S3Storage, open_s3_storage
from surety.restore.export.document import _storage_from_spec, _storage_spec
from surety.restore.export.serve import server_env
from surety.restore.instant.start import repository_location

ENDPOINT = "http://127.0.0.1:7480"
SECRET = "s3cr3t-never-in-a-document"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDBACKUP")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))


def _s3(storage: object) -> S3Storage:
    assert isinstance(storage, RetryingStorage)
    assert isinstance(storage.inner, S3Storage)
    return storage.inner


@pytest.mark.usefixtures("aws_env")
def test_an_s3_spec_says_where_and_never_holds_credentials(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed until a request\n")
    storage = open_s3_storage(
        "s3://bkt/hosts/a/", endpoint=ENDPOINT, region="eu-west-3", ca_bundle=str(ca)
    )
    spec = _storage_spec(storage)
    assert spec == {
        "kind": "s3",
        "bucket": "bkt",
        "prefix": "hosts/a",
        "endpoint": ENDPOINT,
        "region": "eu-west-3",
        "ca_bundle": str(ca),
    }
    text = json.dumps(spec)
    assert SECRET not in text
    assert "AKIDBACKUP" not in text


@pytest.mark.usefixtures("aws_env")
def test_an_s3_spec_reopens_the_same_composition_as_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", ENDPOINT)
    original = open_s3_storage("s3://bkt/p")
    spec = json.loads(json.dumps(_storage_spec(original)))  # as the pipe carries it
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the plugin needs only the document's endpoint
    reopened = _storage_from_spec(spec)
    inner = _s3(reopened)
    assert (inner.bucket, inner.prefix, reopened.describe()) == ("bkt", "p", "s3://bkt/p")
    assert inner.client.meta.endpoint_url == ENDPOINT
    assert inner.client.meta.region_name == _s3(original).client.meta.region_name
    assert inner.client._request_signer._credentials.secret_key == SECRET  # from the env


def test_reopening_s3_without_credentials_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))
    spec = {"kind": "s3", "bucket": "bkt", "prefix": "", "endpoint": ENDPOINT}
    with pytest.raises(UsageError, match="no S3 credentials"):
        _storage_from_spec(spec)


def test_local_specs_round_trip_and_other_kinds_are_refused(tmp_path: Path) -> None:
    spec = _storage_spec(RetryingStorage(LocalStorage(tmp_path)))
    assert spec == {"kind": "local", "root": str(tmp_path.resolve())}
    reopened = _storage_from_spec(spec)
    assert isinstance(reopened, LocalStorage)
    assert reopened.root == tmp_path.resolve()
    with pytest.raises(UsageError, match="cannot be served"):
        _storage_spec(MemoryStorage())
    with pytest.raises(UsageError, match="unknown storage"):
        _storage_from_spec({"kind": "ftp"})
    with pytest.raises(UsageError, match="without a bucket"):
        _storage_from_spec({"kind": "s3", "bucket": ""})


@pytest.mark.usefixtures("aws_env")
def test_instant_recovery_records_a_location_that_reopens(tmp_path: Path) -> None:
    assert repository_location(LocalStorage(tmp_path)) == str(tmp_path.resolve())
    s3 = open_s3_storage("s3://bkt/hosts/a", endpoint=ENDPOINT)
    assert repository_location(s3) == "s3://bkt/hosts/a"
    with pytest.raises(UsageError, match="cannot serve"):
        repository_location(MemoryStorage())


def test_the_server_gets_s3_credentials_but_no_passphrase_nor_maintenance_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDBACKUP")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_PROFILE", "backup")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/etc/surety/aws-credentials")
    monkeypatch.setenv("SURETY_PASSPHRASE", "pw")
    monkeypatch.setenv("SURETY_PASSPHRASE_FILE", "/etc/surety/pw")
    monkeypatch.setenv("SURETY_TO_PASSPHRASE", "pw2")
    monkeypatch.setenv("SURETY_S3_MAINT_SECRET_ACCESS_KEY", "maint")
    monkeypatch.setenv("SURETY_REPOSITORY", "s3://bkt/p")
    env = server_env()
    assert env["AWS_ACCESS_KEY_ID"] == "AKIDBACKUP"
    assert env["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert env["AWS_PROFILE"] == "backup"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/surety/aws-credentials"
    assert env["SURETY_REPOSITORY"] == "s3://bkt/p"
    leaked = {"SURETY_PASSPHRASE", "SURETY_PASSPHRASE_FILE", "SURETY_TO_PASSPHRASE"}
    assert not leaked & env.keys()
    assert "SURETY_S3_MAINT_SECRET_ACCESS_KEY" not in env
