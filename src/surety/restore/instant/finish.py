"""Instant recovery, second half: ``finish`` (move to production storage), ``abort``, ``list``.

``finish_instant`` per disk, in order (each step recorded, so a rerun after a
kill resumes from what the VM shows):

1. the disk already runs on its copy (pivoted by an earlier run): keep it;
2. a block job left by a killed run: abort it *without* pivot (the VM stays on
   its overlay), delete its partial copy;
3. a full block copy to ``DIR/NAME-<target>.qcow2``, progress from the job,
   until libvirt says the mirror is ready; then pivot.

Then console logs are moved beside the copies (a rename keeps QEMU writing
into them), the VM is defined persistently from its live XML, and only then
are the servers stopped and the overlays deleted. Ctrl-C or SIGTERM during a
copy aborts that copy: the VM runs on as before.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

from surety.core.errors import Interrupted, TargetError, UsageError
from surety.core.progress import Progress
from surety.core.units import format_size
from surety.hypervisor.port import HypervisorDomain, HypervisorHost
from surety.restore.export import server_alive, stop_server
from surety.restore.instant.control import find_instant_domain, open_instant_vm
from surety.restore.instant.plan import (
    copy_destination_xml,
    copy_path,
    disk_states,
    finished_domain_xml,
    moved_chardev_files,
)
from surety.restore.instant.start import DEFAULT_ROOT, discard
from surety.restore.instant.state import (
    FINISHED,
    FINISHING,
    InstantDisk,
    InstantVm,
    list_instant_vms,
    save_instant_vm,
)

__all__ = [
    "FinishOptions",
    "FinishResult",
    "InstantStatus",
    "abort_instant",
    "finish_instant",
    "instant_status",
]

POLL = 0.5


@dataclass(frozen=True)
class FinishOptions:
    name: str
    storage: Path | None = None  # required on the first run; a rerun reuses the recorded one
    root: Path = DEFAULT_ROOT


@dataclass(frozen=True)
class FinishResult:
    vm: InstantVm
    copied: int  # bytes the block jobs reported done
    seconds: float


def finish_instant(
    options: FinishOptions, progress: Progress, *, host: HypervisorHost
) -> FinishResult:
    """Move instant VM ``options.name`` of ``host`` (the caller's, left open) to its storage."""
    began = time.monotonic()
    with open_instant_vm(options.root, options.name, host) as opened:
        record, domain = opened.record, opened.domain
        copied = 0
        if opened.finished:
            record = record.with_phase(FINISHED)  # defined by an earlier run: clean up only
        else:
            if domain is None or not domain.is_running():
                raise TargetError(
                    f"instant VM {record.name} is not running (its writes are kept): "
                    f"`surety instant-recover resume {record.name}` first, or `abort` it"
                )
            record = _prepare_copies(record, options.storage)
            for disk in record.disks:
                done, record = _move_disk(domain, record, disk, progress)
                copied += done
            record = _define(host, domain, record)
        _cleanup(record)
        return FinishResult(record, copied, time.monotonic() - began)


def _prepare_copies(record: InstantVm, storage: Path | None) -> InstantVm:
    if record.storage and storage is not None and Path(record.storage) != storage.resolve():
        raise UsageError(
            f"finish of {record.name} began with --storage {record.storage}: rerun it with that"
        )
    chosen = storage or (Path(record.storage) if record.storage else None)
    if chosen is None:
        raise UsageError("--storage DIR is needed: where the VM's disks go")
    if not chosen.is_dir():
        raise TargetError(f"--storage {chosen} is not a directory")
    chosen = chosen.resolve()
    disks = []
    for disk in record.disks:
        path = copy_path(chosen, record.name, disk.target)
        if disk.copy is None and (path.exists() or path.is_symlink()):
            raise TargetError(f"{path} exists; remove it or choose another --storage")
        disks.append(replace(disk, copy=str(path)))
    nvram = chosen / Path(record.nvram).name if record.nvram else None
    if record.storage is None and nvram is not None and nvram.exists():
        raise TargetError(f"{nvram} exists; remove it or choose another --storage")
    _check_room(chosen, [d for d in record.disks if d.copy is None])
    updated = replace(record.with_phase(FINISHING), storage=str(chosen), disks=tuple(disks))
    save_instant_vm(updated)
    return updated


def _check_room(storage: Path, disks: list[InstantDisk]) -> None:
    """Room for each copy: the point's data plus what the guest wrote to the overlay."""
    need = sum(d.allocated + _allocated(Path(d.overlay)) for d in disks)
    stat = os.statvfs(storage)
    free = stat.f_bavail * stat.f_frsize
    if need > free:
        raise TargetError(
            f"not enough room in {storage}: the copies need about {format_size(need)}, "
            f"{format_size(free)} is free"
        )


def _allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


def _move_disk(
    domain: HypervisorDomain, record: InstantVm, disk: InstantDisk, progress: Progress
) -> tuple[int, InstantVm]:
    """Copy one disk and pivot to the copy: (bytes copied, the updated record)."""
    assert disk.copy is not None
    state = disk_states(domain.xml()).get(disk.target)
    if state is None:
        raise TargetError(f"{record.name} has no disk {disk.target} any more")
    if state.source == disk.copy:
        return 0, _record_on_copy(record, disk, True)
    if domain.block_job(disk.target) is not None:
        progress.note(f"{disk.target}: a copy left by an earlier run is aborted and restarted")
        _abort_job(domain, disk.target)
    record = _record_on_copy(record, disk, False)  # before the old copy goes
    Path(disk.copy).unlink(missing_ok=True)  # ours (recorded), not in use: not pivoted to
    domain.block_copy(disk.target, copy_destination_xml(disk.copy))
    try:
        copied = _wait_ready(domain, disk, progress)
        record = _record_on_copy(record, disk, True)  # ready: identical, writes mirrored
        domain.block_job_abort(disk.target, pivot=True)
    except KeyboardInterrupt:
        if disk_states(domain.xml())[disk.target].source != disk.copy:  # not pivoted yet
            with suppress(TargetError):
                _abort_job(domain, disk.target)
            _record_on_copy(record, disk, False)
        raise Interrupted(
            f"finish interrupted: {record.name} runs on; run finish again to complete it"
        ) from None
    if disk_states(domain.xml())[disk.target].source != disk.copy:
        raise TargetError(f"{record.name}: {disk.target} did not switch to {disk.copy}")
    return copied, record


def _record_on_copy(record: InstantVm, disk: InstantDisk, on_copy: bool) -> InstantVm:
    current = next(d for d in record.disks if d.target == disk.target)
    if current.on_copy == on_copy:
        return record
    updated = record.with_disk(replace(current, on_copy=on_copy))
    save_instant_vm(updated)
    return updated


def _wait_ready(domain: HypervisorDomain, disk: InstantDisk, progress: Progress) -> int:
    job = domain.block_job(disk.target)
    progress.phase(f"copy {disk.target}", job[1] if job else disk.size)
    done = 0
    while True:
        job = domain.block_job(disk.target)
        if job is None:
            raise TargetError(
                f"the copy of {disk.target} ended before it was ready; the VM runs on "
                "its overlay: run finish again"
            )
        if job[0] > done:
            progress.advance(job[0] - done)
            done = job[0]
        state = disk_states(domain.xml()).get(disk.target)
        if state is not None and state.ready:
            return done
        time.sleep(POLL)


def _abort_job(domain: HypervisorDomain, target: str) -> None:
    domain.block_job_abort(target)
    deadline = time.monotonic() + 60
    while domain.block_job(target) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def _define(host: HypervisorHost, domain: HypervisorDomain, record: InstantVm) -> InstantVm:
    storage, vm_dir = Path(str(record.storage)), Path(record.directory)
    live = domain.xml()
    for old, new in moved_chardev_files(live, vm_dir, storage).items():
        if Path(old).exists() and not Path(new).exists():
            try:
                os.rename(old, new)  # same file system: QEMU keeps writing into it
            except OSError:
                shutil.copy2(old, new)
    nvram = _move_nvram(record, storage)
    host.define_domain(
        finished_domain_xml(live, record.name, record.disks, vm_dir, storage, nvram=nvram)
    )
    finished = record.with_phase(FINISHED)
    save_instant_vm(finished)
    return finished


def _move_nvram(record: InstantVm, storage: Path) -> str | None:
    """The UEFI variables beside the copies (as the firmware last wrote them)."""
    if record.nvram is None or not Path(record.nvram).exists():
        return None
    target = storage / Path(record.nvram).name
    shutil.copy2(record.nvram, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return str(target)


def _cleanup(record: InstantVm) -> None:
    """After the define: the servers and overlays are no longer used."""
    for disk in record.disks:
        stop_server(disk.pid_file)
    shutil.rmtree(record.directory, ignore_errors=True)


# -- abort and list -------------------------------------------------------------------


def abort_instant(name: str, root: Path = DEFAULT_ROOT, *, host: HypervisorHost) -> InstantVm:
    """Discard instant VM ``name`` of ``host`` (the caller's, left open)."""
    with open_instant_vm(root, name, host) as opened:
        if opened.finished:
            raise UsageError(
                f"{name} is finished: it is a normal VM on {opened.record.storage} now "
                f"(run `surety instant-recover finish {name}` to clean up what is left)"
            )
        discard(opened.record, opened.domain)
        return opened.record


@dataclass(frozen=True)
class InstantStatus:
    vm: InstantVm
    running: bool
    servers_alive: int


def instant_status(root: Path = DEFAULT_ROOT, *, host: HypervisorHost) -> list[InstantStatus]:
    """Every instant VM recorded under ``root``, as ``host`` shows it (asked only if any)."""
    found = []
    for record in list_instant_vms(root):
        domain = find_instant_domain(host, record)
        alive = sum(server_alive(d.pid_file) for d in record.disks)
        found.append(InstantStatus(record, domain is not None and domain.is_running(), alive))
    return found
