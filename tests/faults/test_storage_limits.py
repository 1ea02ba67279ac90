"""A full or read-only repository: writing fails in one line, reading never needs writing.

* ENOSPC: the repository on a 6 MiB tmpfs; a backup of a bigger incompressible
  image exits 8 and commits nothing; ``prune`` leaves a clean repository; with
  the tmpfs filled to the last byte, ``points`` and ``restore`` still work.
* Read-only: the repository bind-mounted read-only; ``points``, ``check`` and
  ``restore`` work without a lock (and say so); ``backup`` and ``prune`` exit 9.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.faults.conftest import (
    Cli,
    assert_failed_cleanly,
    assert_no_traceback,
    mounted_read_only,
    mounted_tmpfs,
    random_image,
    repo_files,
    same_bytes,
)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small", "6m") as where:
        yield where


def _write_until_error(out: BinaryIO, block: int) -> int | None:
    try:
        while True:
            out.write(b"\xff" * block)
    except OSError as exc:
        return exc.errno


def _fill(directory: Path) -> None:
    """Write a file until the file system has not one byte left."""
    with open(directory / "filler", "wb", buffering=0) as out:
        for block in (1 << 20, 1 << 12, 1):
            assert _write_until_error(out, block) == errno.ENOSPC
    probe = os.statvfs(directory)
    assert probe.f_bavail == 0, probe


def test_disk_full(
    cli: Cli, small_tmpfs: Path, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    repo = small_tmpfs / "repo"
    cli.run("--repo", repo, "init", "--chunk-size", "64K")
    early = image_factory("early.img", size=1 << 20)
    cli.run("--repo", repo, "backup", "image", early, "--name", "early")
    big = random_image(tmp_path / "big.img", 8 << 20, seed=5)
    full = cli.run("--repo", repo, "backup", "image", big, "--name", "big", check=False)
    assert_failed_cleanly(full, {8}, "no space left")
    assert [p["name"] for p in cli.json("--repo", repo, "points")] == ["early"]
    big.unlink()
    cli.run("--repo", repo, "prune")
    checked = json.loads(cli.run("--repo", repo, "check", "--read-data", "--json").stdout)
    assert checked["ok"], checked
    assert checked["warnings"] == [], checked
    assert not [f for f in repo_files(repo) if "/.tmp-" in f or f.startswith(".tmp-")]

    _fill(small_tmpfs)
    listed = cli.run("--repo", repo, "points", "--json", check=False)
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == ["early"]
    assert_no_traceback(listed)
    target = tmp_path / "restored.img"
    restored = cli.run(
        "--repo", repo, "restore", "image", "early@latest", "--to", target, check=False
    )
    assert restored.returncode == 0, restored.stderr
    assert_no_traceback(restored)
    assert same_bytes(early, target)


@pytest.fixture
def read_only_repo(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> Iterator[tuple[Cli, Path]]:
    image = image_factory(size=2 << 20)
    initialized.run("backup", "image", image, "--name", "ro")
    with mounted_read_only(initialized.repo, tmp_path / "ro") as ro:
        yield initialized, ro


def test_read_only_repository_reads_without_a_lock(
    read_only_repo: tuple[Cli, Path], tmp_path: Path
) -> None:
    cli, ro = read_only_repo
    image = tmp_path / "disk.img"
    listed = cli.run("--repo", ro, "points", "--json", check=False)
    checked = cli.run("--repo", ro, "check", "--read-data", check=False)
    target = tmp_path / "restored.img"
    restored = cli.run("--repo", ro, "restore", "image", "ro@latest", "--to", target, check=False)
    for proc in (listed, checked, restored):
        assert_no_traceback(proc)
        assert proc.returncode == 0, proc.stderr
        assert "no lock was taken" in proc.stderr, proc.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == ["ro"]
    assert same_bytes(image, target)


def test_read_only_repository_refuses_writes(
    read_only_repo: tuple[Cli, Path], image_factory: Callable[..., Path]
) -> None:
    cli, ro = read_only_repo
    before = repo_files(cli.repo)
    new = image_factory("new.img", size=1 << 20, seed=9)
    for command in (("backup", "image", new, "--name", "ro"), ("prune",)):
        proc = cli.run("--repo", ro, *command, check=False)
        assert_failed_cleanly(proc, {9})
    assert repo_files(cli.repo) == before
