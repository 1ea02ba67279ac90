"""Plan of a full VM restore (pure): identity, disk placement, networks, conflicts.

Everything that can refuse a restore is decided here, from the restore point
and facts read from the target host beforehand, so a restore that cannot
succeed stops before anything is written (DESIGN.md, Invariant 6).

Identity modes:
- ``in-place`` (disaster recovery; the default unless ``--as`` names another
  VM): same name, UUID, MAC addresses and VM generation id. A VM holding the
  name or UUID is replaced if it is this VM and shut off; a running one, or
  another VM, only with ``force``.
- ``clone`` (test copy; the default with ``--as NEW``): new UUID, a new MAC
  for every NIC, a new ``<genid/>``; writable disks the point does not hold
  are left out (a copy must not write the original's disks). A VM of the new
  name is replaced only with ``force``.

Disks go to ``STORAGE/NAME-<target>.qcow2`` (``.img`` for raw); without
``--storage`` each disk goes to the directory its original lived in, so a
clone lands beside the original under its own name. Block-device disks
need ``--storage``. NVRAM goes beside the first disk (``NAME_VARS.fd``);
swtpm state to libvirt's ``<tpm root>/<uuid>``.

Networks of ``<interface type='network'>`` NICs: mapped with
``--network-map OLD=NEW`` (NEW must exist), used as they are when they exist,
else recreated from the point's saved XML if its bridge and subnets clash with
nothing here, else refused.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import TargetError, UsageError
from surety.hypervisor.domain import DomainDisk, DomainInfo, parse_domain
from surety.hypervisor.hostnet import HostAddresses
from surety.hypervisor.restore_xml import (
    DiskPlacement,
    DomainRewrite,
    NetworkFacts,
    can_have_genid,
    chardev_files,
    domain_interfaces,
    network_clashes,
    network_facts,
    network_for_recreate,
    new_mac,
    rewrite_domain,
    writable_disks,
)
from surety.repo.manifest import Manifest
from surety.restore.vm.hooks import RestoredNic

__all__ = [
    "CLONE",
    "IN_PLACE",
    "DiskPlan",
    "ExistingDomain",
    "TargetFacts",
    "VmRestoreOptions",
    "VmRestorePlan",
    "plan_vm_restore",
    "resolve_identity",
]

IN_PLACE, CLONE = "in-place", "clone"
FORMATS = {"qcow2": ".qcow2", "raw": ".img"}
DEFAULT_TPM_ROOT = Path("/var/lib/libvirt/swtpm")


@dataclass(frozen=True)
class VmRestoreOptions:
    point: str
    name: str | None = None  # --as; default: the original name
    identity: str | None = None  # in-place | clone; default from the name
    storage: Path | None = None  # default: beside each original disk
    format: str | None = None  # qcow2 | raw; default: each disk's original format
    network_map: tuple[tuple[str, str], ...] = ()
    start: bool = False
    force: bool = False
    threads: int | None = None
    tpm_root: Path = DEFAULT_TPM_ROOT


@dataclass(frozen=True)
class ExistingDomain:
    """A VM on the target that holds the restored VM's name or UUID."""

    name: str
    uuid: str
    running: bool
    files: tuple[str, ...] = ()  # its disk and NVRAM files


@dataclass(frozen=True)
class TargetFacts:
    """What the target host has, read before planning."""

    domains: tuple[ExistingDomain, ...]
    networks: Mapping[str, tuple[bool, str]]  # name -> (active, XML)
    host_addresses: HostAddresses
    where: str = "the target host"  # for messages: the hypervisor's URI


@dataclass(frozen=True)
class DiskPlan:
    target: str
    image: str  # image index id
    size: int
    allocated: int  # bytes of non-zero chunks
    path: Path
    format: str


@dataclass(frozen=True)
class VmRestorePlan:
    point: Manifest
    identity: str
    name: str
    uuid: str
    xml: str  # the domain XML to define
    disks: tuple[DiskPlan, ...]
    nics: tuple[RestoredNic, ...]
    nvram: Path | None
    tpm_state: Path | None
    networks: Mapping[str, str]  # network of the point -> network used
    create_networks: tuple[tuple[str, str], ...]  # (name, XML) to recreate
    replace: tuple[ExistingDomain, ...]
    dropped_disks: tuple[str, ...]
    notes: tuple[str, ...]


def resolve_identity(point: Manifest, options: VmRestoreOptions) -> tuple[str, str]:
    """(identity mode, target name) from ``--as`` and ``--identity``."""
    name = options.name or point.name
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} cannot be a VM name")
    identity = options.identity or (IN_PLACE if name == point.name else CLONE)
    if identity not in (IN_PLACE, CLONE):
        raise UsageError(f"unknown identity mode {identity!r} (in-place or clone)")
    if identity == IN_PLACE and name != point.name:
        raise UsageError(
            f"--identity in-place keeps the name {point.name!r}: drop --as, or use --identity clone"
        )
    return identity, name


def plan_vm_restore(
    point: Manifest,
    options: VmRestoreOptions,
    allocated: Mapping[str, int],
    facts: TargetFacts,
    *,
    make_mac: Callable[[], str] = new_mac,
    make_uuid: Callable[[], str] = lambda: str(uuid_module.uuid4()),
) -> VmRestorePlan:
    if point.kind != "vm" or "domain.xml" not in point.config:
        raise UsageError(
            f"restore point {point.id[:12]} is a disk image backup: use `surety restore image`"
        )
    identity, name = resolve_identity(point, options)
    xml = point.config["domain.xml"]
    info = parse_domain(xml)
    clone = identity == CLONE
    uuid = make_uuid() if clone else info.uuid
    replace = _conflicts(identity, name, info.uuid, facts, options.force)
    disks = _place_disks(point, info, options, name, allocated)
    networks, create, notes = _plan_networks(point, info, options, facts)
    interfaces = domain_interfaces(xml)
    macs = _new_macs([i.mac for i in interfaces], make_mac) if clone else None
    nics = tuple(
        RestoredNic(
            i.type,
            macs[n] if macs else i.mac or "",
            i.mac,
            networks.get(i.network, i.network) if i.network else None,
        )
        for n, i in enumerate(interfaces)
    )
    in_point = {d.name for d in point.disks}
    left_out = [t for t in writable_disks(xml) if t not in in_point]
    dropped = tuple(left_out) if clone else ()
    if left_out:
        notes.append(
            f"disk(s) {', '.join(left_out)} are not in the restore point: "
            + ("left out of the clone" if clone else "kept in the definition as they are")
        )
    home = disks[0].path.parent if disks else None  # firmware and logs go beside the disks
    nvram = home / f"{name}_VARS.fd" if info.nvram and home else None
    logs = {f: str(home / f"{name}-{Path(f).name}") for f in chardev_files(xml)} if home else {}
    has_tpm = any(key.startswith("tpm/") for key in point.config)
    tpm_state = options.tpm_root / uuid if has_tpm else None
    rewrite = DomainRewrite(
        name=name,
        uuid=uuid if clone else None,
        macs=macs,
        new_genid=clone and can_have_genid(xml),
        disks=tuple(DiskPlacement(d.target, str(d.path), d.format) for d in disks),
        drop_disks=dropped,
        networks=networks,
        nvram=str(nvram) if nvram else None,
        chardev_files=logs if clone else {},
    )
    return VmRestorePlan(
        point=point,
        identity=identity,
        name=name,
        uuid=uuid,
        xml=rewrite_domain(xml, rewrite),
        disks=disks,
        nics=nics,
        nvram=nvram,
        tpm_state=tpm_state,
        networks=networks,
        create_networks=tuple(create),
        replace=replace,
        dropped_disks=dropped,
        notes=tuple(notes),
    )


def _conflicts(
    identity: str, name: str, point_uuid: str, facts: TargetFacts, force: bool
) -> tuple[ExistingDomain, ...]:
    found = [
        d
        for d in facts.domains
        if d.name == name or (identity == IN_PLACE and d.uuid == point_uuid)
    ]
    for domain in found if not force else []:
        if domain.running:
            raise TargetError(
                f"VM {domain.name} exists and is running; shut it down first, or use --force "
                "to stop and replace it once the restored disks are written and verified"
            )
        if identity == CLONE or domain.name != name or domain.uuid != point_uuid:
            held = "name" if domain.name == name else f"UUID {point_uuid}"
            raise TargetError(
                f"VM {domain.name} (UUID {domain.uuid}) already holds the {held} of the "
                "restored VM; choose another name with --as NAME, or use --force to replace it"
            )
    return tuple(found)


