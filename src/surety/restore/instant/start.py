"""Instant recovery, first half: run a VM straight from a restore point.

``start_instant`` serves every disk of the point from its own detached NBD
server (``restore.export.start_detached_server``: it outlives this process and
holds a shared repository lock itself), puts a local qcow2 overlay over each
export, and starts a *transient* libvirt domain on the overlays: the guest
boots as fast as a normal boot, reads fall through to the repository, writes
stay in the overlays. Nothing persistent points at the repository: if the
host or libvirt restarts, no definition is left that cannot start.

A failure in ``start_instant`` before the VM runs undoes everything it made
(``discard``, which ``abort`` uses too). ``wait_for_guest`` (also used by
``resume``) reports when the guest agent answers and the application is ready.
"""

from __future__ import annotations

import base64
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import SuretyError, TargetError, UsageError
from surety.core.progress import Progress
from surety.hypervisor.guest_agent import AgentChannel
from surety.hypervisor.hostnet import host_addresses
from surety.hypervisor.images import create_overlay
from surety.hypervisor.port import GuestAgentError, HypervisorDomain, HypervisorHost
from surety.hypervisor.qemu_user import qemu_ids
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.repo.storage import LocalStorage, Storage
from surety.repo.storage.wrapper import StorageWrapper
from surety.restore.export import start_detached_server, stop_server
from surety.restore.image import write_private_file
from surety.restore.instant.plan import instant_domain_xml
from surety.restore.instant.state import (
    RUNNING,
    STARTING,
    InstantDisk,
    InstantVm,
    load_instant_vm,
    save_instant_vm,
)
from surety.restore.vm import (
    IN_PLACE,
    TargetFacts,
    VmRestoreOptions,
    VmRestorePlan,
    plan_vm_restore,
    resolve_identity,
)

__all__ = [
    "DEFAULT_ROOT",
    "DOMAIN_FILE",
    "InstantOptions",
    "InstantResult",
    "discard",
    "start_instant",
    "wait_for_guest",
]

DEFAULT_ROOT = Path("/var/lib/surety/instant")
DOMAIN_FILE = "domain.xml"  # the instant VM's live XML as it started (for resume)


@dataclass(frozen=True)
class InstantOptions:
    point: str
    name: str | None = None  # --as; default: the original name (in place)
    identity: str | None = None  # in-place | clone; default from the name
    network_map: tuple[tuple[str, str], ...] = ()
    root: Path = DEFAULT_ROOT  # where instant VMs keep their records and overlays
    wait: bool = True  # wait for the guest agent
    ready_command: str | None = None  # shell command in the guest that says "app ready"
    timeout: float = 900.0


@dataclass(frozen=True)
class InstantResult:
    vm: InstantVm
    seconds_to_start: float  # command -> the VM runs
    seconds_to_ping: float | None  # command -> guest-ping answered
    seconds_to_ready: float | None  # command -> ready_command succeeded
    notes: tuple[str, ...]


def start_instant(
    repo: Repository,
    options: InstantOptions,
    progress: Progress,
    began: float | None = None,
    *,
    host: HypervisorHost,
) -> InstantResult:
    """Run ``options.point`` as a transient VM of ``host`` (the caller's, left open)."""
    began = time.monotonic() if began is None else began
    repository_location(repo.storage)  # a kind of repository that cannot be served: refused now
    with repo.lock(exclusive=False, operation=f"instant-recover {options.point}", read_only=True):
        point = repo.resolve(options.point)
        _check_point(point)
        plan = _plan(host, point, options)
        for note in plan.notes:
            progress.note(note)
        vm, domain = _launch(repo, host, plan, options, progress)
    started = time.monotonic() - began
    ping = ready = None
    if options.wait:
        ping, ready = wait_for_guest(domain, options, began, progress)
    return InstantResult(vm, started, ping, ready, plan.notes)


def repository_location(storage: Storage) -> str:
    """Where the repository is, as ``--repo`` takes it: a local repository's absolute
    path or ``s3://BUCKET/PREFIX`` (recorded in the state for ``resume``).
    ``UsageError`` for a storage an NBD server cannot reopen (memory)."""
    inner = storage
    while isinstance(inner, StorageWrapper):
        inner = inner.inner
    if isinstance(inner, LocalStorage):
        return str(inner.root.resolve())
    described = inner.describe()
    if not described.startswith("s3://"):
        raise UsageError(f"{described}: instant recovery cannot serve this kind of repository")
    return described


def _check_point(point: Manifest) -> None:
    if point.kind != "vm" or "domain.xml" not in point.config:
        raise UsageError(
            f"restore point {point.id[:12]} is a disk image backup: instant recovery needs a VM"
        )
    if any(key.startswith("tpm/") for key in point.config):
        raise UsageError(
            f"restore point {point.id[:12]} carries TPM state, which instant recovery "
            "does not restore yet: use `surety restore vm`"
        )


