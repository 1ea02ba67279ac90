"""Every way of reading a restore point, from an S3 repository on a real radosgw.

``surety init s3://BUCKET/PREFIX`` and ``backup image`` of a small ext4
image, then: ``files ls``/``files get`` (an nbdkit server reopening the
repository from its export document, the file system mounted from it) byte
for byte; ``restore image`` byte for byte; the foreground and the detached
(instant recovery's) NBD servers answering exactly the image's bytes; and a
damaged pack in the bucket answered with EIO and reported, never other bytes.
The servers get the bucket from the export document and the credentials from
their environment: neither the passphrase nor the maintenance identity's keys
reach them.
"""

from __future__ import annotations

import filecmp
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from surety.app.repository import open_repository
from surety.repo.repository import Repository
from surety.repo.storage import RetryingStorage
from surety.repo.storage.s3 import S3Storage
from surety.restore.export import serve_disk, start_detached_server, stop_server
from surety.restore.export.detached import server_alive
from tests.cli import PASSPHRASE, Cli, cli_for
from tests.integration import fskit
from tests.prerequisites import require, require_import
from tests.s3.fixtures import remove_bucket
from tests.s3.server import S3Server

nbd: Any = require_import("nbd", "python3-libnbd")
require(shutil.which("nbdkit") is not None, "nbdkit (scripts/bootstrap installs it)")
_missing = fskit.missing_requirements()
require(_missing is None, str(_missing))

PREFIX = "hosts/a"


@dataclass(frozen=True)
class S3Points:
    cli: Cli
    location: str
    bucket: str
    tree: Path
    image: Path
    environ: dict[str, str]


