"""Attach a served disk as a local block device; find its file systems; mount one read-only.

The kernel reads a restore point's disk along this path (chosen because hosts
have ``/dev/fuse`` and loop devices where ``/dev/nbd*`` is often missing)::

    mount (ro) -> /dev/loopNpM -> loop device (read-only, partitions scanned)
      -> a file nbdfuse exposes over FUSE -> NBD -> nbdkit (``serve``)

A bare file system (no partition table) is number 0; partitions keep their
number (``vda2`` is 2). Mounts never write and never replay a journal:
``ro,noload`` for ext2/3/4, ``ro,norecovery,nouuid`` for xfs (``nouuid``: the
original may be mounted on this host), ``ro,rescue=nologreplay`` for btrfs,
``ro`` otherwise; always ``nodev,nosuid,noexec``. A guest's file system is
untrusted input to the host kernel's driver: mount only restore points of
machines you trust that far.

Every context manager here undoes its step in ``finally``; ``rundir``
is the safety net for anything a killed run left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import ExposeError
from surety.core.units import format_size
from surety.restore.export.rundir import detach_loops_under, is_mounted
from surety.restore.export.serve import ServedDisk

__all__ = ["FileSystem", "attach_disk", "check_host", "find_file_systems", "mount_readonly"]

TOOLS = {
    "nbdfuse": "libnbd-bin",
    "fusermount3": "fuse3",
    "setpriv": "util-linux",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "partx": "util-linux",
    "blkid": "util-linux",
}
NOT_MOUNTABLE = frozenset(
    {"swap", "LVM2_member", "linux_raid_member", "crypto_LUKS", "zfs_member", "bcache"}
)
_BASE_OPTIONS = "ro,nodev,nosuid,noexec"
_MOUNT = {  # blkid type -> (kernel driver, extra options)
    "ext2": ("ext4", "noload"),
    "ext3": ("ext4", "noload"),
    "ext4": ("ext4", "noload"),
    "xfs": ("xfs", "norecovery,nouuid"),
    "btrfs": ("btrfs", "rescue=nologreplay"),
}


@dataclass(frozen=True)
class FileSystem:
    number: int  # partition number; 0 = a file system on the whole disk
    device: str
    type: str  # as blkid names it; "" if none was recognised
    size: int
    label: str = ""
    uuid: str = ""

    @property
    def mountable(self) -> bool:
        return bool(self.type) and self.type not in NOT_MOUNTABLE

    def describe(self) -> str:
        label = f" {self.label!r}" if self.label else ""
        return f"{self.number} ({self.type or 'unknown'}{label}, {format_size(self.size)})"


def check_host() -> None:
    """File-level restore needs root, /dev/fuse, loop devices and a few tools."""
    if os.geteuid() != 0:
        raise ExposeError("file-level restore needs root (it attaches loop devices and mounts)")
    if not Path("/dev/fuse").exists() or not Path("/dev/loop-control").exists():
        raise ExposeError("file-level restore needs /dev/fuse and loop devices on this host")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise ExposeError(f"missing tools for file-level restore: apt install {' '.join(missing)}")


@contextmanager
def attach_disk(served: ServedDisk, directory: Path, timeout: float = 30) -> Iterator[Path]:
    """The served disk as a read-only loop device (partitions scanned) until the block ends."""
    fuse_dir, pidfile = directory / "fuse", directory / "nbdfuse.pid"
    fuse_dir.mkdir(mode=0o700)
    image = fuse_dir / "disk"
    # setpriv --pdeathsig: nbdfuse never outlives us, even after kill -9
    argv = ["setpriv", "--pdeathsig", "TERM", "nbdfuse", "--readonly", "--pidfile", str(pidfile)]
    with open(directory / "nbdfuse.log", "wb") as log:
        proc = subprocess.Popen(
            [*argv, str(image), "--unix", str(served.socket)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SURETY_PASS")},
        )
    try:
        _wait_for(proc, pidfile, directory / "nbdfuse.log", timeout)
        device = _run(["losetup", "--read-only", "--partscan", "--find", "--show", str(image)])
        held = _hold_with_autoclear(device.strip())
        try:
            yield Path(device.strip())
        finally:
            os.close(held)  # with the mounts gone, the kernel frees the loop device
            detach_loops_under(fuse_dir)
    finally:
        _unmount_fuse(fuse_dir, proc)


def _hold_with_autoclear(device: str) -> int:
    """Open the loop device, then detach it: busy, it is only marked to go at last close.

    From here on the loop device lives exactly as long as our descriptor and
    the mounts on it: a killed run leaves none once its mounts are gone.
    """
    held = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _run(["losetup", "--detach", device])
    except BaseException:
        os.close(held)
        raise
    return held


def find_file_systems(device: Path) -> list[FileSystem]:
    """Partitions of ``device`` (or the whole disk when it has none), with blkid's findings."""
    whole = _blkid(str(device))
    if "PTTYPE" in whole and not _partitions(device):
        # The kernel may lack this table's parser (minimal kernels): libblkid reads it
        # and partx adds the partitions by ioctl; they go when the loop device goes.
        _run(["partx", "--add", str(device)])
    parts = _partitions(device)
    if not parts:
        if "TYPE" not in whole:
            return []
        return [_file_system(0, str(device), _size(Path("/sys/class/block") / device.name), whole)]
    found = [
        _file_system(n, f"/dev/{sys.name}", _size(sys), _blkid(f"/dev/{sys.name}"))
        for n, sys in parts
    ]
    return sorted(found, key=lambda fs: fs.number)


