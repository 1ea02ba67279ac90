"""Restore mode's hold: edit a restored disk offline so that its applications do not start.

Before a restored VM first boots, the systemd units of the applications whose
restore procedure must run first get a drop-in::

    /etc/systemd/system/<unit>.d/50-surety-restore-hold.conf
        [Unit]
        ConditionPathExists=!/etc/surety-restore-hold

and ``/etc/surety-restore-hold`` is created: at boot the units are *skipped*
(not failed), exactly like a domain controller booted into Directory Services
Restore Mode keeps its directory offline. ``lift_script`` (run in the guest by
the procedures' driver) removes both and reloads systemd.

The disk is reached along: qemu-storage-daemon (FUSE export of the qcow2 or
raw image, writable) -> loop device (partitions scanned) -> the file system
mounted read-write in a private run directory; the file system holding
``/etc/systemd/system`` gets the hold. Guest file systems are untrusted: no
path component written through may be a symlink (it could point into the
host). Everything is undone in ``finally``; a killed run's leftovers are
reaped by the next (``restore.export.rundir``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from surety.core.errors import ExposeError, TargetError
from surety.restore.export import (
    FileSystem,
    detach_loops_under,
    find_file_systems,
    run_directory,
)
from surety.restore.vm import RestoredDisk

__all__ = ["DROP_IN", "FLAG", "hold_units_offline", "lift_script"]

FLAG = "etc/surety-restore-hold"
DROP_IN = "50-surety-restore-hold.conf"
HOLD_ROOT = Path("/run/surety/hold")
_DRIVERS = {"ext2": "ext4", "ext3": "ext4", "ext4": "ext4", "xfs": "xfs", "btrfs": "btrfs"}
DROP_IN_TEXT = (
    "# surety restore mode: held until the restore procedure has run\n"
    "[Unit]\n"
    f"ConditionPathExists=!/{FLAG}\n"
)


def lift_script(units: Sequence[str]) -> str:
    """Shell text run in the guest to lift the hold (idempotent)."""
    dirs = " ".join(f"/etc/systemd/system/{unit}.d" for unit in units)
    return (
        f"rm -f /{FLAG}\n"
        f'for d in {dirs}; do rm -f "$d/{DROP_IN}"; rmdir "$d" 2>/dev/null || true; done\n'
        "systemctl daemon-reload\n"
    )


def hold_units_offline(
    disks: Sequence[RestoredDisk], units: Sequence[str], point_id: str, notes: list[str]
) -> str:
    """Hold ``units`` on whichever restored disk holds the guest's systemd config.

    Returns where the hold was written (``vda``, or ``vda2`` for partition 2).
    Raises ``TargetError`` when no disk has a file system with ``/etc/systemd``.
    """
    with run_directory(notes, HOLD_ROOT, "restore mode") as directory:
        for number, disk in enumerate(disks):
            with _disk_device(disk, directory / f"d{number}") as device:
                for fs in find_file_systems(device):
                    if fs.type in _DRIVERS and _hold_on(
                        fs, directory / f"m{number}-{fs.number}", units, point_id
                    ):
                        return disk.target if fs.number == 0 else f"{disk.target}{fs.number}"
    raise TargetError(
        "restore mode: no restored disk has a Linux root file system with /etc/systemd/system "
        "(ext4, xfs or btrfs, not on LVM); restore with --naive to boot it as it is"
    )


@contextmanager
def _disk_device(disk: RestoredDisk, directory: Path, timeout: float = 30) -> Iterator[Path]:
    """The image as a writable loop device (partitions scanned) until the block ends."""
    directory.mkdir(mode=0o700)
    export, pidfile, log = directory / "disk", directory / "qsd.pid", directory / "qsd.log"
    export.touch(mode=0o600)
    blockdev = (
        f"driver={disk.format},node-name=disk,file.driver=file,"
        f"file.filename={_qemu_escape(disk.path)}"
    )
    argv = [
        "setpriv", "--pdeathsig", "TERM", "qemu-storage-daemon",
        "--blockdev", blockdev,
        "--export", f"type=fuse,id=exp,node-name=disk,mountpoint={export},writable=on",
        "--pidfile", str(pidfile),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        _wait_export(proc, pidfile, log, timeout)
        device = _run(["losetup", "--partscan", "--find", "--show", str(export)]).strip()
        try:
            yield Path(device)
        finally:
            _flush(device, export)
            _run(["losetup", "--detach", device], check=False)
            detach_loops_under(directory)
    finally:
        proc.terminate()  # qemu-storage-daemon flushes the image and drops the export
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _flush(device: str, export: Path) -> None:
    """The loop device's writes down into the image before it goes: the loop driver
    writes through the page cache of the FUSE-exported file, and pages still dirty
    there when the export stops are lost (seen building the AD test guest: an ext4
    whose journal never reached the image)."""
    _run(["blockdev", "--flushbufs", device], check=False)
    try:
        fd = os.open(export, os.O_RDWR)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _qemu_escape(path: str) -> str:
    return path.replace(",", ",,")


def _wait_export(proc: subprocess.Popen[bytes], pidfile: Path, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pidfile.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace").strip()[-300:]
            raise ExposeError(f"cannot open the restored disk for restore mode: {text}")
        time.sleep(0.05)


def _hold_on(fs: FileSystem, mount_point: Path, units: Sequence[str], point_id: str) -> bool:
    mount_point.mkdir(mode=0o700)
    proc = subprocess.run(
        ["mount", "-t", _DRIVERS[fs.type], "-o", "nodev,nosuid,noexec", fs.device, mount_point],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return False
    try:
        systemd = _safe_path(mount_point, "etc/systemd/system")
        if systemd is None or not systemd.is_dir():
            return False
        for unit in units:
            drop_in_dir = _safe_path(mount_point, f"etc/systemd/system/{unit}.d")
            if drop_in_dir is None:
                raise TargetError(f"restore mode: /etc/systemd/system/{unit}.d is a symlink")
            drop_in_dir.mkdir(mode=0o755, exist_ok=True)
            _write_new(drop_in_dir / DROP_IN, DROP_IN_TEXT.encode())
        flag = {"point": point_id, "units": list(units), "since": time.time()}
        _write_new(mount_point / FLAG, (json.dumps(flag) + "\n").encode())
        return True
    finally:
        _run(["umount", str(mount_point)])


def _safe_path(root: Path, relative: str) -> Path | None:
    """``root/relative`` if no existing component is a symlink; None if one is."""
    path = root
    for part in relative.split("/"):
        path = path / part
        if path.is_symlink():
            return None
    return path


def _write_new(path: Path, data: bytes) -> None:
    """Write ``path`` (never through a symlink), mode 0644, root-owned."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(argv: list[str], check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ExposeError(f"{argv[0]} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout
