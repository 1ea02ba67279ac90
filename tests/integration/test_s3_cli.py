"""S3 repositories through the real CLI, against a real radosgw (and through a faulty proxy).

``surety init s3://BUCKET/PREFIX``, ``backup image``, ``restore image`` byte
for byte and ``check --read-data``; wrong locations and credentials are one
line and an exit code; and the same round trip through a proxy that resets
connections and answers 503 at random: the transient faults are retried, none
is reported as damage, and every restored byte is right.
"""

from __future__ import annotations

import filecmp
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from surety.repo.storage.s3 import make_s3_client
from tests.cli import PASSPHRASE, Cli, without_surety
from tests.integration.faulty_proxy import FaultyProxy
from tests.prerequisites import require


@pytest.fixture(scope="module")
def s3_environ() -> dict[str, str]:
    """The radosgw's endpoint and keys (from ``eval "$(scripts/s3-up DIR)"``)."""
    environ = dict(os.environ)
    require(bool(environ.get("AWS_ENDPOINT_URL")), 'a radosgw: eval "$(scripts/s3-up DIR)"')
    return environ


@pytest.fixture(scope="module")
def bucket(s3_environ: dict[str, str]) -> Iterator[str]:
    client = make_s3_client(s3_environ)
    name = f"cli-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    yield name
    client.close()


def _cli(environ: dict[str, str], location: str, tmp_path: Path, **extra: str) -> Cli:
    env = without_surety(environ)
    env.update(SURETY_REPOSITORY=location, SURETY_PASSPHRASE=PASSPHRASE, **extra)
    return Cli(tmp_path, env)


def _round_trip(cli: Cli, image: Path, target: Path) -> None:
    cli.run("init", "--chunk-size", "64K")
    cli.run("backup", "image", image, "--name", "web01")
    out = cli.run("restore", "image", "web01@latest", "--to", target).stdout
    assert "every chunk verified" in out
    assert filecmp.cmp(image, target, shallow=False)
    check = cli.run("check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr


def test_init_backup_restore_check_on_s3(
    s3_environ: dict[str, str],
    bucket: str,
    image_factory: Callable[..., Path],
    tmp_path: Path,
) -> None:
    cli = _cli(s3_environ, f"s3://{bucket}/hosts/a", tmp_path)
    image = image_factory(size=40 << 20)  # > 2 packs of 16 MiB
    _round_trip(cli, image, tmp_path / "restored.img")
    again = cli.run("init", f"s3://{bucket}/hosts/a", "--chunk-size", "64K", check=False)
    assert again.returncode == 3
    assert "already a surety repository" in again.stderr
    assert "Traceback" not in again.stderr
    keys = _keys(s3_environ, bucket, "hosts/a/")
    assert "hosts/a/config" in keys
    assert any(k.startswith("hosts/a/data/") for k in keys)
    assert all(k.startswith("hosts/a/") for k in _keys(s3_environ, bucket, ""))
    # as a new user types it: the location after init, no SURETY_REPOSITORY
    fresh = Cli(tmp_path, {k: v for k, v in cli.env.items() if k != "SURETY_REPOSITORY"})
    made = fresh.run("init", f"s3://{bucket}/hosts/b")
    assert "created repository" in made.stdout
    assert "hosts/b/config" in _keys(s3_environ, bucket, "hosts/b/")
    listed = fresh.run("--repo", f"s3://{bucket}/hosts/b", "points", "--json").stdout
    assert json.loads(listed) == []


@pytest.mark.parametrize(
    ("location", "extra", "code", "message"),
    [
        ("s3://absent-bucket-surety/x", {}, 3, "does not exist"),
        ("s3:///x", {}, 2, "expected s3://BUCKET"),
        ("s3://{bucket}/y", {"AWS_SECRET_ACCESS_KEY": "wrong"}, 9, "credentials/permissions"),
    ],
)
def test_bad_locations_and_credentials_are_one_line(  # noqa: PLR0917 -- pytest passes fixtures and parameters positionally
    s3_environ: dict[str, str],
    bucket: str,
    tmp_path: Path,
    location: str,
    extra: dict[str, str],
    code: int,
    message: str,
) -> None:
    cli = _cli(s3_environ, location.format(bucket=bucket), tmp_path, **extra)
    proc = cli.run("init", check=False)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_credentials_never_probe_the_metadata_service(
    s3_environ: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    environ = {k: v for k, v in s3_environ.items() if not k.startswith("AWS_ACCESS_KEY")}
    environ.pop("AWS_SECRET_ACCESS_KEY", None)
    environ.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="false")
    proc = _cli(environ, f"s3://{bucket}/z", tmp_path).run("points", check=False, timeout=30)
    assert proc.returncode == 2
    assert "no S3 credentials" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def proxy(s3_environ: dict[str, str]) -> Iterator[FaultyProxy]:
    endpoint = urlparse(s3_environ["AWS_ENDPOINT_URL"])
    proxy = FaultyProxy((endpoint.hostname or "127.0.0.1", endpoint.port or 80), seed=7)
    yield proxy
    proxy.close()


def test_resets_and_503s_during_backup_and_restore_are_never_damage(
    s3_environ: dict[str, str],
    bucket: str,
    proxy: FaultyProxy,
    image_factory: Callable[..., Path],
    tmp_path: Path,
) -> None:
    cli = _cli({**s3_environ, "AWS_ENDPOINT_URL": proxy.url}, f"s3://{bucket}/faulty", tmp_path)
    image = image_factory(size=40 << 20, seed=5)
    _round_trip(cli, image, tmp_path / "restored.img")
    assert proxy.resets > 0
    assert proxy.unavailable > 0
    assert "damage" not in cli.run("check", "--read-data").stdout.lower()


def _keys(environ: dict[str, str], bucket: str, prefix: str) -> list[str]:
    client: Any = make_s3_client(environ)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]
    finally:
        client.close()
