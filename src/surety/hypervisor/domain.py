"""Domain XML facts surety needs (pure: parses strings, no libvirt calls).

Which disks a backup covers (device ``disk``, file or block source, not
read-only, not shareable), which libvirt networks the NICs attach to, and
firmware files (NVRAM) and TPM state that a restore point must carry.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from surety.core.errors import SourceError

__all__ = ["DomainDisk", "DomainInfo", "parse_domain"]


@dataclass(frozen=True)
class DomainDisk:
    target: str  # vda
    source: str  # file path or block device
    source_type: str  # file | block
    driver: str  # qcow2 | raw


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    domain_type: str  # kvm | qemu
    disks: tuple[DomainDisk, ...]
    all_targets: tuple[str, ...]  # every <disk> target, backed up or not
    skipped_disks: tuple[str, ...]  # targets not backed up, with the reason
    networks: tuple[str, ...]
    nvram: str | None
    has_tpm: bool


def parse_domain(xml: str) -> DomainInfo:
    try:
        root = ET.fromstring(xml)  # noqa: S314 - XML comes from the local libvirt daemon
    except ET.ParseError as exc:
        raise SourceError(f"cannot parse domain XML: {exc}") from exc
    disks, skipped, all_targets = [], [], []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        dev = target.get("dev", "?") if target is not None else "?"
        all_targets.append(dev)
        reason = _skip_reason(disk)
        if reason:
            skipped.append(f"{dev} ({reason})")
            continue
        source = disk.find("source")
        driver = disk.find("driver")
        path = source.get("file") or source.get("dev") if source is not None else None
        disks.append(
            DomainDisk(
                dev,
                path or "",
                disk.get("type", "file"),
                driver.get("type", "raw") if driver is not None else "raw",
            )
        )
    networks = tuple(
        sorted(
            {
                src.get("network", "")
                for src in root.findall("./devices/interface[@type='network']/source")
            }
            - {""}
        )
    )
    nvram = root.find("./os/nvram")
    return DomainInfo(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        domain_type=root.get("type", ""),
        disks=tuple(disks),
        all_targets=tuple(all_targets),
        skipped_disks=tuple(skipped),
        networks=networks,
        nvram=nvram.text if nvram is not None and nvram.text else None,
        has_tpm=root.find("./devices/tpm") is not None,
    )


def _skip_reason(disk: ET.Element) -> str:
    if disk.get("device", "disk") != "disk":
        return f"device {disk.get('device')}"
    if disk.get("type", "file") not in ("file", "block"):
        return f"source type {disk.get('type')} not supported"
    if disk.find("readonly") is not None:
        return "read-only"
    if disk.find("shareable") is not None:
        return "shareable"
    if disk.find("source") is None:
        return "no medium"
    return ""