@pytest.fixture(scope="module")
def run_root() -> Iterator[Path]:
    """This module's own run directories (short: unix socket paths are limited)."""
    Path("/run/surety").mkdir(mode=0o700, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="test-s3-", dir="/run/surety"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def points(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, run_root: Path
) -> Iterator[S3Points]:
    """An S3 repository (backup identity) holding one ext4 image backup, ``ext4``."""
    client = s3_server.client("backup")
    bucket = f"surety-test-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=bucket)
    work = tmp_path_factory.mktemp("s3-paths")
    tree = fskit.build_tree(work / "tree")
    image = work / "ext4.img"
    fskit.make_ext4(image, tree)
    location = f"s3://{bucket}/{PREFIX}"
    environ = s3_server.environ("backup")
    cli = cli_for(work / "unused-local", {**os.environ, **environ})
    cli.env.update(SURETY_REPOSITORY=location, SURETY_RUNTIME_DIR=str(run_root))
    cli.run("init", "--chunk-size", "64K")
    cli.run("backup", "image", image, "--name", "ext4")
    try:
        yield S3Points(cli, location, bucket, tree, image, environ)
    finally:
        remove_bucket(client, bucket)
        client.close()


@pytest.fixture
def repo(points: S3Points, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repository]:
    """The repository opened in this process, with the S3 variables in our environment
    (the servers inherit them) and a passphrase variable that must not reach them."""
    for name, value in points.environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SURETY_PASSPHRASE", PASSPHRASE)
    opened = open_repository(points.location, PASSPHRASE)
    yield opened
    storage = opened.storage
    assert isinstance(storage, RetryingStorage)
    assert isinstance(storage.inner, S3Storage)
    storage.inner.client.close()


def _read_all(uri: str, size: int) -> bytes:
    handle = nbd.NBD()
    handle.connect_uri(uri)
    try:
        assert handle.get_size() == size
        return b"".join(
            handle.pread(min(1 << 20, size - offset), offset) for offset in range(0, size, 1 << 20)
        )
    finally:
        handle.shutdown()


def _environ_of_server(socket: Path) -> bytes:
    for proc in Path("/proc").iterdir():
        try:
            if str(socket).encode() in (proc / "cmdline").read_bytes():
                return (proc / "environ").read_bytes()
        except OSError:
            continue
    raise AssertionError("no nbdkit process names the socket")


def test_files_ls_and_get_from_s3_are_the_guest_files(
    points: S3Points, tmp_path: Path, run_root: Path
) -> None:
    listing = points.cli.json("files", "ls", "ext4@latest", "/")
    assert listing["fs"]["type"] == "ext4"
    names = {entry["path"] for entry in listing["entries"]}
    assert names == {f"/{p.name}" for p in points.tree.iterdir()} | {"/lost+found"}
    out = tmp_path / "out"
    points.cli.json("files", "get", "ext4@latest", "/", "--to", out)
    assert fskit.compare_trees(points.tree, out, ("lost+found",), whole_seconds=True) > 5
    assert fskit.leftovers(run_root) == []


def test_restore_image_from_s3_is_byte_exact(points: S3Points, tmp_path: Path) -> None:
    target = tmp_path / "restored.img"
    out = points.cli.run("restore", "image", "ext4@latest", "--to", target).stdout
    assert "every chunk verified" in out
    assert filecmp.cmp(points.image, target, shallow=False)


def test_the_nbd_server_reopens_s3_with_credentials_only_from_its_environment(
    points: S3Points, repo: Repository
) -> None:
    original = points.image.read_bytes()
    with serve_disk(repo, "ext4@latest") as served:
        assert _read_all(served.uri, served.size) == original
        environ = _environ_of_server(served.socket)
        assert points.environ["AWS_SECRET_ACCESS_KEY"].encode() in environ
        assert PASSPHRASE.encode() not in environ
        assert points.environ["SURETY_S3_MAINT_SECRET_ACCESS_KEY"].encode() not in environ
        assert repo.keys.material.hex().encode() not in environ
        assert served.read_failures() == []
    assert fskit.processes_naming(served.socket) == []


def test_a_detached_server_serves_from_s3_and_holds_its_own_lock(
    points: S3Points, repo: Repository, run_root: Path
) -> None:
    workdir = Path(tempfile.mkdtemp(dir=run_root))
    server = start_detached_server(repo, "ext4@latest", workdir=workdir)
    try:
        assert _read_all(server.uri, server.size) == points.image.read_bytes()
        locks = [name for name, _ in repo.storage.list("locks/")]
        assert locks, "the detached server holds a shared lock in the bucket"
    finally:
        stop_server(server.pid_file)
    assert not server_alive(server.pid_file)
    assert [name for name, _ in repo.storage.list("locks/")] == []
    shutil.rmtree(workdir)


def test_a_damaged_pack_in_the_bucket_is_eio_never_other_bytes(
    points: S3Points, repo: Repository, s3_server: S3Server
) -> None:
    manifest = repo.resolve("ext4@latest")
    image = repo.get_image(manifest.disks[0].image)
    index = repo.index()
    chunk = next(i for i, c in enumerate(image.chunk_ids) if index.get(c) is not None)
    where = index.get(image.chunk_ids[chunk])
    assert where is not None
    key = next(name for name, _ in repo.storage.list("data/") if name.endswith(where.pack))
    client = s3_server.client("backup")
    s3_key = f"{PREFIX}/{key}"
    good = client.get_object(Bucket=points.bucket, Key=s3_key)["Body"].read()
    damaged = bytearray(good)
    damaged[where.offset + where.length // 2] ^= 0x20
    client.put_object(Bucket=points.bucket, Key=s3_key, Body=bytes(damaged))
    try:
        with serve_disk(repo, "ext4@latest") as served:
            handle = nbd.NBD()
            handle.connect_uri(served.uri)
            offset = chunk * image.chunk_size
            with pytest.raises(nbd.Error):
                handle.pread(4096, offset)
            handle.shutdown()
            (failure,) = served.read_failures()
            assert failure.offset == offset
    finally:
        client.put_object(Bucket=points.bucket, Key=s3_key, Body=good)
        client.close()
