"""``surety restore vm``: a whole VM from a restore point, in place or as a clone.

Flow (DESIGN.md "Restore flows"):
1. **Plan and check** (``plan``, pure, on facts read from the target):
   identity, disk paths, networks, VMs in the way; then the files at the final
   names and the free room. Nothing is written before all of this passes.
2. **Write** every disk (in parallel, each chunk hash-checked) plus NVRAM and
   swtpm state under temporary names, fsynced. A failure removes them all.
3. **Switch over** (``switch``): networks, the replaced VM, renames, define;
   rolled back if any step fails.
4. **Hooks and start**: each restore hook's ``before_first_boot``; with
   ``start`` the VM is started, then each hook's ``after_boot``.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import Interrupted, SuretyError, TargetError, UsageError
from surety.core.progress import Progress
from surety.core.units import format_size
from surety.hypervisor.domain import parse_domain
from surety.hypervisor.hostnet import host_addresses
from surety.hypervisor.port import HypervisorDomain, HypervisorHost
from surety.hypervisor.restore_xml import genid_of
from surety.repo.image import ImageIndex
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.restore.image import write_image_file, write_private_file
from surety.restore.vm.hooks import RestoredDisk, RestoredVm, RestoreHook
from surety.restore.vm.plan import (
    CLONE,
    FORMATS,
    IN_PLACE,
    ExistingDomain,
    TargetFacts,
    VmRestoreOptions,
    VmRestorePlan,
    plan_vm_restore,
    resolve_identity,
)
from surety.restore.vm.switch import Staged, switch_over, temporary_name

__all__ = ["VmRestoreOptions", "VmRestoreResult", "restore_vm"]

DISK_PARALLELISM = 2  # disks written at once; each also fetches chunks in a thread pool


@dataclass(frozen=True)
class VmRestoreResult:
    vm: RestoredVm
    point: Manifest
    started: bool
    written: int  # data bytes written (zero chunks excluded)
    networks: dict[str, str]  # network of the point -> network used
    networks_created: tuple[str, ...]
    replaced: tuple[ExistingDomain, ...]
    superseded_files: tuple[str, ...]  # files of a replaced VM no longer used
    dropped_disks: tuple[str, ...]
    seconds: float


def restore_vm(
    repo: Repository,
    options: VmRestoreOptions,
    progress: Progress,
    hooks: Sequence[RestoreHook] = (),
    *,
    host: HypervisorHost,
) -> VmRestoreResult:
    """Restore ``options.point`` as a VM of ``host`` (the caller's, left open)."""
    _validate(options)
    began = time.monotonic()
    with repo.lock(exclusive=False, operation=f"restore vm {options.point}", read_only=True):
        point = repo.resolve(options.point)
        images = {d.name: repo.get_image(d.image) for d in point.disks}
        plan = _plan(host, point, options, images)
        for note in plan.notes:
            progress.note(note)
        _check_files(plan, options.force)
        _check_room(plan)
        staged, written = _stage(repo, plan, images, options, progress)
        outcome = switch_over(host, plan, staged, progress)
    vm = _restored_vm(plan, outcome.domain)
    started = _first_boot(vm, outcome.domain, options.start, hooks, progress)
    return VmRestoreResult(
        vm=vm,
        point=point,
        started=started,
        written=written,
        networks=dict(plan.networks),
        networks_created=outcome.networks_created,
        replaced=outcome.replaced,
        superseded_files=_superseded(plan),
        dropped_disks=plan.dropped_disks,
        seconds=time.monotonic() - began,
    )


def _validate(options: VmRestoreOptions) -> None:
    if options.format not in (None, *FORMATS):
        raise UsageError(f"unknown image format {options.format!r} (qcow2 or raw)")
    if options.identity not in (None, IN_PLACE, CLONE):
        raise UsageError(f"unknown identity mode {options.identity!r} (in-place or clone)")
    olds = [old for old, _new in options.network_map]
    if len(olds) != len(set(olds)):
        raise UsageError("--network-map names the same network twice")
    if options.storage is not None and not options.storage.is_dir():
        raise TargetError(f"--storage {options.storage} is not a directory")


def _plan(
    host: HypervisorHost,
    point: Manifest,
    options: VmRestoreOptions,
    images: dict[str, ImageIndex],
) -> VmRestorePlan:
    identity, name = resolve_identity(point, options)
    candidates = [host.find_domain(name=name)]
    if identity == IN_PLACE and point.source.get("uuid"):
        candidates.append(host.find_domain(uuid=point.source["uuid"]))
    domains = {d.uuid(): _existing(d) for d in candidates if d is not None}
    facts = TargetFacts(tuple(domains.values()), host.networks(), host_addresses(), host.uri)
    allocated = {target: image.allocated_bytes() for target, image in images.items()}
    return plan_vm_restore(point, options, allocated, facts)


def _existing(domain: HypervisorDomain) -> ExistingDomain:
    info = parse_domain(domain.xml(inactive=True))
    files = [d.source for d in info.disks] + ([info.nvram] if info.nvram else [])
    return ExistingDomain(domain.name, domain.uuid(), domain.is_running(), tuple(files))


def _final_paths(plan: VmRestorePlan) -> list[Path]:
    return [d.path for d in plan.disks] + ([plan.nvram] if plan.nvram else [])


def _check_files(plan: VmRestorePlan, force: bool) -> None:
    """Files at the final names may be replaced only if the replaced VM used them."""
    replaceable = {f for domain in plan.replace for f in domain.files}
    for path in _final_paths(plan):
        if not path.parent.is_dir():
            raise TargetError(f"{path.parent} is not a directory here; give --storage DIR")
        if not (path.exists() or path.is_symlink()):
            continue
        if not path.is_file() or path.is_symlink():
            raise TargetError(f"{path} exists and is not a regular file; not replacing it")
        if str(path) not in replaceable and not force:
            raise TargetError(
                f"{path} exists and is not a disk of the VM being replaced; "
                "remove it, give --storage DIR, or use --force to replace it"
            )


def _check_room(plan: VmRestorePlan) -> None:
    """The allocated data of every disk, plus raw copies while converting to qcow2."""
    by_filesystem: dict[int, list[int]] = {}
    directories: dict[int, Path] = {}
    for disk in plan.disks:
        device = disk.path.parent.stat().st_dev
        directories.setdefault(device, disk.path.parent)
        sums = by_filesystem.setdefault(device, [0, 0])
        sums[0] += disk.allocated + (disk.size // 8192 if disk.format == "qcow2" else 0)
        if disk.format == "qcow2":
            sums[1] = max(sums[1], disk.allocated)  # one raw copy of the largest in flight
    for device, (final, conversion) in by_filesystem.items():
        directory = directories[device]
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
        need = final + conversion * min(DISK_PARALLELISM, len(plan.disks))
        if need > free:
            raise TargetError(
                f"not enough room in {directory}: the restored disks need "
                f"{format_size(need)}"
                + (" (with a raw copy while converting to qcow2)" if conversion else "")
                + f", {format_size(free)} is free; give --storage DIR elsewhere"
            )


def _stage(
    repo: Repository,
    plan: VmRestorePlan,
    images: dict[str, ImageIndex],
    options: VmRestoreOptions,
    progress: Progress,
) -> tuple[list[Staged], int]:
    """Write everything under temporary names; on failure remove it all."""
    staged = [Staged(temporary_name(d.path), d.path) for d in plan.disks]
    try:
        written = _write_disks(
            repo, plan, images, staged, threads=options.threads, progress=progress
        )
        staged += _stage_firmware(plan)
    except BaseException:
        for item in staged:
            _remove(item.temporary)
        raise
    return staged, written


def _write_disks(
    repo: Repository,
    plan: VmRestorePlan,
    images: dict[str, ImageIndex],
    staged: list[Staged],
    *,
    threads: int | None,
    progress: Progress,
) -> int:
    repo.index()  # loaded once here, before the disk threads share it
    progress.phase(f"restore {plan.name}", sum(d.size for d in plan.disks))
    cancel = threading.Event()
    workers = min(DISK_PARALLELISM, len(plan.disks)) or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="surety-disk") as pool:
        futures = [
            pool.submit(
                write_image_file,
                repo,
                images[disk.target],
                item.temporary,
                disk.format,
                threads=threads,
                progress=progress,
                cancel=cancel,
            )
            for disk, item in zip(plan.disks, staged, strict=True)
        ]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except KeyboardInterrupt:
            cancel.set()
            raise Interrupted("restore interrupted; nothing was defined") from None
        cancel.set()  # stops the others if one failed; harmless when all are done
        wait(futures)
    _raise_first_failure(futures)
    return sum(f.result() for f in futures)


def _raise_first_failure(futures: list[Future[int]]) -> None:
    errors = [f.exception() for f in futures if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, Interrupted)] or errors
    if real:
        raise real[0]  # type: ignore[misc]


def _stage_firmware(plan: VmRestorePlan) -> list[Staged]:
    config = plan.point.config
    staged = []
    try:
        if plan.nvram is not None and "nvram.b64" in config:
            item = Staged(temporary_name(plan.nvram), plan.nvram)
            staged.append(item)
            write_private_file(item.temporary, base64.b64decode(config["nvram.b64"]))
        if plan.tpm_state is not None:
            item = Staged(temporary_name(plan.tpm_state), plan.tpm_state)
            staged.append(item)
            _remove(item.temporary)
            for key, text in config.items():
                if key.startswith("tpm/") and key.endswith(".b64"):
                    path = item.temporary / key[len("tpm/") : -len(".b64")]
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    write_private_file(path, base64.b64decode(text))
    except OSError as exc:
        for item in staged:
            _remove(item.temporary)
        raise TargetError(f"writing firmware state: {exc}") from exc
    return staged


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _restored_vm(plan: VmRestorePlan, domain: HypervisorDomain) -> RestoredVm:
    point = plan.point
    return RestoredVm(
        name=plan.name,
        uuid=domain.uuid(),
        identity=plan.identity,
        original_name=point.name,
        original_uuid=str(point.source.get("uuid", "")),
        point=point.id,
        consistency=point.consistency,
        disks=tuple(RestoredDisk(d.target, str(d.path), d.format, d.size) for d in plan.disks),
        nics=plan.nics,
        genid=genid_of(domain.xml(inactive=True)),
        nvram=str(plan.nvram) if plan.nvram else None,
        tpm_state=str(plan.tpm_state) if plan.tpm_state else None,
        applications=point.applications,
    )


def _first_boot(
    vm: RestoredVm,
    domain: HypervisorDomain,
    start: bool,
    hooks: Sequence[RestoreHook],
    progress: Progress,
) -> bool:
    for hook in hooks:
        hook.before_first_boot(vm, domain)
    if not start:
        return False
    progress.phase("start")
    try:
        domain.start()
    except SuretyError as exc:
        raise TargetError(f"{vm.name} is restored and defined, but did not start: {exc}") from exc
    for hook in hooks:
        hook.after_boot(vm, domain)
    return True


def _superseded(plan: VmRestorePlan) -> tuple[str, ...]:
    """Files the replaced VM used that the restored one does not: left for the user."""
    now = {str(p) for p in _final_paths(plan)}
    old = {f for domain in plan.replace for f in domain.files}
    return tuple(sorted(f for f in old - now if Path(f).exists()))
