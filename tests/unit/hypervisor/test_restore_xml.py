"""Domain and network XML rewrite for a VM restore, on the live XML of a real test VM.

``data/testvm-domain.xml`` is what ``surety backup vm`` stored for a running
``scripts/testvm`` guest with a NIC hot-plugged on an isolated network
(``data/testvm-network.xml``): runtime state included (domain id, aliases,
the tap name, the network port, the disk's backing chain, the DAC label).
"""

from __future__ import annotations

import ipaddress
import itertools
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from surety.core.errors import IntegrityError
from surety.hypervisor.restore_xml import (
    DiskPlacement,
    DomainRewrite,
    can_have_genid,
    chardev_files,
    domain_interfaces,
    genid_of,
    network_clashes,
    network_facts,
    network_for_recreate,
    new_mac,
    rewrite_domain,
    writable_disks,
)

DATA = Path(__file__).parents[1] / "data"
DOMAIN = (DATA / "testvm-domain.xml").read_text()
NETWORK = (DATA / "testvm-network.xml").read_text()
ORIGINAL_UUID = "d97958ed-ccc5-4a61-903d-aef83abeb5a0"
ORIGINAL_MAC = "52:54:00:6c:48:bb"
NEW_UUID = "0b9c3a52-5d1e-4b3c-9f4e-1d2c3b4a5e6f"
QCOW2 = DiskPlacement("vda", "/restore/web-vda.qcow2", "qcow2")

DEFAULT_NETWORK = """<network>
  <name>default</name>
  <uuid>ef77031c-6c48-4979-b08e-f71ef6f0631d</uuid>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <mac address='52:54:00:54:9e:a7'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
  </ip>
  <ip family='ipv6' address='fd00:122::1' prefix='64'/>
</network>"""


def _root(xml: str) -> ET.Element:
    return ET.fromstring(xml)


CLONE = DomainRewrite(
    name="web-copy",
    uuid=NEW_UUID,
    macs=("52:54:00:aa:bb:cc",),
    new_genid=True,
    disks=(QCOW2,),
    networks={"rv-net1": "rv-net1"},
)


def _clone(**changes: Any) -> ET.Element:
    return _root(rewrite_domain(DOMAIN, replace(CLONE, **changes)))


def test_the_sample_is_a_live_domain_with_runtime_state() -> None:
    root = _root(DOMAIN)
    assert root.get("id") is not None
    assert root.find("./devices/disk/backingStore") is not None
    assert root.find("./devices/interface/source").get("portid")  # type: ignore[union-attr]
    assert domain_interfaces(DOMAIN)[0].mac == ORIGINAL_MAC
    assert writable_disks(DOMAIN) == ("vda",)
    assert can_have_genid(DOMAIN)
    assert genid_of(DOMAIN) is None


def test_clone_has_a_new_identity() -> None:
    root = _clone()
    assert root.findtext("name") == "web-copy"
    assert root.findtext("uuid") == NEW_UUID
    genid = root.find("genid")
    assert genid is not None
    assert not genid.text  # <genid/>: libvirt makes a new one
    assert [t.tag for t in root][:3] == ["name", "uuid", "genid"]
    (iface,) = root.findall("./devices/interface")
    assert iface.find("mac").get("address") == "52:54:00:aa:bb:cc"  # type: ignore[union-attr]
    assert iface.find("source").attrib == {"network": "rv-net1"}  # type: ignore[union-attr]


def test_clone_disks_are_flat_files_at_their_new_paths() -> None:
    root = _clone()
    (disk,) = root.findall("./devices/disk")
    assert disk.get("type") == "file"
    assert disk.find("source").attrib == {"file": "/restore/web-vda.qcow2"}  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("driver").get("discard") == "unmap"  # type: ignore[union-attr]
    assert disk.find("backingStore") is None
    assert disk.find("serial") is not None  # guest-visible identity of the disk is kept


def test_runtime_state_is_dropped_and_metadata_prefix_kept() -> None:
    text = rewrite_domain(DOMAIN, DomainRewrite(name="rv-probe", disks=(QCOW2,)))
    root = _root(text)
    assert root.get("id") is None
    assert not list(root.iter("alias"))
    assert root.find("./devices/interface/target") is None  # vnet0
    assert root.find("./devices/channel/target").get("state") is None  # type: ignore[union-attr]
    assert root.find("./seclabel/label") is None
    assert "<testvm:app>none</testvm:app>" in text


def test_in_place_keeps_uuid_macs_and_genid() -> None:
    with_genid = DOMAIN.replace(
        f"<uuid>{ORIGINAL_UUID}</uuid>",
        f"<uuid>{ORIGINAL_UUID}</uuid>\n  <genid>43dc0cf8-809b-4adb-9bea-a9abb5f3d90d</genid>",
    )
    root = _root(rewrite_domain(with_genid, DomainRewrite(name="rv-probe", disks=(QCOW2,))))
    assert root.findtext("name") == "rv-probe"
    assert root.findtext("uuid") == ORIGINAL_UUID
    assert root.findtext("genid") == "43dc0cf8-809b-4adb-9bea-a9abb5f3d90d"
    assert root.find("./devices/interface/mac").get("address") == ORIGINAL_MAC  # type: ignore[union-attr]


def test_network_map_and_raw_format() -> None:
    root = _clone(
        networks={"rv-net1": "lab"},
        disks=(DiskPlacement("vda", "/restore/web-vda.img", "raw"),),
    )
    assert root.find("./devices/interface/source").get("network") == "lab"  # type: ignore[union-attr]
    assert root.find("./devices/disk/driver").get("type") == "raw"  # type: ignore[union-attr]


