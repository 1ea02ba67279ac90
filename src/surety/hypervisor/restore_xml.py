"""Domain and network XML for a restored VM (pure: strings in, strings out).

A restore point keeps the *live* domain XML of the instant it was taken. To
define it again, ``rewrite_domain`` applies the restore plan: name, UUID,
MAC addresses and VM generation id (clone) or none of them (in-place), new
disk sources and formats, networks mapped to their restored names, NVRAM
beside the disks. It also drops what only a running domain has (``id``,
device aliases, tap names, network port ids, backing chains of the original
images, dynamic security labels): the restored disks are flat images.

Networks: ``network_facts`` reads a libvirt network's bridge and subnets,
``network_clashes`` says why a saved network cannot be recreated beside the
existing ones, ``network_for_recreate`` drops its identity (UUID, bridge MAC).

Knows nothing of libvirt calls, the repository or the CLI.
"""

from __future__ import annotations

import io
import ipaddress
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from surety.core.errors import IntegrityError

__all__ = [
    "DiskPlacement",
    "DomainRewrite",
    "Interface",
    "NetworkFacts",
    "can_have_genid",
    "chardev_files",
    "domain_interfaces",
    "genid_of",
    "network_clashes",
    "network_facts",
    "network_for_recreate",
    "new_mac",
    "onto_taps",
    "rewrite_domain",
    "writable_disks",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RUNTIME_TAP_PREFIXES = ("vnet", "macvtap", "macvlan", "vif")
CHARDEVS = ("serial", "console", "channel", "parallel")


@dataclass(frozen=True)
class Interface:
    """One ``<interface>`` of a domain, in document order."""

    type: str  # network | bridge | user | direct | ...
    mac: str | None
    network: str | None  # for type network
    bridge: str | None  # for type bridge


@dataclass(frozen=True)
class DiskPlacement:
    """Where a restored disk lives: a plain file of this format."""

    target: str  # vda
    path: str
    format: str  # qcow2 | raw
    backing_socket: str | None = None  # qcow2 overlay over a raw NBD export on this unix socket


@dataclass(frozen=True)
class DomainRewrite:
    name: str
    uuid: str | None = None  # None: keep the original UUID
    macs: tuple[str, ...] | None = None  # one per <interface> in order; None: keep
    new_genid: bool = False  # clone: a new VM generation id (libvirt makes it)
    disks: tuple[DiskPlacement, ...] = ()
    drop_disks: tuple[str, ...] = ()  # targets removed from the definition
    networks: Mapping[str, str] = field(default_factory=dict)  # old network -> network to use
    nvram: str | None = None  # new NVRAM file path
    chardev_files: Mapping[str, str] = field(default_factory=dict)  # old -> new log/file path


def _parse(xml: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - XML from our own repository / libvirt
    except ET.ParseError as exc:
        raise IntegrityError(f"{what}: cannot parse the saved XML: {exc}") from exc


def domain_interfaces(xml: str) -> tuple[Interface, ...]:
    root = _parse(xml, "domain XML")
    found = []
    for iface in root.findall("./devices/interface"):
        mac, source = iface.find("mac"), iface.find("source")
        found.append(
            Interface(
                iface.get("type", ""),
                mac.get("address") if mac is not None else None,
                source.get("network") if source is not None else None,
                source.get("bridge") if source is not None else None,
            )
        )
    return tuple(found)


def writable_disks(xml: str) -> tuple[str, ...]:
    """Targets of every disk the VM can write (not CD-ROMs, not read-only)."""
    root = _parse(xml, "domain XML")
    return tuple(
        target.get("dev", "")
        for disk in root.findall("./devices/disk")
        if disk.get("device", "disk") == "disk" and disk.find("readonly") is None
        for target in disk.findall("target")
    )


def genid_of(xml: str) -> str | None:
    """The VM generation id of a defined domain, if it has one."""
    return _parse(xml, "domain XML").findtext("genid") or None


def can_have_genid(xml: str) -> bool:
    """A VM generation id needs x86 with ACPI (QEMU's vmgenid device)."""
    root = _parse(xml, "domain XML")
    os_type = root.find("./os/type")
    arch = os_type.get("arch") if os_type is not None else None
    x86_acpi = arch in ("x86_64", "i686") and root.find("./features/acpi") is not None
    return x86_acpi or root.find("genid") is not None


def new_mac(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A random MAC in QEMU/KVM's locally administered range 52:54:00:xx:xx:xx."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in token_bytes(3))


def rewrite_domain(xml: str, rewrite: DomainRewrite) -> str:
    root = _parse(xml, "domain XML")
    _drop_runtime_state(root)
    _set_identity(root, rewrite)
    devices = root.find("devices")
    if devices is not None:
        _place_disks(devices, rewrite)
        _set_interfaces(devices, rewrite)
        _set_chardev_files(devices, rewrite.chardev_files)
    if rewrite.nvram is not None:
        _set_nvram(root, rewrite.nvram)
    return _serialize(root, xml)


def _serialize(root: ET.Element, original: str) -> str:
    """The XML text, keeping the namespace prefixes of ``original`` (e.g. ``qemu:``)."""
    namespaces = ET.iterparse(io.StringIO(original), events=("start-ns",))  # noqa: S314
    for _event, (prefix, uri) in namespaces:
        with suppress(ValueError):  # prefixes like ns0 are ElementTree's own
            ET.register_namespace(prefix, uri)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _drop_runtime_state(root: ET.Element) -> None:
    root.attrib.pop("id", None)
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == "alias" and not child.get("name", "").startswith("ua-"):
                parent.remove(child)
    for disk in root.findall("./devices/disk"):
        for stale in disk.findall("backingStore") + disk.findall("mirror"):
            disk.remove(stale)
        source = disk.find("source")
        if source is not None:
            source.attrib.pop("index", None)
    for iface in root.findall("./devices/interface"):
        target = iface.find("target")
        if target is not None and target.get("dev", "").startswith(RUNTIME_TAP_PREFIXES):
            iface.remove(target)
        source = iface.find("source")
        if source is not None and iface.get("type") == "network":
            source.attrib.pop("portid", None)
            source.attrib.pop("bridge", None)
    for target in root.findall("./devices/channel/target"):
        target.attrib.pop("state", None)
    for label in root.findall("./seclabel[@type='dynamic']"):
        for stale in label.findall("label") + label.findall("imagelabel"):
            label.remove(stale)


def _set_identity(root: ET.Element, rewrite: DomainRewrite) -> None:
    _child(root, "name", before="uuid").text = rewrite.name
    if rewrite.uuid is not None:
        old = root.findtext("uuid")
        _child(root, "uuid", after="name").text = rewrite.uuid
        for entry in root.findall("./sysinfo/system/entry[@name='uuid']"):
            if entry.text == old:
                entry.text = rewrite.uuid
    if rewrite.new_genid:
        genid = root.find("genid")
        if genid is None:
            genid = _child(root, "genid", after="uuid")
        genid.text = None  # empty <genid/>: libvirt generates a new one


def _child(
    root: ET.Element, tag: str, *, before: str | None = None, after: str | None = None
) -> ET.Element:
    """``root``'s ``tag`` child, created next to ``before``/``after`` when missing."""
    found = root.find(tag)
    if found is not None:
        return found
    element = ET.Element(tag)
    tags = [c.tag for c in root]
    if after in tags:
        root.insert(tags.index(after) + 1, element)
    elif before in tags:
        root.insert(tags.index(before), element)
    else:
        root.insert(0, element)
    return element


def _place_disks(devices: ET.Element, rewrite: DomainRewrite) -> None:
    placements = {p.target: p for p in rewrite.disks}
    for disk in devices.findall("disk"):
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev in rewrite.drop_disks:
            devices.remove(disk)
            continue
        placement = placements.get(dev)
        if placement is None:
            continue
        disk.set("type", "file")
        driver = disk.find("driver")
        if driver is None:
            driver = ET.Element("driver", name="qemu")
            disk.insert(0, driver)
        driver.set("type", placement.format)
        old = disk.find("source")
        source = ET.Element("source", file=placement.path)
        if old is not None:
            disk.insert(list(disk).index(old), source)
            disk.remove(old)
        else:
            disk.insert(list(disk).index(driver) + 1, source)
        if placement.backing_socket is not None:
            disk.insert(list(disk).index(source) + 1, _nbd_backing(placement.backing_socket))


def _nbd_backing(socket: str) -> ET.Element:
    """``<backingStore>`` of an overlay whose base is a raw NBD export on a unix socket
    (given explicitly: libvirt uses it instead of probing the image header)."""
    backing = ET.Element("backingStore", type="network")
    ET.SubElement(backing, "format", type="raw")
    source = ET.SubElement(backing, "source", protocol="nbd")
    ET.SubElement(source, "host", transport="unix", socket=socket)
    ET.SubElement(backing, "backingStore")
    return backing


def _set_interfaces(devices: ET.Element, rewrite: DomainRewrite) -> None:
    interfaces = devices.findall("interface")
    if rewrite.macs is not None and len(rewrite.macs) != len(interfaces):
        raise ValueError(f"{len(rewrite.macs)} MACs for {len(interfaces)} interfaces")
    for number, iface in enumerate(interfaces):
        source = iface.find("source")
        if iface.get("type") == "network" and source is not None:
            network = source.get("network", "")
            source.set("network", rewrite.networks.get(network, network))
        if rewrite.macs is not None:
            mac = iface.find("mac")
            if mac is None:
                mac = ET.Element("mac")
                iface.insert(0, mac)
            mac.set("address", rewrite.macs[number])


def onto_taps(xml: str, taps: Sequence[str]) -> str:
    """Every ``<interface>`` (in order) becomes an ``ethernet`` NIC on an existing tap
    (``managed='no'``: libvirt opens it, never creates or deletes it); MAC, model
    and driver are kept, sources, bandwidth and filters dropped."""
    root = _parse(xml, "domain XML")
    interfaces = root.findall("./devices/interface")
    if len(taps) != len(interfaces):
        raise ValueError(f"{len(taps)} taps for {len(interfaces)} interfaces")
    for iface, tap in zip(interfaces, taps, strict=True):
        iface.set("type", "ethernet")
        for child in list(iface):
            if child.tag not in ("mac", "model", "driver", "address", "mtu", "boot"):
                iface.remove(child)
        ET.SubElement(iface, "target", dev=tap, managed="no")
    return _serialize(root, xml)


def chardev_files(xml: str) -> tuple[str, ...]:
    """Host files the VM's serial ports, consoles and channels write (file type, logs)."""
    root = _parse(xml, "domain XML")
    found: list[str] = []
    for kind in CHARDEVS:
        for device in root.findall(f"./devices/{kind}"):
            source, log = device.find("source"), device.find("log")
            if device.get("type") == "file" and source is not None and source.get("path"):
                found.append(source.get("path", ""))
            if log is not None and log.get("file"):
                found.append(log.get("file", ""))
    return tuple(dict.fromkeys(found))


def _set_chardev_files(devices: ET.Element, files: Mapping[str, str]) -> None:
    for kind in CHARDEVS:
        for device in devices.findall(kind):
            source, log = device.find("source"), device.find("log")
            if device.get("type") == "file" and source is not None:
                old = source.get("path", "")
                source.set("path", files.get(old, old))
            if log is not None:
                old = log.get("file", "")
                log.set("file", files.get(old, old))


def _set_nvram(root: ET.Element, path: str) -> None:
    nvram = root.find("./os/nvram")
    if nvram is None:
        return
    source = nvram.find("source")
    if source is not None:
        source.set("file", path)
    else:
        nvram.text = path


# -- networks ----------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkFacts:
    name: str
    bridge: str | None
    subnets: tuple[IpNetwork, ...]


def network_facts(xml: str) -> NetworkFacts:
    root = _parse(xml, "network XML")
    subnets = []
    for ip in root.findall("ip"):
        address = ip.get("address")
        if not address:
            continue
        mask = ip.get("prefix") or ip.get("netmask")
        subnets.append(ipaddress.ip_interface(f"{address}/{mask}" if mask else address).network)
    bridge = root.find("bridge")
    return NetworkFacts(
        root.findtext("name", ""),
        bridge.get("name") if bridge is not None else None,
        tuple(subnets),
    )


def network_clashes(
    saved: NetworkFacts,
    networks: list[NetworkFacts],
    host_addresses: Mapping[str, tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]],
) -> list[str]:
    """Why ``saved`` cannot be recreated beside these networks and host interfaces."""
    clashes = []
    for other in networks:
        if saved.bridge and other.bridge == saved.bridge:
            clashes.append(f"bridge {saved.bridge} belongs to network {other.name}")
        clashes += [
            f"subnet {mine} overlaps {theirs} of network {other.name}"
            for mine in saved.subnets
            for theirs in other.subnets
            if _overlap(mine, theirs)
        ]
    for device, addresses in host_addresses.items():
        if saved.bridge and device == saved.bridge:
            clashes.append(f"host interface {device} exists")
            continue
        clashes += [
            f"subnet {mine} overlaps {address} on host interface {device}"
            for mine in saved.subnets
            for address in addresses
            if not address.is_link_local and _overlap(mine, address.network)
        ]
    return sorted(set(clashes))


def _overlap(one: IpNetwork, other: IpNetwork) -> bool:
    return one.version == other.version and one.overlaps(other)


def network_for_recreate(xml: str) -> str:
    """The saved network without its identity: libvirt gives it a new UUID and MAC."""
    root = _parse(xml, "network XML")
    root.attrib.pop("connections", None)
    for tag in ("uuid", "mac"):
        for element in root.findall(tag):
            root.remove(element)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