def _partitions(device: Path) -> list[tuple[int, Path]]:
    """(number, sysfs directory) of the partitions the kernel knows on ``device``."""
    disk = Path("/sys/class/block") / device.name
    return [(int((part / "partition").read_text()), part) for part in disk.glob(f"{device.name}p*")]


def _size(sysfs: Path) -> int:
    return int((sysfs / "size").read_text()) * 512  # always 512-byte sectors in sysfs


@contextmanager
def mount_readonly(fs: FileSystem, mount_point: Path) -> Iterator[Path]:
    """``fs`` mounted read-only at ``mount_point`` (made here) until the block ends."""
    driver, extra = _MOUNT.get(fs.type, (fs.type, ""))
    options = f"{_BASE_OPTIONS},{extra}" if extra else _BASE_OPTIONS
    mount_point.mkdir(mode=0o700)
    proc = subprocess.run(
        ["mount", "-t", driver, "-o", options, fs.device, str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1:] or ["mount failed"]
        raise ExposeError(f"cannot mount file system {fs.describe()}: {message[0]}")
    try:
        yield mount_point
    finally:
        _umount(mount_point)


def _file_system(number: int, device: str, size: int, probe: dict[str, str]) -> FileSystem:
    return FileSystem(
        number, device, probe.get("TYPE", ""), size, probe.get("LABEL", ""), probe.get("UUID", "")
    )


def _blkid(device: str) -> dict[str, str]:
    """Low-level probe (no cache): TYPE, LABEL, UUID, PART_ENTRY_NUMBER, ..."""
    proc = subprocess.run(
        ["blkid", "--probe", "--output", "export", device],
        capture_output=True,
        text=True,
        check=False,
    )
    pairs = (line.partition("=") for line in proc.stdout.splitlines())
    return {key: value for key, sep, value in pairs if sep}


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ExposeError(f"{argv[0]} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _wait_for(proc: subprocess.Popen[bytes], pidfile: Path, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pidfile.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            message: list[str] = []
            with suppress(OSError):
                message = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise ExposeError(f"nbdfuse could not expose the disk: {' '.join(message)}")
        time.sleep(0.05)


def _umount(mount_point: Path) -> None:
    for _attempt in range(5):
        umount = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if not umount.returncode:
            return
        time.sleep(0.2)  # a reader that just closed a file, or udev probing
    subprocess.run(["umount", "--lazy", str(mount_point)], capture_output=True, check=False)


def _unmount_fuse(fuse_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    """Unmounting makes nbdfuse exit cleanly; a stuck one is terminated."""
    for _attempt in range(5):
        if proc.poll() is not None:
            break
        unmounted = subprocess.run(
            ["fusermount3", "-u", str(fuse_dir)], capture_output=True, check=False
        )
        if not unmounted.returncode:
            break
        time.sleep(0.2)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait()
    if is_mounted(fuse_dir):  # nbdfuse died without unmounting: a disconnected mount
        _umount(fuse_dir)
