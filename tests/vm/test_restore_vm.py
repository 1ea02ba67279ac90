"""Full VM restore on real guests: clone beside the original, in place, and refusals.

One running test VM with a NIC on an isolated libvirt network is backed up
once; the tests restore that point. At most two VMs of this module run at a
time (the original and one restored VM). The last two tests replace the
original in place, so they run last.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.cli import Cli, cli_for
from tests.guests import agent, testvm
from tests.vm.conftest import Guest

pytestmark = pytest.mark.vm

MARKER = "restore-vm-marker"
RESTORE_TIMEOUT = 1200  # TCG guests and another engineer's VMs share two cores
BOOT_TIMEOUT = 600


@dataclass
class Source:
    guest: Guest
    uuid: str
    mac: str
    network: str
    other_network: str
    point: str
    cli: Cli

    @property
    def name(self) -> str:
        return self.guest.name


def _network(conn: libvirt.virConnect, tag: str) -> str:
    """An isolated network (a bridge, no addresses, no DHCP)."""
    name = f"rvn-{tag}"
    xml = f"<network><name>{name}</name><bridge name='rvb{tag}' stp='on' delay='0'/></network>"
    conn.networkDefineXML(xml).create()
    return name


def _drop_network(conn: libvirt.virConnect, name: str) -> None:
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return
    if net.isActive():
        net.destroy()
    net.undefine()


@pytest.fixture(scope="module")
def source(
    libvirt_conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    tag = secrets.token_hex(3)
    name = f"rv-{tag}"
    network, other = _network(libvirt_conn, tag), _network(libvirt_conn, f"{tag}m")
    try:
        testvm.up(name, app="none", timeout=BOOT_TIMEOUT)
        guest = Guest(name, libvirt_conn)
        nic = (
            f"<interface type='network'><source network='{network}'/>"
            "<model type='virtio'/></interface>"
        )
        guest.dom.attachDeviceFlags(
            nic, libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
        )
        guest.sh(f"echo {MARKER} > /root/marker.txt && sync")
        cli = cli_for(tmp_path_factory.mktemp("restore-vm") / "repo", dict(os.environ))
        cli.run("init")
        point = cli.json("backup", "vm", name, "--consistency", "filesystem")
        assert point["consistency"] == "filesystem", point
        (mac,) = _macs(guest.dom)
        yield Source(guest, guest.dom.UUIDString(), mac, network, other, point["id"], cli)
    finally:
        testvm.down(name)
        _drop_network(libvirt_conn, network)
        _drop_network(libvirt_conn, other)


def _macs(dom: libvirt.virDomain) -> list[str]:
    return [m.split("'")[1] for m in dom.XMLDesc(0).split("<mac address=")[1:]]


def _disk_sources(dom: libvirt.virDomain) -> list[str]:
    return [s.split("'")[1] for s in dom.XMLDesc(0).split("<source file=")[1:]]


def _restore(source: Source, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return source.cli.run(
        "restore", "vm", source.point, *args, check=False, timeout=RESTORE_TIMEOUT
    )


def _clean_failure(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# CI's replication lane runs beside this module and defines and drops its own guests and
# networks meanwhile: "nothing left behind" compares only the names this module's restores
# can create (domains rv-*, networks rvn-*).
OURS = "rv"


def _domain_names(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains() if d.name().startswith(OURS)}


def _network_names(conn: libvirt.virConnect) -> set[str]:
    return {n.name() for n in conn.listAllNetworks() if n.name().startswith(OURS)}


@pytest.fixture
def storage() -> Iterator[Path]:
    """A directory QEMU (the libvirt-qemu user) can reach, below the test VM root."""
    path = testvm.VM_ROOT / f"rv-store-{secrets.token_hex(3)}"
    testvm.make_public_dir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_in_place_onto_the_running_original_is_refused(
    source: Source, libvirt_conn: libvirt.virConnect
) -> None:
    vm_dir = testvm.VM_ROOT / source.name
    before, files = source.guest.dom.XMLDesc(0), _listing(vm_dir)
    refused = _restore(source, "--json")
    _clean_failure(refused, 11)
    assert "is running" in refused.stderr
    assert "--force" in refused.stderr
    assert source.guest.dom.isActive()
    assert source.guest.dom.XMLDesc(0) == before
    assert _listing(vm_dir) == files
    source.guest.sh("test -f /root/marker.txt")


def test_clone_boots_beside_the_original_with_a_new_identity(
    source: Source, libvirt_conn: libvirt.virConnect, storage: Path
) -> None:
    clone = f"{source.name}-c"
    try:
        done = _restore(
            source, "--as", clone, "--identity", "clone", "--storage", storage,
            "--network-map", f"{source.network}={source.other_network}", "--start", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert (result["name"], result["identity"], result["started"]) == (clone, "clone", True)
        assert result["original_uuid"] == source.uuid
        assert result["uuid"] != source.uuid
        assert result["genid"]
        ((nic),) = result["nics"]
        assert nic["original_mac"] == source.mac
        assert nic["mac"] != source.mac
        assert nic["network"] == source.other_network
        ((disk),) = result["disks"]
        assert disk["path"] == str(storage / f"{clone}-vda.qcow2")
        assert "fsfreeze" in result["applications"]
        assert _listing(storage) == [f"{clone}-console.log", f"{clone}-vda.qcow2"]

        copy = Guest(clone, libvirt_conn)
        assert copy.dom.UUIDString() == result["uuid"]
        assert _disk_sources(copy.dom) == [disk["path"]]
        agent.wait_for_agent(copy.dom, timeout=BOOT_TIMEOUT)
        assert copy.sh("cat /root/marker.txt").stdout.decode().strip() == MARKER
        assert copy.sh("cat /sys/class/net/eth0/address").stdout.decode().strip() == nic["mac"]
        # the original runs on, untouched
        assert source.guest.dom.isActive()
        assert source.guest.dom.UUIDString() == source.uuid
        assert _macs(source.guest.dom) == [source.mac]
    finally:
        testvm.down(clone)


def test_corrupt_pack_fails_with_exit_6_and_leaves_nothing(
    source: Source, libvirt_conn: libvirt.virConnect, storage: Path, tmp_path: Path
) -> None:
    damaged = cli_for(tmp_path / "repo", source.cli.env)
    shutil.copytree(source.cli.repo, damaged.repo)
    pack = max(
        (p for p in (damaged.repo / "data").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    with open(pack, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0x01]))
    domains, networks = _domain_names(libvirt_conn), _network_names(libvirt_conn)
    clone = f"{source.name}-x"
    failed = damaged.run(
        "restore", "vm", source.point, "--as", clone, "--storage", storage, "--start",
        check=False, timeout=RESTORE_TIMEOUT,
    )  # fmt: skip
    _clean_failure(failed, 6)
    assert "damaged" in failed.stderr or "authentication failed" in failed.stderr
    assert _listing(storage) == []
    assert _domain_names(libvirt_conn) == domains
    assert _network_names(libvirt_conn) == networks


def test_not_enough_room_is_refused_before_writing(
    source: Source, libvirt_conn: libvirt.virConnect, storage: Path
) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", storage], check=True
    )
    try:
        domains = _domain_names(libvirt_conn)
        refused = _restore(source, "--as", f"{source.name}-r", "--storage", storage)
        _clean_failure(refused, 11)
        assert "not enough room" in refused.stderr
        assert "64.0 MiB" in refused.stderr or "free" in refused.stderr
        assert _listing(storage) == []
        assert _domain_names(libvirt_conn) == domains
    finally:
        subprocess.run(["umount", storage], check=True)


def test_force_replaces_the_running_original_in_place(
    source: Source, libvirt_conn: libvirt.virConnect
) -> None:
    source.guest.sh("echo later > /root/later.txt && sync")
    done = _restore(source, "--force", "--start", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["identity"], result["uuid"]) == ("in-place", source.uuid)
    assert [d["name"] for d in result["replaced"]] == [source.name]
    assert result["replaced"][0]["running"] is True
    vm_dir = testvm.VM_ROOT / source.name
    assert result["superseded_files"] == [str(vm_dir / "vda.qcow2")]
    dom = libvirt_conn.lookupByName(source.name)
    assert dom.UUIDString() == source.uuid
    assert _macs(dom) == [source.mac]
    assert _disk_sources(dom) == [str(vm_dir / f"{source.name}-vda.qcow2")]
    restored = Guest(source.name, libvirt_conn)
    agent.wait_for_agent(restored.dom, timeout=BOOT_TIMEOUT)
    assert restored.sh("cat /root/marker.txt").stdout.decode().strip() == MARKER
    assert restored.sh("test -e /root/later.txt || echo absent").stdout.strip() == b"absent"
    source.guest = restored


def test_in_place_over_the_shut_off_original_recreates_its_network(
    source: Source, libvirt_conn: libvirt.virConnect
) -> None:
    """Disaster recovery: the VM is off and its network gone; the point brings both back."""
    source.guest.sh("echo later > /root/later.txt && sync")
    source.guest.dom.destroy()
    _drop_network(libvirt_conn, source.network)
    done = _restore(source, "--start", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["networks_created"] == [source.network]
    assert result["replaced"][0]["running"] is False
    assert result["superseded_files"] == []  # the disk at the same name was replaced
    dom = libvirt_conn.lookupByName(source.name)
    assert dom.UUIDString() == source.uuid
    assert _macs(dom) == [source.mac]
    assert libvirt_conn.networkLookupByName(source.network).isActive()
    vm_dir = testvm.VM_ROOT / source.name
    assert not [p for p in vm_dir.iterdir() if p.name.startswith(".")]  # no partial/old files
    restored = Guest(source.name, libvirt_conn)
    agent.wait_for_agent(restored.dom, timeout=BOOT_TIMEOUT)
    assert restored.sh("cat /root/marker.txt").stdout.decode().strip() == MARKER
    assert restored.sh("test -e /root/later.txt || echo absent").stdout.strip() == b"absent"
