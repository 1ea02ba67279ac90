"""The NBD server over a restore point: exactly the image's bytes, zeros reported, damage refused.

A real nbdkit with surety's plugin, read with libnbd, compared against the
original image file.
"""

from __future__ import annotations

import random
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from surety.app.repository import open_repository
from surety.core.errors import ExposeError
from surety.repo.image import ImageIndex
from surety.restore.export import serve_disk
from tests.cli import PASSPHRASE, Cli
from tests.integration import fskit
from tests.integration.conftest import write_image
from tests.prerequisites import require, require_import

nbd: Any = require_import("nbd", "python3-libnbd")
require(shutil.which("nbdkit") is not None, "nbdkit (scripts/bootstrap installs it)")

CHUNK = 64 << 10
SIZE = (10 << 20) + 12345  # a short last chunk


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """Text, random, zero and repeated runs, then a 2 MiB hole and an odd tail."""
    path = tmp_path / "disk.img"
    write_image(path, 8 << 20, seed=7)
    with open(path, "r+b") as out:
        out.truncate(SIZE)
        out.seek(SIZE - 100)
        out.write(b"tail" * 25)
    return path


def _connect(uri: str) -> Any:
    handle = nbd.NBD()
    handle.add_meta_context("base:allocation")
    handle.connect_uri(uri)
    return handle


def _zero_extents(handle: Any, size: int) -> list[tuple[int, int]]:
    """Runs the server reports as zero (NBD_STATE_ZERO), from repeated block status calls."""
    got: list[tuple[int, int]] = []

    def collect(_context: str, _offset: int, entries: list[int], _error: Any) -> int:
        got.extend(zip(entries[0::2], entries[1::2], strict=True))
        return 0

    found, offset = [], 0
    while offset < size:
        got.clear()
        handle.block_status(size - offset, offset, collect)
        for length, flags in got:
            if flags & 2:
                found.append((offset, min(length, size - offset)))
            offset += length
    return _merge(found)


def _merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in sorted(set(runs)):
        if merged and merged[-1][0] + merged[-1][1] >= start:
            first, first_length = merged.pop()
            merged.append((first, max(first_length, start + length - first)))
        else:
            merged.append((start, length))
    return merged


def _expected_zero_runs(data: bytes) -> list[tuple[int, int]]:
    runs = [
        (start, min(CHUNK, len(data) - start))
        for start in range(0, len(data), CHUNK)
        if data[start : start + CHUNK].count(0) == min(CHUNK, len(data) - start)
    ]
    return _merge(runs)


def _server_process(socket: Path) -> Path:
    for proc in Path("/proc").iterdir():
        try:
            if str(socket).encode() in (proc / "cmdline").read_bytes():
                return proc
        except OSError:
            continue
    raise AssertionError("no nbdkit process names the socket")


