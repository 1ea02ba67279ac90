"""VM restore planning: every refusal happens here, before anything is written."""

from __future__ import annotations

import ipaddress
import itertools
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from surety.core.errors import TargetError, UsageError
from surety.repo.manifest import DiskRecord, Manifest
from surety.restore.vm.plan import (
    CLONE,
    IN_PLACE,
    ExistingDomain,
    TargetFacts,
    VmRestoreOptions,
    VmRestorePlan,
    plan_vm_restore,
)
from tests.unit.hypervisor.test_restore_xml import BLOCK_DOMAIN, DEFAULT_NETWORK, DOMAIN, NETWORK

UUID = "d97958ed-ccc5-4a61-903d-aef83abeb5a0"
VM_DIR = Path("/var/lib/surety/testvm/rv-probe")
GiB = 1 << 30


def _point(**config: str) -> Manifest:
    now = datetime.now(UTC)
    return Manifest(
        name="rv-probe",
        kind="vm",
        started=now,
        finished=now,
        host="h",
        disks=(DiskRecord("vda", 4 * GiB, "img-vda", str(VM_DIR / "vda.qcow2")),),
        consistency="filesystem",
        config={"domain.xml": DOMAIN, "network/rv-net1.xml": NETWORK, **config},
        applications={"postgresql": {"state": "thawed"}},
        source={"uuid": UUID},
        id="3fe5420fc91e" + "0" * 52,
    )


def _facts(
    *domains: ExistingDomain,
    networks: dict[str, tuple[bool, str]] | None = None,
    host: dict[str, Any] | None = None,
) -> TargetFacts:
    nets = {"rv-net1": (True, NETWORK)} if networks is None else networks
    return TargetFacts(domains, nets, host or {})


def _plan(
    options: VmRestoreOptions | None = None,
    facts: TargetFacts | None = None,
    point: Manifest | None = None,
) -> VmRestorePlan:
    counter = itertools.count(1)
    return plan_vm_restore(
        point or _point(),
        options or VmRestoreOptions("rv-probe@latest"),
        {"vda": GiB},
        facts or _facts(),
        make_mac=lambda: f"52:54:00:00:00:{next(counter):02x}",
        make_uuid=lambda: "11111111-2222-4333-8444-555555555555",
    )


def test_in_place_by_default_keeps_identity_beside_the_original_disk() -> None:
    plan = _plan()
    assert (plan.identity, plan.name, plan.uuid) == (IN_PLACE, "rv-probe", UUID)
    (disk,) = plan.disks
    assert (disk.path, disk.format, disk.allocated) == (VM_DIR / "rv-probe-vda.qcow2", "qcow2", GiB)
    assert [(n.mac, n.original_mac, n.network) for n in plan.nics] == [
        ("52:54:00:6c:48:bb", "52:54:00:6c:48:bb", "rv-net1")
    ]
    root = ET.fromstring(plan.xml)
    assert root.findtext("uuid") == UUID
    assert root.find("genid") is None
    assert plan.replace == ()
    assert plan.create_networks == ()


def test_as_another_name_is_a_clone_with_new_identity() -> None:
    plan = _plan(VmRestoreOptions("p", name="rv-copy", storage=Path("/restore")))
    assert (plan.identity, plan.uuid) == (CLONE, "11111111-2222-4333-8444-555555555555")
    assert plan.disks[0].path == Path("/restore/rv-copy-vda.qcow2")
    assert [(n.mac, n.original_mac) for n in plan.nics] == [
        ("52:54:00:00:00:01", "52:54:00:6c:48:bb")
    ]
    root = ET.fromstring(plan.xml)
    assert root.findtext("name") == "rv-copy"
    assert root.find("genid") is not None
    assert root.find("./devices/serial/source").get("path") == "/restore/rv-copy-console.log"  # type: ignore[union-attr]


def test_clone_keeps_its_name_only_when_asked() -> None:
    plan = _plan(VmRestoreOptions("p", identity=CLONE), _facts())
    assert (plan.name, plan.identity) == ("rv-probe", CLONE)
    assert plan.uuid != UUID


def test_in_place_under_another_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="drop --as"):
        _plan(VmRestoreOptions("p", name="other", identity=IN_PLACE))


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b"])
def test_names_that_make_bad_file_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError):
        _plan(VmRestoreOptions("p", name=name))


def test_in_place_onto_the_running_original_is_refused_unless_forced() -> None:
    running = ExistingDomain("rv-probe", UUID, True, (str(VM_DIR / "vda.qcow2"),))
    with pytest.raises(TargetError, match=r"running.*--force"):
        _plan(facts=_facts(running))
    forced = _plan(VmRestoreOptions("p", force=True), _facts(running))
    assert forced.replace == (running,)