def _plan(host: HypervisorHost, point: Manifest, options: InstantOptions) -> VmRestorePlan:
    restore_options = VmRestoreOptions(
        point.id,
        options.name,
        options.identity,
        storage=options.root / (options.name or point.name),
        format="qcow2",
        network_map=options.network_map,
        start=True,
    )
    identity, name = resolve_identity(point, restore_options)
    if load_instant_vm(options.root, name) is not None:
        raise TargetError(
            f"an instant VM named {name} exists already (`surety instant-recover list`)"
        )
    existing = host.find_domain(name=name)
    if identity == IN_PLACE and existing is None and point.source.get("uuid"):
        existing = host.find_domain(uuid=point.source["uuid"])
    if existing is not None:
        if identity == IN_PLACE:
            state = "is running" if existing.is_running() else "is defined"
            raise TargetError(
                f"VM {existing.name} {state}: instant recovery in place needs it gone "
                f"(shut it down and `virsh undefine {existing.name}`), or use --as NEW for a clone"
            )
        raise TargetError(f"a VM named {name} exists already; choose another with --as NAME")
    facts = TargetFacts((), host.networks(), host_addresses(), host.uri)
    return plan_vm_restore(point, restore_options, {}, facts)


def _launch(
    repo: Repository,
    host: HypervisorHost,
    plan: VmRestorePlan,
    options: InstantOptions,
    progress: Progress,
) -> tuple[InstantVm, HypervisorDomain]:
    """Servers, overlays, the transient VM; on any failure everything made is undone."""
    vm_dir = options.root / plan.name
    options.root.mkdir(mode=0o711, parents=True, exist_ok=True)
    try:
        vm_dir.mkdir(mode=0o711)
    except FileExistsError:
        raise TargetError(f"{vm_dir} exists: remove it, or choose another name") from None
    record = InstantVm(
        plan.name,
        str(vm_dir),
        plan.point.id,
        plan.point.name,
        repository_location(repo.storage),
        plan.identity,
        STARTING,
        time.time(),
    )
    domain: HypervisorDomain | None = None
    try:
        save_instant_vm(record)
        for network, xml in plan.create_networks:
            host.create_network(xml)
            progress.note(f"network {network} was recreated from the restore point")
        record = _serve_disks(repo, plan, record, progress)
        if plan.nvram is not None and "nvram.b64" in plan.point.config:
            write_private_file(plan.nvram, base64.b64decode(plan.point.config["nvram.b64"]))
            record = record.with_phase(STARTING, nvram=str(plan.nvram))
        progress.phase(f"start {plan.name}")
        domain = host.create_transient(instant_domain_xml(plan.xml, plan.name, record.disks))
        record = record.with_phase(RUNNING, uuid=domain.uuid())
        write_private_file(vm_dir / DOMAIN_FILE, domain.xml().encode())  # with its genid: resume
        save_instant_vm(record)
    except BaseException:
        discard(record, domain)
        raise
    return record, domain


def _serve_disks(
    repo: Repository, plan: VmRestorePlan, record: InstantVm, progress: Progress
) -> InstantVm:
    client = qemu_ids()
    vm_dir = Path(record.directory)
    for disk in plan.disks:
        progress.phase(f"serve {disk.target}")
        entry = InstantDisk(
            disk.target,
            disk.size,
            repo.get_image(disk.image).allocated_bytes(),
            str(disk.path),
            str(vm_dir / f"serve-{disk.target}"),
        )
        record = record.with_disk(entry)
        save_instant_vm(record)  # before the server starts: abort finds it after a kill
        server = start_detached_server(
            repo, plan.point.id, disk.target, workdir=Path(entry.server_dir), client=client
        )
        create_overlay(disk.path, server.uri, disk.size)
        disk.path.chmod(0o600)
    return record


def discard(record: InstantVm, domain: HypervisorDomain | None) -> None:
    """Destroy the instant VM (if given), stop its servers, delete its files.

    Copies on production storage recorded by an unfinished ``finish`` go too.
    """
    if domain is not None:
        with suppress(SuretyError):
            if domain.is_running():
                domain.destroy()
    for disk in record.disks:
        stop_server(disk.pid_file)
        if disk.copy is not None:
            Path(disk.copy).unlink(missing_ok=True)
    shutil.rmtree(record.directory, ignore_errors=True)


def wait_for_guest(
    domain: HypervisorDomain, options: InstantOptions, began: float, progress: Progress
) -> tuple[float | None, float | None]:
    """Seconds from ``began`` until guest-ping answers, and until ``ready_command`` succeeds."""
    deadline = began + options.timeout
    progress.phase(f"boot {domain.name}: waiting for the guest agent")
    channel = AgentChannel(domain)
    while not _answers(channel):
        if not domain.is_running():
            raise TargetError(f"{domain.name} stopped while booting")
        if time.monotonic() > deadline:
            progress.note(f"the guest agent did not answer within {options.timeout:.0f} s")
            return None, None
        time.sleep(0.5)
    ping = time.monotonic() - began
    if not options.ready_command:
        return ping, None
    progress.phase(f"boot {domain.name}: waiting until ready")
    while not _succeeds(channel, options.ready_command):
        if time.monotonic() > deadline:
            progress.note(f"`{options.ready_command}` did not succeed in {options.timeout:.0f} s")
            return ping, None
        time.sleep(0.5)
    return ping, time.monotonic() - began


def _answers(channel: AgentChannel) -> bool:
    try:
        channel.ping(timeout=2)
    except GuestAgentError:
        return False
    return True


def _succeeds(channel: AgentChannel, command: str) -> bool:
    try:
        return channel.run(["sh", "-c", command], timeout=30).ok
    except GuestAgentError:
        return False
