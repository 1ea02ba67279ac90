"""Instant recovery, the pure parts: domain XML before and after ``finish``, disk states.

* ``instant_domain_xml``: the restore plan's XML (identity, networks, console
  logs already applied by ``restore.vm.plan``) with every disk a qcow2 overlay
  whose base is the NBD export of its detached server, given as an explicit
  network ``<backingStore>``.
* ``finished_domain_xml``: the running VM's live XML, once every disk was
  pivoted to its copy, made fit to define: flat qcow2 copies, no runtime state,
  console logs moved from the instant VM's directory to the storage directory.
* ``disk_states``: per disk target, the file QEMU uses now and whether a block
  copy of it is ready to pivot (libvirt's ``<mirror ready='yes'>``).

Knows nothing of libvirt calls, the repository or the CLI.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from surety.core.errors import TargetError
from surety.hypervisor.restore_xml import (
    DiskPlacement,
    DomainRewrite,
    chardev_files,
    rewrite_domain,
)
from surety.restore.instant.state import InstantDisk

__all__ = [
    "DiskState",
    "copy_destination_xml",
    "copy_path",
    "disk_states",
    "finished_domain_xml",
    "instant_domain_xml",
    "moved_chardev_files",
    "resumed_domain_xml",
]


@dataclass(frozen=True)
class DiskState:
    target: str
    source: str  # the file QEMU reads and writes now
    mirror: str | None  # destination of a block copy in progress
    ready: bool  # the copy caught up: it can be pivoted to


def instant_domain_xml(plan_xml: str, name: str, disks: Sequence[InstantDisk]) -> str:
    placements = tuple(
        DiskPlacement(d.target, d.overlay, "qcow2", backing_socket=d.socket) for d in disks
    )
    return rewrite_domain(plan_xml, DomainRewrite(name=name, disks=placements))


def resumed_domain_xml(saved_xml: str, name: str, disks: Sequence[InstantDisk]) -> str:
    """The instant VM again, from its saved live XML (same UUID, MACs, genid): each disk
    on its copy once that holds the newest data (``on_copy``), else on its overlay."""
    placements = tuple(
        DiskPlacement(d.target, d.copy, "qcow2")
        if d.on_copy and d.copy is not None
        else DiskPlacement(d.target, d.overlay, "qcow2", backing_socket=d.socket)
        for d in disks
    )
    return rewrite_domain(saved_xml, DomainRewrite(name=name, disks=placements))


def copy_path(storage: Path, name: str, target: str) -> Path:
    return storage / f"{name}-{target}.qcow2"


def copy_destination_xml(path: str) -> str:
    """The ``<disk>`` a block copy writes: a new qcow2 file (libvirt creates it)."""
    return (
        f"<disk type='file'><source file={quoteattr(path)}/>"
        "<driver name='qemu' type='qcow2'/></disk>"
    )


def finished_domain_xml(
    live_xml: str,
    name: str,
    disks: Sequence[InstantDisk],
    vm_dir: Path,
    storage: Path,
    *,
    nvram: str | None = None,
) -> str:
    """The definition of the finished VM (every disk on its copy, NVRAM at ``nvram``)."""
    missing = [d.target for d in disks if d.copy is None]
    if missing:
        raise TargetError(f"{name}: no copy recorded for {', '.join(missing)}")
    placements = tuple(DiskPlacement(d.target, str(d.copy), "qcow2") for d in disks)
    logs = moved_chardev_files(live_xml, vm_dir, storage)
    rewrite = DomainRewrite(name=name, disks=placements, nvram=nvram, chardev_files=logs)
    return rewrite_domain(live_xml, rewrite)


def moved_chardev_files(live_xml: str, vm_dir: Path, storage: Path) -> dict[str, str]:
    """Console logs in the instant VM's directory -> their place in ``storage``."""
    return {
        path: str(storage / Path(path).name)
        for path in chardev_files(live_xml)
        if Path(path).parent == vm_dir
    }


def disk_states(live_xml: str) -> dict[str, DiskState]:
    try:
        root = ET.fromstring(live_xml)  # noqa: S314 - XML from the local libvirt daemon
    except ET.ParseError as exc:
        raise TargetError(f"cannot parse the live domain XML: {exc}") from exc
    states = {}
    for disk in root.findall("./devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is None or source is None:
            continue
        mirror = disk.find("mirror")
        mirror_source = mirror.find("source") if mirror is not None else None
        mirror_file = None
        if mirror is not None:
            mirror_file = mirror.get("file") or (
                mirror_source.get("file") if mirror_source is not None else None
            )
        dev = target.get("dev", "")
        states[dev] = DiskState(
            dev,
            source.get("file") or source.get("dev") or "",
            mirror_file,
            mirror is not None and mirror.get("ready") == "yes",
        )
    return states