def _place_disks(
    point: Manifest,
    info: DomainInfo,
    options: VmRestoreOptions,
    name: str,
    allocated: Mapping[str, int],
) -> tuple[DiskPlan, ...]:
    originals = {d.target: d for d in info.disks}
    plans = []
    for record in point.disks:
        original = originals.get(record.name)
        fmt = options.format or (original.driver if original else "qcow2")
        fmt = fmt if fmt in FORMATS else "qcow2"
        directory = options.storage or _original_directory(record.name, original)
        plans.append(
            DiskPlan(
                record.name,
                record.image,
                record.size,
                allocated.get(record.name, record.size),
                directory / f"{name}-{record.name}{FORMATS[fmt]}",
                fmt,
            )
        )
    return tuple(plans)


def _original_directory(target: str, original: DomainDisk | None) -> Path:
    if original is None or original.source_type != "file" or not original.source.startswith("/"):
        where = f"block device {original.source}" if original else "an unknown place"
        raise UsageError(
            f"disk {target} was on {where}: give --storage DIR to restore the disks as files"
        )
    return Path(original.source).parent


def _plan_networks(
    point: Manifest, info: DomainInfo, options: VmRestoreOptions, facts: TargetFacts
) -> tuple[dict[str, str], list[tuple[str, str]], list[str]]:
    wanted = dict(options.network_map)
    stray = sorted(set(wanted) - set(info.networks))
    if stray:
        raise UsageError(
            f"--network-map {stray[0]}=...: the VM has no NIC on network {stray[0]} "
            f"(it uses: {', '.join(info.networks) or 'none'})"
        )
    known = [network_facts(xml) for _active, xml in facts.networks.values()]
    mapping: dict[str, str] = {}
    create: list[tuple[str, str]] = []
    notes: list[str] = []
    for network in info.networks:
        if network in wanted:
            if wanted[network] not in facts.networks:
                raise TargetError(
                    f"--network-map {network}={wanted[network]}: there is no network "
                    f"{wanted[network]} on {facts.where}"
                )
            mapping[network] = wanted[network]
        elif network not in facts.networks:
            saved = _recreatable(point, network, known, facts.host_addresses)
            known.append(network_facts(saved))
            create.append((network, network_for_recreate(saved)))
            mapping[network] = network
            notes.append(f"network {network} will be recreated from the restore point")
        else:
            mapping[network] = network
        used = mapping[network]
        if used in facts.networks and not facts.networks[used][0]:
            if options.start:
                raise TargetError(
                    f"network {used} is not active, so the VM cannot start: "
                    f"`virsh net-start {used}` first, or map it with --network-map"
                )
            notes.append(f"network {used} is not active; the VM starts once it is")
    return mapping, create, notes


def _recreatable(
    point: Manifest, network: str, known: list[NetworkFacts], host_addresses: HostAddresses
) -> str:
    saved = point.config.get(f"network/{network}.xml")
    if saved is None:
        raise TargetError(
            f"the VM has a NIC on network {network}, which does not exist here and is not "
            f"saved in the restore point; map it with --network-map {network}=NETWORK"
        )
    clashes = network_clashes(network_facts(saved), known, host_addresses)
    if clashes:
        raise TargetError(
            f"network {network} cannot be recreated from the restore point "
            f"({'; '.join(clashes)}); map it to an existing network with "
            f"--network-map {network}=NETWORK"
        )
    return saved


def _new_macs(old: list[str | None], make_mac: Callable[[], str]) -> tuple[str, ...]:
    taken = {m.lower() for m in old if m}
    macs: list[str] = []
    while len(macs) < len(old):
        mac = make_mac().lower()
        if mac not in taken:
            taken.add(mac)
            macs.append(mac)
    return tuple(macs)