def test_chardev_files_move_with_a_clone() -> None:
    assert chardev_files(DOMAIN) == ("/var/lib/surety/testvm/rv-probe/console.log",)
    moved = {"/var/lib/surety/testvm/rv-probe/console.log": "/restore/web-copy-console.log"}
    root = _clone(chardev_files=moved)
    chardevs = root.findall("./devices/serial") + root.findall("./devices/console")
    paths = {e.find("source").get("path") for e in chardevs}  # type: ignore[union-attr]
    assert paths == {"/restore/web-copy-console.log"}


BLOCK_DOMAIN = """<domain type='kvm'>
  <name>db01</name><uuid>6f1c0e5e-0000-4000-8000-000000000001</uuid>
  <sysinfo type='smbios'><system><entry name='uuid'>6f1c0e5e-0000-4000-8000-000000000001</entry>
  </system></sysinfo>
  <os><type arch='x86_64'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/db01_VARS.fd</nvram></os>
  <devices>
    <disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/vg/db01'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/vg/shared'/><target dev='vdb' bus='virtio'/><shareable/></disk>
    <disk type='file' device='cdrom'><source file='/iso/tools.iso'/><target dev='sda' bus='sata'/>
      <readonly/></disk>
    <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>
    <interface type='user'/>
  </devices>
</domain>"""


def test_block_disk_becomes_a_file_and_left_out_disks_go() -> None:
    rewrite = DomainRewrite(
        name="db01-copy",
        uuid=NEW_UUID,
        macs=("52:54:00:00:00:01", "52:54:00:00:00:02"),
        disks=(DiskPlacement("vda", "/restore/db01-copy-vda.img", "raw"),),
        drop_disks=("vdb",),
        nvram="/restore/db01-copy_VARS.fd",
    )
    root = _root(rewrite_domain(BLOCK_DOMAIN, rewrite))
    disks = root.findall("./devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "sda"]  # type: ignore[union-attr]
    assert disks[0].get("type") == "file"
    assert disks[0].find("source").attrib == {"file": "/restore/db01-copy-vda.img"}  # type: ignore[union-attr]
    assert disks[1].find("source").get("file") == "/iso/tools.iso"  # type: ignore[union-attr]
    assert root.findtext("./os/nvram") == "/restore/db01-copy_VARS.fd"
    assert root.findtext("./sysinfo/system/entry[@name='uuid']") == NEW_UUID
    macs = [i.find("mac").get("address") for i in root.findall("./devices/interface")]  # type: ignore[union-attr]
    assert macs == ["52:54:00:00:00:01", "52:54:00:00:00:02"]  # a <mac> is added where missing
    assert writable_disks(BLOCK_DOMAIN) == ("vda", "vdb")
    assert not can_have_genid(BLOCK_DOMAIN)  # no ACPI: no vmgenid device


def test_mac_count_must_match() -> None:
    with pytest.raises(ValueError, match="MACs"):
        rewrite_domain(DOMAIN, DomainRewrite(name="x", macs=("52:54:00:00:00:01",) * 2))


def test_new_macs_are_locally_administered_qemu_macs() -> None:
    counter = itertools.count(1)
    assert new_mac(lambda n: bytes([next(counter)] * n)) == "52:54:00:01:01:01"
    assert new_mac().startswith("52:54:00:")


def test_unparsable_saved_xml_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        rewrite_domain("<domain", DomainRewrite(name="x"))


def test_network_facts_and_recreate_drop_identity() -> None:
    saved = network_facts(NETWORK)
    assert (saved.name, saved.bridge, saved.subnets) == ("rv-net1", "rvbr1", ())
    default = network_facts(DEFAULT_NETWORK)
    assert default.subnets == (
        ipaddress.ip_network("192.168.122.0/24"),
        ipaddress.ip_network("fd00:122::/64"),
    )
    root = _root(network_for_recreate(NETWORK))
    assert root.get("connections") is None
    assert root.find("uuid") is None
    assert root.find("mac") is None
    assert root.find("bridge").get("name") == "rvbr1"  # type: ignore[union-attr]


def test_network_clashes() -> None:
    saved = network_facts(DEFAULT_NETWORK.replace("virbr0", "virbr9"))
    other = network_facts(DEFAULT_NETWORK.replace("<name>default", "<name>nat2"))
    clashes = network_clashes(saved, [other], {})
    assert clashes == [
        "subnet 192.168.122.0/24 overlaps 192.168.122.0/24 of network nat2",
        "subnet fd00:122::/64 overlaps fd00:122::/64 of network nat2",
    ]
    same_bridge = network_facts(NETWORK)
    assert network_clashes(same_bridge, [network_facts(NETWORK)], {}) == [
        "bridge rvbr1 belongs to network rv-net1"
    ]
    host = {
        "eth0": (ipaddress.ip_interface("192.168.122.77/16"), ipaddress.ip_interface("fe80::1/64")),
        "rvbr1": (),
    }
    assert network_clashes(saved, [], host) == [
        "subnet 192.168.122.0/24 overlaps 192.168.122.77/16 on host interface eth0"
    ]
    assert network_clashes(same_bridge, [], host) == ["host interface rvbr1 exists"]
    free = {"eth0": (ipaddress.ip_interface("10.0.0.5/24"), ipaddress.ip_interface("fd01::5/64"))}
    assert network_clashes(saved, [network_facts(NETWORK)], free) == []
