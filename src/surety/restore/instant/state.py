"""The record of one instant VM: ``<root>/<NAME>/state.json`` (written atomically).

Everything ``finish``, ``abort`` and ``list`` need lives here, so they work
without the repository's passphrase and after the command that started the VM
is gone: the restore point, the repository's location (an absolute path -
what every state file written before S3 holds - or ``s3://BUCKET/PREFIX``: a
location as ``--repo`` takes it, so old files read unchanged), the VM's UUID, and per disk its
overlay, the directory of its detached NBD server (socket, pid file, log) and,
once ``finish`` chose it, the copy on production storage.

Phases: ``starting`` (servers and overlays being made; the VM may not exist),
``running`` (the transient VM runs on its overlays), ``finishing`` (disks being
copied; each disk is on its overlay or, once pivoted, on its copy),
``finished`` (defined persistently on its copies; only cleanup is left).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from surety.core.errors import TargetError, UsageError

__all__ = [
    "FINISHED",
    "FINISHING",
    "RUNNING",
    "STARTING",
    "InstantDisk",
    "InstantVm",
    "list_instant_vms",
    "load_instant_vm",
    "save_instant_vm",
    "working_on",
]

STARTING, RUNNING, FINISHING, FINISHED = "starting", "running", "finishing", "finished"
STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class InstantDisk:
    target: str  # vda
    size: int  # virtual size in bytes
    allocated: int  # bytes of non-zero chunks in the restore point
    overlay: str  # qcow2 file taking the guest's writes
    server_dir: str  # socket, pid file, log of the detached NBD server
    copy: str | None = None  # the disk on production storage (finish)
    on_copy: bool = False  # the copy is ready (identical, writes mirrored) or pivoted to:
    # from then on it holds the guest's newest data, so a resumed VM must use it

    @property
    def socket(self) -> str:
        return str(Path(self.server_dir) / "nbd.sock")

    @property
    def pid_file(self) -> Path:
        return Path(self.server_dir) / "server.pid"


@dataclass(frozen=True)
class InstantVm:
    name: str
    directory: str  # <root>/<name>
    point: str  # restore point id
    point_name: str
    repository: str  # its location: an absolute path or s3://BUCKET/PREFIX
    identity: str  # in-place | clone
    phase: str
    created: float  # epoch seconds
    uuid: str = ""  # known once the VM is created
    disks: tuple[InstantDisk, ...] = ()
    nvram: str | None = None
    storage: str | None = None  # finish's target directory

    def with_phase(self, phase: str, **changes: Any) -> InstantVm:
        return replace(self, phase=phase, **changes)

    def with_disk(self, disk: InstantDisk) -> InstantVm:
        """This record with ``disk`` added, or replacing the disk of its target."""
        if all(d.target != disk.target for d in self.disks):
            return replace(self, disks=(*self.disks, disk))
        return replace(
            self, disks=tuple(disk if d.target == disk.target else d for d in self.disks)
        )


def encode(vm: InstantVm) -> str:
    return json.dumps({"version": STATE_VERSION, **asdict(vm)}, indent=2, sort_keys=True) + "\n"


def decode(text: str, where: str) -> InstantVm:
    try:
        doc = json.loads(text)
        if doc.pop("version", None) != STATE_VERSION:
            raise ValueError("unknown version")
        if "repository" not in doc and "repo_root" in doc:  # an early name of the field
            doc["repository"] = doc.pop("repo_root")
        disks = tuple(InstantDisk(**d) for d in doc.pop("disks"))
        return InstantVm(**doc, disks=disks)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{where}: not a state file surety can read ({exc})") from exc


def save_instant_vm(vm: InstantVm) -> None:
    """Write the state durably: a temporary file, fsync, rename, fsync the directory."""
    directory = Path(vm.directory)
    temporary = directory / f".{STATE_FILE}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, encode(vm).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, directory / STATE_FILE)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_instant_vm(root: Path, name: str) -> InstantVm | None:
    """The instant VM ``name``, or None when there is no record of it."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} cannot be a VM name")
    path = root / name / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return decode(text, str(path))


def list_instant_vms(root: Path) -> list[InstantVm]:
    if not root.is_dir():
        return []
    found = []
    for directory in sorted(root.iterdir()):
        vm = load_instant_vm(root, directory.name) if directory.is_dir() else None
        if vm is not None:
            found.append(vm)
    return found


@contextmanager
def working_on(vm: InstantVm) -> Iterator[None]:
    """One command at a time per instant VM (finish, abort, resume): an flock on its
    directory's ``.lock``, released by the kernel if the holder dies."""
    try:
        fd = os.open(Path(vm.directory) / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise UsageError(f"no instant VM named {vm.name} any more") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TargetError(
                f"another surety instant-recover command is working on {vm.name}"
            ) from None
        yield
    finally:
        os.close(fd)
