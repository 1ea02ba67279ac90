"""Faults of the local index cache (``repo.cache``): killed updates, read-only and full disks.

Every command is the real ``surety`` in a subprocess. The cache is only a copy:
whatever happens to it, commands give the repository's answers (restores are
byte-exact) and say once when the cache could not be written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import (
    Cli,
    mounted_read_only,
    mounted_tmpfs,
    random_image,
    require_root,
    same_bytes,
)
from tests.faults.conftest import quick as quick  # noqa: PLC0414 -- the fixture

NOTE = "cannot be written"

# Runs Repository.index() in a child that stops (and signals) at one point of a
# cache update, so the test can kill -9 it there: while index objects are read
# (spill files exist) or just before the new table is renamed in.
_UPDATER = """
import os, sys, time
from pathlib import Path
from surety.app.repository import open_repository
import surety.repo.cache as cache
import surety.repo.repository as repository

where, flag = sys.argv[1], Path(sys.argv[2])
def stop(*args, **kwargs):
    flag.write_text("here")
    time.sleep(120)
if where == "read":
    original = repository.Repository._read_index
    def slow(self, name):
        packs = original(self, name)
        stop()
        return packs
    repository.Repository._read_index = slow
else:
    cache.os.replace = stop
repo = open_repository(os.environ["SURETY_REPOSITORY"], os.environ["SURETY_PASSPHRASE"])
repo.rebuild_cache()
"""


def _env(cli: Cli, cache: Path) -> dict[str, str]:
    return {**cli.env, "SURETY_CACHE_DIR": str(cache)}


def _backups(cli: Cli, env: dict[str, str], tmp_path: Path, count: int) -> list[Path]:
    images = []
    for seed in range(count):
        image = random_image(tmp_path / f"d{seed}.img", 300 << 10, seed)
        cli.run("backup", "image", image, "--name", f"d{seed}", env=env)
        images.append(image)
    return images


def _restored(cli: Cli, env: dict[str, str], name: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{name}.out"
    out.unlink(missing_ok=True)
    cli.run("restore", "image", f"{name}@latest", "--to", out, env=env)
    return out


def _info(cli: Cli, env: dict[str, str]) -> dict[str, object]:
    import json  # noqa: PLC0415

    return dict(json.loads(cli.run("cache", "info", "--json", env=env).stdout))


@pytest.mark.parametrize("where", ["read", "rename"])
def test_kill_9_during_a_cache_update_leaves_a_usable_cache(
    quick: Cli, tmp_path: Path, where: str
) -> None:
    cache = tmp_path / "cache"
    env = _env(quick, cache)
    images = _backups(quick, env, tmp_path, 2)
    quick.run("cache", "rebuild", env=env)
    before = _info(quick, env)
    assert before["state"] == "current"
    flag = tmp_path / "flag"
    errors = tmp_path / "child.err"
    with open(errors, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", _UPDATER, where, str(flag)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert child.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, "the update never reached its stop"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert [p for p in (cache / _repo_id(before)).iterdir() if p.name.startswith("table.tmp")]
    # the old table is intact and current; the next update sweeps the killed one's files
    assert _info(quick, env)["state"] == "current"
    extra = random_image(tmp_path / "extra.img", 300 << 10, 99)
    quick.run("backup", "image", extra, "--name", "extra", env=env)
    assert same_bytes(_restored(quick, env, "extra", tmp_path), extra)  # merges the new one
    after = _info(quick, env)
    assert after["state"] == "current"
    assert after["index_objects_merged"] == 3
    assert not [p for p in (cache / _repo_id(after)).iterdir() if p.name.startswith("table.tmp")]
    for seed, image in enumerate(images):
        assert same_bytes(_restored(quick, env, f"d{seed}", tmp_path), image)


def _repo_id(info: dict[str, object]) -> str:
    return str(info["repository"])


@pytest.fixture
def read_only_cache(quick: Cli, tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """A cache holding a stale table (one backup behind), mounted read-only."""
    require_root("mount", "umount")
    source = tmp_path / "cache-src"
    env = _env(quick, source)
    _backups(quick, env, tmp_path, 1)
    with mounted_read_only(source, tmp_path / "cache-ro") as where:
        yield {**env, "SURETY_CACHE_DIR": str(where)}, source


def test_a_read_only_cache_falls_back_to_memory_and_says_so_once(
    quick: Cli, tmp_path: Path, read_only_cache: tuple[dict[str, str], Path]
) -> None:
    env, source = read_only_cache
    image = random_image(tmp_path / "new.img", 400 << 10, 7)
    backup = quick.run("backup", "image", image, "--name", "new", env=env)
    assert backup.stderr.count(NOTE) <= 1  # the first open may still find the table current
    out = tmp_path / "new.out"
    proc = quick.run("restore", "image", "new@latest", "--to", out, env=env)
    assert proc.stderr.count(NOTE) == 1, proc.stderr  # the table is behind: said once
    assert same_bytes(out, image)
    assert same_bytes(_restored(quick, env, "d0", tmp_path), tmp_path / "d0.img")
    # with no table at all, likewise
    empty = tmp_path / "empty"
    empty.mkdir()
    with mounted_read_only(empty, tmp_path / "empty-ro") as where:
        bare = {**env, "SURETY_CACHE_DIR": str(where)}
        out.unlink()
        proc = quick.run("restore", "image", "new@latest", "--to", out, env=bare)
        assert proc.stderr.count(NOTE) == 1, proc.stderr
        assert same_bytes(out, image)
        assert "Traceback" not in proc.stderr
    assert source.exists()


@pytest.fixture
def full_cache(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "64k") as where:
        yield where


def test_a_full_cache_disk_falls_back_to_memory_and_says_so_once(
    quick: Cli, tmp_path: Path, full_cache: Path
) -> None:
    env = _env(quick, full_cache)  # a table needs > 256 KiB (its fan-out): it never fits
    images = _backups(quick, env, tmp_path, 2)
    proc = quick.run("restore", "image", "d1@latest", "--to", tmp_path / "o", env=env)
    assert proc.stderr.count(NOTE) == 1, proc.stderr
    assert "No space left" in proc.stderr
    assert same_bytes(tmp_path / "o", images[1])
    assert not list(full_cache.rglob("table*"))  # no half-written table left