def test_in_place_over_the_shut_off_original_replaces_it() -> None:
    stopped = ExistingDomain("rv-probe", UUID, False, (str(VM_DIR / "vda.qcow2"),))
    assert _plan(facts=_facts(stopped)).replace == (stopped,)


def test_another_vm_in_the_way_needs_force() -> None:
    stranger = ExistingDomain("rv-probe", "00000000-0000-4000-8000-000000000000", False)
    with pytest.raises(TargetError, match="already holds the name"):
        _plan(facts=_facts(stranger))
    same_uuid = ExistingDomain("renamed", UUID, False)
    with pytest.raises(TargetError, match=f"UUID {UUID}"):
        _plan(facts=_facts(same_uuid))
    taken = ExistingDomain("rv-copy", "00000000-0000-4000-8000-000000000000", False)
    with pytest.raises(TargetError, match="--as NAME"):
        _plan(VmRestoreOptions("p", name="rv-copy"), _facts(taken))
    # a clone does not care about the original's UUID
    assert _plan(VmRestoreOptions("p", name="rv-copy"), _facts(same_uuid)).replace == ()


def test_missing_network_is_recreated_from_the_point() -> None:
    plan = _plan(facts=_facts(networks={"default": (True, DEFAULT_NETWORK)}))
    ((name, xml),) = plan.create_networks
    assert name == "rv-net1"
    assert ET.fromstring(xml).find("uuid") is None
    assert any("recreated" in note for note in plan.notes)


def test_missing_network_that_clashes_suggests_network_map() -> None:
    host = {"rvbr1": (ipaddress.ip_interface("10.1.1.1/24"),)}
    with pytest.raises(TargetError, match=r"host interface rvbr1 exists.*--network-map rv-net1="):
        _plan(facts=_facts(networks={}, host=host))


def test_unknown_network_without_saved_xml_is_refused() -> None:
    point = _point()
    config = {k: v for k, v in point.config.items() if not k.startswith("network/")}
    bare = replace(point, config=config)
    with pytest.raises(TargetError, match="--network-map rv-net1=NETWORK"):
        _plan(facts=_facts(networks={}), point=bare)


def test_network_map() -> None:
    lab = {"lab": (True, DEFAULT_NETWORK.replace("<name>default", "<name>lab"))}
    options = VmRestoreOptions("p", name="c", network_map=(("rv-net1", "lab"),))
    plan = _plan(options, _facts(networks=lab))
    assert dict(plan.networks) == {"rv-net1": "lab"}
    assert plan.nics[0].network == "lab"
    assert ET.fromstring(plan.xml).find("./devices/interface/source").get("network") == "lab"  # type: ignore[union-attr]
    with pytest.raises(TargetError, match="no network lab"):
        _plan(options, _facts(networks={}))
    with pytest.raises(UsageError, match="no NIC on network prod"):
        _plan(VmRestoreOptions("p", network_map=(("prod", "lab"),)), _facts(networks=lab))


def test_inactive_network_blocks_start_only() -> None:
    inactive = {"rv-net1": (False, NETWORK)}
    assert any("not active" in n for n in _plan(facts=_facts(networks=inactive)).notes)
    with pytest.raises(TargetError, match="virsh net-start rv-net1"):
        _plan(VmRestoreOptions("p", start=True), _facts(networks=inactive))


def _block_point() -> Manifest:
    return replace(
        _point(),
        name="db01",
        config={"domain.xml": BLOCK_DOMAIN, "nvram.b64": "AAAA"},
        disks=(DiskRecord("vda", GiB, "img-vda", "/dev/vg/db01"),),
        source={"uuid": "6f1c0e5e-0000-4000-8000-000000000001"},
    )


def test_block_device_disks_need_storage() -> None:
    with pytest.raises(UsageError, match=r"block device /dev/vg/db01.*--storage"):
        _plan(point=_block_point(), facts=_facts(networks={}))


def test_block_point_as_a_clone_in_storage() -> None:
    options = VmRestoreOptions("p", name="db01-copy", storage=Path("/restore"), format="qcow2")
    plan = _plan(options, _facts(networks={}), _block_point())
    assert plan.disks[0].path == Path("/restore/db01-copy-vda.qcow2")
    assert plan.nvram == Path("/restore/db01-copy_VARS.fd")
    assert plan.dropped_disks == ("vdb",)  # shareable, not in the point: not the copy's
    assert len({n.mac for n in plan.nics}) == 2
    in_place = _plan(
        VmRestoreOptions("p", storage=Path("/restore")), _facts(networks={}), _block_point()
    )
    assert in_place.dropped_disks == ()
    assert in_place.disks[0].path == Path("/restore/db01-vda.img")  # raw, as it was


def test_an_image_point_is_not_a_vm() -> None:
    point = replace(_point(), kind="image", config={})
    with pytest.raises(UsageError, match="restore image"):
        _plan(point=point)
