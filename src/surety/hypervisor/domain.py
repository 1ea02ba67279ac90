"""Domain XML facts surety needs (pure: parses strings, no libvirt calls).

Which disks a backup covers (device ``disk``, file or block source, not
read-only, not shareable), which libvirt networks the NICs attach to, and
firmware files (NVRAM) and TPM state that a restore point must carry; and
the admin's tags (``port.TAGS_NS`` metadata) both ways.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from surety.core.errors import SourceError
from surety.hypervisor.port import TAGS_NS

__all__ = [
    "DomainDisk",
    "DomainInfo",
    "domain_tags",
    "parse_domain",
    "parse_tags",
    "tags_xml",
    "with_tags",
]


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


def tags_xml(tags: tuple[str, ...]) -> str:
    """The metadata element for ``tags`` (libvirt puts it in ``TAGS_NS``)."""
    root = ET.Element("tags")
    for tag in tags:
        ET.SubElement(root, "tag").text = tag
    return ET.tostring(root, encoding="unicode")


def parse_tags(xml: str) -> tuple[str, ...]:
    """Tags from the metadata element: every ``tag`` child, namespaced or not (an
    admin's ``virsh edit`` may leave them in no namespace)."""
    try:
        root = ET.fromstring(xml)  # noqa: S314 - XML from the local libvirt daemon
    except ET.ParseError as exc:
        raise SourceError(f"cannot parse the surety tags metadata: {exc}") from exc
    found = [
        (child.text or "").strip()
        for child in root.iter()
        if child is not root and child.tag.rsplit("}", 1)[-1] == "tag"
    ]
    return tuple(tag for tag in found if tag)


def domain_tags(xml: str) -> tuple[str, ...]:
    """The tags in a whole domain XML (``<metadata>``'s ``TAGS_NS`` element); ``()``."""
    root = _root(xml)
    element = root.find(f"./metadata/{{{TAGS_NS}}}tags")
    return parse_tags(ET.tostring(element, encoding="unicode")) if element is not None else ()


def with_tags(xml: str, tags: tuple[str, ...]) -> str:
    """``xml`` with its ``TAGS_NS`` metadata element replaced by ``tags`` (removed
    for ``()``), as libvirt's ``setMetadata`` leaves it."""
    root = _root(xml)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    for old in metadata.findall(f"{{{TAGS_NS}}}tags"):
        metadata.remove(old)
    if tags:
        element = ET.SubElement(metadata, f"{{{TAGS_NS}}}tags")
        for tag in tags:
            ET.SubElement(element, f"{{{TAGS_NS}}}tag").text = tag
    if not len(metadata):
        root.remove(metadata)
    ET.register_namespace("surety", TAGS_NS)
    return ET.tostring(root, encoding="unicode")


def _root(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - XML from the local libvirt daemon
    except ET.ParseError as exc:
        raise SourceError(f"cannot parse domain XML: {exc}") from exc