def test_secrets_never_reach_the_servers_command_line_or_environment(
    initialized: Cli, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    initialized.run("backup", "image", image, "--name", "served")
    monkeypatch.setenv("SURETY_PASSPHRASE", PASSPHRASE)
    repo = open_repository(str(initialized.repo), PASSPHRASE)
    with serve_disk(repo, "served@latest") as served:
        proc = _server_process(served.socket)
        for what in ("cmdline", "environ"):
            seen = (proc / what).read_bytes()
            assert PASSPHRASE.encode() not in seen
            assert repo.keys.material.hex().encode() not in seen
        assert not list(served.socket.parent.glob("*.json"))


def test_served_bytes_are_the_image_bytes(initialized: Cli, image: Path) -> None:
    initialized.run("backup", "image", image, "--name", "served")
    original = image.read_bytes()
    repo = open_repository(str(initialized.repo), PASSPHRASE)
    with serve_disk(repo, "served@latest") as served:
        assert served.uri.startswith("nbd+unix:///?socket=")
        assert oct(served.socket.parent.stat().st_mode & 0o777) == "0o700"
        handle = _connect(served.uri)
        assert handle.get_size() == len(original) == served.size
        assert handle.is_read_only()
        assert handle.can_multi_conn()
        for offset in range(0, len(original), 1 << 20):  # sequential, 1 MiB requests
            length = min(1 << 20, len(original) - offset)
            assert handle.pread(length, offset) == original[offset : offset + length]
        rng = random.Random(3)
        for _ in range(200):  # unaligned, across chunk borders
            offset = rng.randrange(len(original))
            length = rng.randint(1, min(300_000, len(original) - offset))
            assert handle.pread(length, offset) == original[offset : offset + length]
        zero_runs = _expected_zero_runs(original)
        assert zero_runs, "the image must have zero chunks"
        assert _zero_extents(handle, len(original)) == zero_runs
        with pytest.raises(nbd.Error):
            handle.pwrite(b"x", 0)
        handle.shutdown()
        assert served.read_failures() == []
    assert not served.socket.parent.exists()
    assert fskit.processes_naming(served.socket) == []


def test_parallel_connections_read_the_same_bytes(initialized: Cli, image: Path) -> None:
    initialized.run("backup", "image", image, "--name", "served")
    original = image.read_bytes()
    repo = open_repository(str(initialized.repo), PASSPHRASE)
    errors: list[str] = []

    def reader(seed: int, uri: str) -> None:
        handle, rng = _connect(uri), random.Random(seed)
        for _ in range(100):
            offset = rng.randrange(len(original))
            length = rng.randint(1, min(200_000, len(original) - offset))
            if handle.pread(length, offset) != original[offset : offset + length]:
                errors.append(f"mismatch at {offset}+{length}")
        handle.shutdown()

    with serve_disk(repo, "served@latest", cache_chunks=4) as served:
        threads = [threading.Thread(target=reader, args=(n, served.uri)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_a_damaged_chunk_is_refused_with_eio_and_reported(initialized: Cli, image: Path) -> None:
    initialized.run("backup", "image", image, "--name", "served")
    original = image.read_bytes()
    bad = next(
        n * CHUNK
        for n in range(len(original) // CHUNK)
        if any(original[n * CHUNK : (n + 1) * CHUNK])
    )
    fskit.damage_chunk_at(initialized.repo, "served@latest", bad)
    repo = open_repository(str(initialized.repo), PASSPHRASE)
    with serve_disk(repo, "served@latest") as served:
        handle = _connect(served.uri)
        with pytest.raises(nbd.Error) as refused:
            handle.pread(4096, bad + 100)
        assert refused.value.errno == "EIO"
        after = bad + CHUNK  # the other chunks still read, exactly
        assert handle.pread(CHUNK, after) == original[after : after + CHUNK]
        failures = served.read_failures()
        assert [f.kind for f in failures] == ["IntegrityError"]
        assert "damaged" in failures[0].message
        assert failures[0].offset == bad + 100


def test_a_server_that_cannot_start_says_why(
    initialized: Cli, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    initialized.run("backup", "image", image, "--name", "served")
    repo = open_repository(str(initialized.repo), PASSPHRASE)
    (image_object,) = (initialized.repo / "images").iterdir()
    real_get_image = repo.get_image

    def get_image_then_lose_it(image_id: str) -> ImageIndex:
        found = real_get_image(image_id)
        image_object.unlink()  # the plugin reads it again at start, and finds it gone
        return found

    monkeypatch.setattr(repo, "get_image", get_image_then_lose_it)
    workdir = tmp_path / "serve"
    workdir.mkdir(mode=0o700)
    with (
        pytest.raises(ExposeError, match="nbdkit could not serve"),
        serve_disk(repo, "served@latest", workdir=workdir),
    ):
        pass
    assert fskit.processes_naming(workdir) == []
    assert "no such object" in (workdir / "nbdkit.log").read_text()
