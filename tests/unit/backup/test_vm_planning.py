"""Pure parts of VM backup: domain XML facts, job XML, and the changed-block chain check."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest

from surety.backup.chain import decide_chain
from surety.core.errors import SourceError
from surety.hypervisor.domain import parse_domain
from surety.hypervisor.pullbackup import backup_xml, checkpoint_xml
from surety.repo.manifest import DiskRecord, Manifest

DOMAIN = """
<domain type='kvm'>
  <name>web01</name><uuid>6f1c0e5e-0000-4000-8000-000000000001</uuid>
  <os><type>hvm</type><nvram>/var/lib/libvirt/qemu/nvram/web01_VARS.fd</nvram></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/vm/web01.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/vg/web01-data'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='p/x'/>
      <target dev='vdc' bus='virtio'/></disk>
    <interface type='network'><source network='prod'/></interface>
    <interface type='network'><source network='backup-net'/></interface>
    <interface type='bridge'><source bridge='br0'/></interface>
    <tpm model='tpm-crb'/>
  </devices>
</domain>
"""


def test_parse_domain_picks_backed_up_disks_networks_firmware() -> None:
    info = parse_domain(DOMAIN)
    assert info.name == "web01"
    assert info.domain_type == "kvm"
    assert [(d.target, d.source_type, d.driver) for d in info.disks] == [
        ("vda", "file", "qcow2"),
        ("vdb", "block", "raw"),
    ]
    assert info.all_targets == ("vda", "vdb", "sda", "vdc")
    assert any(s.startswith("sda") for s in info.skipped_disks)
    assert any("vdc" in s and "network" in s for s in info.skipped_disks)
    assert info.networks == ("backup-net", "prod")
    assert info.nvram == "/var/lib/libvirt/qemu/nvram/web01_VARS.fd"
    assert info.has_tpm


def test_parse_domain_rejects_garbage() -> None:
    with pytest.raises(SourceError):
        parse_domain("<domain")


def test_job_xml_full_and_incremental() -> None:
    full = ET.fromstring(backup_xml("/run/s.sock", ["vda"], ["vda", "sda"], None, "/w"))
    assert full.get("mode") == "pull"
    assert full.find("incremental") is None
    assert full.find("server").get("socket") == "/run/s.sock"  # type: ignore[union-attr]
    disks = {d.get("name"): d for d in full.iter("disk")}
    assert disks["vda"].get("backup") == "yes"
    assert disks["vda"].find("scratch").get("file") == "/w/vda.scratch.qcow2"  # type: ignore[union-attr]
    assert disks["sda"].get("backup") == "no"
    inc = ET.fromstring(backup_xml("/s", ["vda"], ["vda"], "surety-1", "/w"))
    assert inc.findtext("incremental") == "surety-1"
    assert next(inc.iter("disk")).get("exportbitmap") == "backup-vda"
    mixed = ET.fromstring(
        backup_xml("/s", ["vda", "vdb"], ["vda", "vdb"], "surety-1", "/w", full_targets=("vdb",))
    )
    modes = {
        d.get("name"): (d.get("backupmode"), d.get("exportbitmap")) for d in mixed.iter("disk")
    }
    assert modes == {"vda": (None, "backup-vda"), "vdb": ("full", None)}  # raw: read whole
    ckpt = ET.fromstring(checkpoint_xml("surety-2", ["vda"], ["vda", "sda"]))
    assert ckpt.findtext("name") == "surety-2"
    assert {d.get("name"): d.get("checkpoint") for d in ckpt.iter("disk")} == {
        "vda": "bitmap",
        "sda": "no",
    }


class FakeDomain:
    def __init__(
        self,
        checkpoints: list[str],
        bitmaps: list[dict[str, Any]] | None = None,
        qmp_fails: bool = False,
    ) -> None:
        self.checkpoints, self.bitmaps, self.qmp_fails = checkpoints, bitmaps or [], qmp_fails

    def checkpoint_names(self) -> list[str]:
        return self.checkpoints

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        if self.qmp_fails:
            raise SourceError("monitor gone")
        assert command == "query-named-block-nodes"
        return [{"node-name": "n1", "dirty-bitmaps": self.bitmaps}, {"node-name": "n2"}]


def _parent(
    uuid: str = "6f1c0e5e-0000-4000-8000-000000000001",
    checkpoint: str = "surety-a",
    disks: tuple[str, ...] = ("vda", "vdb"),
) -> Manifest:
    now = datetime.now(UTC)
    return Manifest(
        name="web01",
        kind="vm",
        started=now,
        finished=now,
        host="h",
        disks=tuple(DiskRecord(d, 1 << 30, "00" * 32) for d in disks),
        source={"uuid": uuid, "checkpoint": checkpoint},
    )


GOOD = [{"name": "surety-a", "recording": True}, {"name": "surety-a", "recording": True}]


def test_chain_intact_gives_incremental() -> None:
    decision = decide_chain(_parent(), parse_domain(DOMAIN), FakeDomain(["surety-a"], GOOD), False)
    assert decision.incremental_from == "surety-a"
    assert decision.modes == {"vda": "incremental", "vdb": "full"}
    assert decision.incremental_disks == {"vda"}
    assert len(decision.notes) == 1
    assert "vdb: raw disk" in decision.notes[0]  # the reason is shown at every backup


@pytest.mark.parametrize(
    ("parent", "domain", "why"),
    [
        (None, FakeDomain([]), None),
        (_parent(uuid="other"), FakeDomain(["surety-a"], GOOD), "UUID differs"),
        (_parent(), FakeDomain(["surety-b"], GOOD), "no longer exists"),
        (_parent(), FakeDomain(["surety-a"], []), "is missing"),
        (
            _parent(),
            FakeDomain(["surety-a"], [{**GOOD[0], "inconsistent": True}, GOOD[1]]),
            "inconsistent",
        ),
        (_parent(), FakeDomain(["surety-a"], qmp_fails=True), "cannot inspect"),
        (_parent(disks=("vda",)), FakeDomain(["surety-a"], GOOD), "vdb is new"),
    ],
)
def test_broken_chain_falls_back_to_full_and_says_why(
    parent: Manifest | None, domain: FakeDomain, why: str | None
) -> None:
    decision = decide_chain(parent, parse_domain(DOMAIN), domain, False)
    assert decision.incremental_from is None
    assert set(decision.modes.values()) == {"full"}
    if why is None:
        assert decision.notes == []  # a first backup is full without a warning
    else:
        assert why in decision.notes[-1]


def test_forced_full_is_silent() -> None:
    decision = decide_chain(_parent(), parse_domain(DOMAIN), FakeDomain(["surety-a"], GOOD), True)
    assert decision.incremental_from is None
    assert decision.notes == []
