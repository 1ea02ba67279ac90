"""Private run directories, and the reaper of dead runs.

Exposing a restore point's disk stacks process and kernel state: nbdkit (a
socket), nbdfuse or qemu-storage-daemon (a FUSE mount), a loop device, a file
system mount, a lab's VMs. Everything of one run lives under one private
(0700) directory ``<root>/<pid>.<start time>.<random>/`` (file-level restore:
``/run/surety/files``, restore mode: ``/run/surety/hold``, the lab:
``/run/surety/lab``), so that teardown can find it *by path*, whoever runs it:

* mounts whose mount point is under the directory (``/proc/self/mountinfo``);
  file systems first, deepest first, FUSE mounts last;
* loop devices whose backing file is under it (``/sys/block/loop*/loop/backing_file``),
  detached between the two (a loop device is never detached by number alone:
  the number may belong to someone else by then);
* processes whose command line names it (nbdkit, nbdfuse), for dead runs only.

A run releases its own directory in ``finally``; every run first reaps the
directories of dead runs (pid gone, or reused: the start time differs), so a
``kill -9`` leaves nothing that breaks, or outlives, the next run. A
directory is removed only when nothing is mounted under it any more.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from surety.core.processes import process_start_time

__all__ = [
    "detach_loops_under",
    "is_mounted",
    "reap_dead_runs",
    "release",
    "run_directory",
]


@contextmanager
def run_directory(notes: list[str], root: Path, what: str) -> Iterator[Path]:
    """A fresh private directory under ``root`` for one run of ``what`` (named in the notes
    of a later run that reaps it); released and removed afterwards."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    notes.extend(reap_dead_runs(root, what))
    pid = os.getpid()
    path = Path(tempfile.mkdtemp(prefix=f"{pid}.{process_start_time(pid)}.", dir=root))
    try:
        yield path
    finally:
        left = release(path)
        if left:
            notes.append(f"could not release {', '.join(left)}; the next run retries")
        else:
            shutil.rmtree(path, ignore_errors=True)


def reap_dead_runs(root: Path, what: str) -> list[str]:
    """Release and remove the directories of runs whose process is gone."""
    notes = []
    for path in sorted(root.glob("*.*.*")) if root.is_dir() else []:
        pid, _sep, rest = path.name.partition(".")
        if not pid.isdigit() or process_start_time(int(pid)) == rest.partition(".")[0]:
            continue  # not ours, or its run is alive
        _terminate_processes_naming(path)
        left = release(path)
        if not left:
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"cleaned up after an interrupted {what} (pid {pid})")
    return notes


def release(path: Path) -> list[str]:
    """Unmount, detach and unmount again everything under ``path``; returns what is left."""
    mounts = _mounts_under(path)
    for mount_point, _fstype in [m for m in mounts if not m[1].startswith("fuse")]:
        _umount(mount_point)
    detach_loops_under(path)
    for mount_point, _fstype in [m for m in mounts if m[1].startswith("fuse")]:
        _umount(mount_point)
    return [mount_point for mount_point, _ in _mounts_under(path)]


def detach_loops_under(path: Path) -> None:
    """Detach every loop device whose backing file lies under ``path``."""
    prefix = f"{path}/"
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with suppress(OSError):
            if backing.read_text().strip().startswith(prefix):
                device = f"/dev/{backing.parent.parent.name}"
                subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point (also when its FUSE daemon is gone)."""
    return any(mount_point == str(path) for mount_point, _ in _mounts(""))


def _mounts_under(path: Path) -> list[tuple[str, str]]:
    """(mount point, fs type) of mounts under ``path``, deepest first."""
    found = _mounts(f"{path}/")
    return sorted(found, key=lambda m: m[0].count("/"), reverse=True)


def _mounts(prefix: str) -> list[tuple[str, str]]:
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            mount_point = _unescape(fields[4])
            fstype = fields[fields.index("-") + 1]
            if mount_point.startswith(prefix):
                found.append((mount_point, fstype))
    return found


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _umount(mount_point: str) -> None:
    for _attempt in range(3):
        if subprocess.run(["umount", mount_point], capture_output=True, check=False).returncode:
            time.sleep(0.2)  # busy for a moment (a reader just closing), or gone already
        else:
            return
    subprocess.run(["umount", "--lazy", mount_point], capture_output=True, check=False)


def _terminate_processes_naming(path: Path) -> None:
    needle = str(path).encode() + b"/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with suppress(OSError):
            if needle in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGTERM)
