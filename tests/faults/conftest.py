"""Shared helpers of the fault tests: damage a file, run many commands, judge their output.

Every command is the real ``surety`` in a subprocess (``tests.cli.Cli``). The
fixtures ``cli``, ``initialized`` (a repository with 64 KiB chunks) and
``image_factory`` are the integration tests' own. A missing prerequisite
(root, ``unshare``, ``mount``) fails the test: CI has them.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from surety.app.repository import create_repository
from surety.repo.crypto import KdfParams
from tests.cli import PASSPHRASE, Cli, cli_for
from tests.integration.conftest import cli, image_factory, initialized, write_image

__all__ = [
    "PARTIAL_PREFIX",
    "Cli",
    "Command",
    "assert_failed_cleanly",
    "assert_no_traceback",
    "cli",
    "cli_for",
    "damage",
    "dead_pid",
    "flip_bit",
    "image_factory",
    "initialized",
    "lock_document",
    "make_repository",
    "mounted_read_only",
    "object_path",
    "quick",
    "random_image",
    "repo_files",
    "require_root",
    "restored_ok",
    "run_many",
    "same_bytes",
    "write_image",
]

PARTIAL_PREFIX = ".surety-partial-"


def require_root(*tools: str) -> None:
    """Fail (never skip) when the test cannot run here: CI runs as root with these tools."""
    assert os.geteuid() == 0, "this fault test needs root (CI runs as root)"
    for tool in tools:
        assert shutil.which(tool), f"{tool} is not installed"


# -- repositories ---------------------------------------------------------------------

# Every command opens the key file: the default argon2id costs ~0.2 CPU-seconds each
# time, which these tests pay hundreds of times. Their repositories are made like
# `surety init --chunk-size 64K` does, with the cheapest KDF the format allows.
CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)


def make_repository(path: Path) -> Cli:
    """An empty repository at ``path`` (64 KiB chunks, cheap KDF) and its ``Cli``."""
    create_repository(str(path), PASSPHRASE, 64 << 10, kdf=CHEAP_KDF)
    return cli_for(path, dict(os.environ))


@pytest.fixture
def quick(tmp_path: Path) -> Cli:
    """Like ``initialized``, but each command opens it faster (see ``CHEAP_KDF``)."""
    return make_repository(tmp_path / "repo")


# -- running ------------------------------------------------------------------------


Command = Sequence[str | Path]


def run_many(cli: Cli, commands: Iterable[Command]) -> list[subprocess.CompletedProcess[str]]:
    """Run commands at once (they must not depend on each other); results in order."""
    todo = list(commands)
    if not todo:
        return []
    with ThreadPoolExecutor(len(todo)) as pool:
        return list(pool.map(lambda args: cli.run(*args, check=False), todo))


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout


def assert_failed_cleanly(
    proc: subprocess.CompletedProcess[str], codes: Iterable[int], *needles: str
) -> None:
    """A failure with one of ``codes``, one error line, no traceback, naming ``needles``."""
    codes = set(codes)
    assert proc.returncode in codes, _show(proc, f"exit {proc.returncode}, wanted {codes}")
    assert_no_traceback(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("surety: error:")]
    assert len(errors) == 1, _show(proc, "wanted exactly one error line")
    for needle in needles:
        assert needle in proc.stderr, _show(proc, f"{needle!r} not in stderr")


def _show(proc: subprocess.CompletedProcess[str], why: str) -> str:
    return f"{why}: {proc.args[3:]} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def same_bytes(a: Path, b: Path) -> bool:
    return filecmp.cmp(a, b, shallow=False)


def restored_ok(
    proc: subprocess.CompletedProcess[str], target: Path, source: Path, failures: Iterable[int]
) -> bool:
    """Judge one restore: exit 0 means byte-identical, else a clean failure. True if it restored."""
    assert_no_traceback(proc)
    if proc.returncode == 0:
        assert same_bytes(source, target), f"exit 0 with wrong bytes: {proc.args[3:]}"
        return True
    assert_failed_cleanly(proc, failures)
    assert not target.exists(), f"a failed restore left {target}"
    return False


# -- damage ---------------------------------------------------------------------------


def object_path(repo: Path, name: str) -> Path:
    """The local file of a repository object (``data/<id>`` fans out as ``data/<id[:2]>/<id>``)."""
    kind, _, ident = name.partition("/")
    if kind == "data":
        return repo / "data" / ident[:2] / ident
    return repo / name


def flip_bit(path: Path, offset: int | None = None, mask: int = 0x80) -> None:
    """Flip one bit (the top one by default: text stops being UTF-8) at ``offset``/the middle."""
    data = bytearray(path.read_bytes())
    where = len(data) // 2 if offset is None else offset
    data[where] ^= mask
    path.write_bytes(bytes(data))


def damage(path: Path, mode: str) -> None:
    if mode == "flip":
        flip_bit(path)
    elif mode == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    elif mode == "delete":
        path.unlink()
    else:
        raise ValueError(mode)


def repo_files(repo: Path) -> set[str]:
    """Every file under ``repo`` (hidden ones too), relative."""
    return {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}


def random_image(path: Path, size: int, seed: int) -> Path:
    """Incompressible, unique data (nothing deduplicates against another seed)."""
    rng = random.Random(seed)
    with open(path, "wb") as out:
        for _ in range(size // (1 << 20)):
            out.write(rng.randbytes(1 << 20))
        out.write(rng.randbytes(size % (1 << 20)))
    return path


# -- locks ------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (reuse within a test is not a concern)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _pid_ns() -> str:
    return str(os.stat("/proc/self/ns/pid").st_ino)


def lock_document(
    *,
    pid: int,
    pid_ns: str | None = None,
    refreshed: float | None = None,
    exclusive: bool = False,
    operation: str = "backup image ghost",
    start_time: str = "1",
) -> bytes:
    """A valid version-2 lock (docs/format.md "Locks") of this host, written by hand."""
    now = time.time()
    doc = {
        "version": 2,
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid_ns": pid_ns if pid_ns is not None else _pid_ns(),
        "pid": pid,
        "start_time": start_time,
        "exclusive": exclusive,
        "operation": operation,
        "created": now,
        "refreshed": now if refreshed is None else refreshed,
    }
    return json.dumps(doc).encode()


# -- mounts -------------------------------------------------------------------------------


@contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``64k``) at ``where``: a disk that fills; always unmounted."""
    require_root("mount", "umount")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", where], check=False)
        if os.path.ismount(where):
            subprocess.run(["umount", "-l", where], check=False)


@contextmanager
def mounted_read_only(source: Path, where: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``where``; always unmounted."""
    require_root("mount", "umount")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", source, where], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", where], check=True)
        probe = where / ".probe"
        try:
            probe.write_bytes(b"x")
        except OSError:
            pass
        else:
            raise AssertionError(f"{where} is writable after remount,ro")
        yield where
    finally:
        subprocess.run(["umount", where], check=False)
        if os.path.ismount(where):
            subprocess.run(["umount", "-l", where], check=False)
