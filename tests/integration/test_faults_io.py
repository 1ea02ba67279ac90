"""Hostile I/O: full targets, long names, killed restores, late stop requests, odd sources.

Each failure ends in one line with its documented exit code, never a traceback,
and leaves nothing behind: no partial file, no restore point, no empty repository.
Tests that mount a tmpfs need root (as CI runs them): without it they fail.
"""

from __future__ import annotations

import fcntl
import filecmp
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import surety.cli.main
from surety.repo.repository import Repository
from tests.integration.conftest import Cli

PARTIAL = ".surety-partial-*"


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "error" in proc.stderr


@contextmanager
def _tmpfs(where: Path, size: int) -> Iterator[Path]:
    assert os.geteuid() == 0, "this test mounts a tmpfs: run it as root (CI does)"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=False)


def _wait_for(what: Callable[[], list[Path]], proc: subprocess.Popen[str]) -> list[Path]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("nothing appeared")


def _held(path: Path) -> bool:
    """Whether another process holds ``path``'s ``flock`` (a live restore writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock this probe may have taken
    return False


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """512 MiB of incompressible data: its restore takes seconds."""
    path = tmp_path_factory.mktemp("big") / "big.img"
    with open(path, "wb") as out:
        for _ in range(512):
            out.write(os.urandom(1 << 20))
    yield path
    path.unlink()


# -- 1. a target file system too small --------------------------------------------------
def test_restore_onto_a_too_small_file_system_fails_and_leaves_nothing(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=8 << 20)
    initialized.run("backup", "image", image, "--name", "small")
    with _tmpfs(tmp_path / "roomy", 32 << 20) as roomy:
        initialized.run("restore", "image", "small@latest", "--to", roomy / "out.img")
        assert filecmp.cmp(image, roomy / "out.img", shallow=False)
        allocated = (roomy / "out.img").stat().st_blocks * 512
    with _tmpfs(tmp_path / "tight", allocated - 3 * 4096) as tight:
        target = tight / "out.img"
        proc = initialized.run("restore", "image", "small@latest", "--to", target, check=False)
        _one_line_error(proc, 11)
        assert str(target) in proc.stderr
        assert "no space left" in proc.stderr
        assert "restored" not in proc.stdout
        assert os.listdir(tight) == []  # neither the target nor a partial file


def test_restore_onto_a_too_small_block_device_fails_before_writing(
    initialized: Cli, tmp_path: Path
) -> None:
    assert os.geteuid() == 0, "this test attaches a loop device: run it as root (CI does)"
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom((1 << 20) + 8192))
    initialized.run("backup", "image", image, "--name", "dev")
    backing = tmp_path / "backing"
    backing.write_bytes(bytes((1 << 20) + 4096))  # one page short of the disk
    device = subprocess.run(
        ["losetup", "--find", "--show", backing], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        proc = initialized.run("restore", "image", "dev@latest", "--to", device, check=False)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
    _one_line_error(proc, 11)
    assert device in proc.stderr
    assert "no space left" in proc.stderr


# -- 2. the partial file's name ---------------------------------------------------------
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_255_character_target_name_restores(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path, fmt: str
) -> None:
    image = image_factory(size=2 << 20)
    initialized.run("backup", "image", image, "--name", "long")
    target = tmp_path / ("n" * 251 + ".img")
    assert len(target.name) == 255
    initialized.run("restore", "image", "long@latest", "--to", target, "--format", fmt)
    if fmt == "qcow2":
        raw = tmp_path / "back.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", target, raw], check=True)
        target = raw
    assert filecmp.cmp(image, target, shallow=False)
    assert not list(tmp_path.glob(PARTIAL))


# -- 3. partial files of killed restores ------------------------------------------------
def test_a_partial_file_left_by_kill_9_is_removed_by_the_next_restore(
    initialized: Cli, big_image: Path, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    initialized.run("backup", "image", big_image, "--name", "big")
    small = image_factory(size=1 << 20)
    initialized.run("backup", "image", small, "--name", "small")
    out = tmp_path / "out"
    out.mkdir()
    proc = initialized.popen("restore", "image", "big@latest", "--to", out / "big.img")
    (leftover,) = _wait_for(lambda: list(out.glob(PARTIAL)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert leftover.exists()
    again = initialized.run("restore", "image", "small@latest", "--to", out / "small.img")
    assert f"removed {leftover}" in again.stderr
    assert not leftover.exists()
    assert sorted(os.listdir(out)) == ["small.img"]
    assert filecmp.cmp(small, out / "small.img", shallow=False)


def test_a_partial_file_held_by_a_live_writer_is_kept(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    initialized.run("backup", "image", image_factory(size=1 << 20), "--name", "s")
    held = tmp_path / ".surety-partial-0123abcd"
    abandoned = tmp_path / ".surety-partial-feedf00d"
    abandoned.write_bytes(b"x" * 4096)
    with open(held, "wb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # as a running restore holds it
        done = initialized.run("restore", "image", "s@latest", "--to", tmp_path / "s.img")
        assert held.exists()
    assert not abandoned.exists()
    assert f"removed {abandoned}" in done.stderr
    assert str(held) not in done.stderr


def test_two_restores_into_one_directory_leave_each_other_alone(
    initialized: Cli, big_image: Path, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    initialized.run("backup", "image", big_image, "--name", "big")
    small = image_factory(size=1 << 20)
    initialized.run("backup", "image", small, "--name", "small")
    out = tmp_path / "out"
    out.mkdir()
    first = initialized.popen("restore", "image", "big@latest", "--to", out / "big.img")
    # stopped only once it holds the partial's flock: a restore stopped between creating
    # the file and locking it would rightly lose it to the sweeper (then makes a new one)
    (partial,) = _wait_for(lambda: [p for p in out.glob(PARTIAL) if _held(p)], first)
    first.send_signal(signal.SIGSTOP)  # held mid-write (its flock too) while the second runs
    try:
        assert first.poll() is None, "the big restore finished too early for this test"
        second = initialized.run("restore", "image", "small@latest", "--to", out / "small.img")
        assert partial.exists()
        assert "removed" not in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert filecmp.cmp(big_image, out / "big.img", shallow=False)
    assert filecmp.cmp(small, out / "small.img", shallow=False)
    assert sorted(os.listdir(out)) == ["big.img", "small.img"]


# -- 4. a stop request after the point of no return ------------------------------------
def _run_main(monkeypatch: pytest.MonkeyPatch, cli: Cli, *args: str | Path) -> int:
    """``surety ARGS`` in this process (its signal handlers too); returns the exit code."""
    for key, value in cli.env.items():
        if key.startswith("SURETY_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["surety", *map(str, args)])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        surety.cli.main.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    raise AssertionError("main() returned without exiting")


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_right_after_the_final_rename_reports_the_complete_restore(
    initialized: Cli,
    image_factory: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = image_factory(size=2 << 20)
    initialized.run("backup", "image", image, "--name", "late")
    target = tmp_path / "late.img"
    replace = os.replace

    def replace_then_sigterm(src: Any, dst: Any) -> None:
        replace(src, dst)
        if Path(dst) == target:
            _sigterm_self()

    monkeypatch.setattr(os, "replace", replace_then_sigterm)
    code = _run_main(monkeypatch, initialized, "restore", "image", "late@latest", "--to", target)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "restored" in captured.out
    assert "stop request came after" in captured.err
    assert "interrupted" not in captured.err
    assert filecmp.cmp(image, target, shallow=False)


def test_sigterm_during_the_commit_reports_the_committed_point(
    initialized: Cli,
    image_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    commit = Repository.commit

    def commit_then_sigterm(repo: Repository, manifest: Any) -> str:
        point_id = commit(repo, manifest)
        _sigterm_self()
        return point_id

    monkeypatch.setattr(Repository, "commit", commit_then_sigterm)
    image = image_factory(size=2 << 20)
    code = _run_main(monkeypatch, initialized, "backup", "image", image, "--name", "late")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "stop request came after" in captured.err
    assert "nothing was committed" not in captured.err
    monkeypatch.undo()
    assert [p["name"] for p in initialized.json("points")] == ["late"]


# -- 5. what a backup source may be -----------------------------------------------------
def _refused_source(proc: subprocess.CompletedProcess[str], cli: Cli) -> None:
    _one_line_error(proc, 10)
    assert "regular file or a block device" in proc.stderr or "empty" in proc.stderr
    assert cli.json("points") == []


def test_a_fifo_source_is_refused_at_once(initialized: Cli, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    proc = initialized.run("backup", "image", fifo, "--name", "f", check=False, timeout=30)
    assert time.monotonic() - started < 30
    _refused_source(proc, initialized)
    assert "pipe" in proc.stderr


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_character_device_source_is_refused(initialized: Cli, device: str) -> None:
    proc = initialized.run("backup", "image", device, "--name", "c", "--disk", "d", check=False)
    _refused_source(proc, initialized)
    assert "character device" in proc.stderr


def test_a_pipe_on_stdin_is_refused(initialized: Cli) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "surety", "backup", "image", "/dev/stdin", "--name", "p"],
        env=initialized.env,
        input="not a disk\n" * 1000,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _refused_source(proc, initialized)
    assert "pipe" in proc.stderr


def test_an_empty_file_is_refused(initialized: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.img"
    empty.touch()
    proc = initialized.run("backup", "image", empty, "--name", "e", check=False)
    _refused_source(proc, initialized)
    assert "empty" in proc.stderr


def test_backup_image_help_says_what_a_source_may_be(initialized: Cli) -> None:
    text = " ".join(initialized.run("backup", "image", "--help").stdout.split())
    assert "regular file or a block device" in text
    assert "refused" in text


# -- 6. repository paths ----------------------------------------------------------------
def test_a_too_long_repository_path_is_one_line(cli: Cli, tmp_path: Path) -> None:
    where = tmp_path / ("r" * 300)
    opened = cli.run("--repo", where, "points", check=False)
    _one_line_error(opened, 3)
    assert "r" * 300 in opened.stderr
    created = cli.run("--repo", where, "init", check=False)
    _one_line_error(created, 2)
    assert "r" * 300 in created.stderr
    assert os.listdir(tmp_path) == []


def test_init_with_a_bad_chunk_size_leaves_no_directory(cli: Cli, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    proc = cli.run("--repo", fresh, "init", "--chunk-size", "3K", check=False)
    _one_line_error(proc, 2)
    assert "power of two" in proc.stderr
    assert not fresh.exists()
    mine = tmp_path / "mine"
    mine.mkdir()  # a directory the user made stays, empty as it was
    proc = cli.run("--repo", mine, "init", "--chunk-size", "3K", check=False)
    _one_line_error(proc, 2)
    assert mine.is_dir()
    assert os.listdir(mine) == []
