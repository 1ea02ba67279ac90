"""Instant recovery, pure parts: the state record, the domain XML before and after finish.

The XML starts from ``data/testvm-domain.xml``, the live XML of a real test VM
(runtime state, a backing chain, a console log), as ``surety backup vm`` stored it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from surety.core.errors import TargetError, UsageError
from surety.restore.instant.plan import (
    copy_destination_xml,
    copy_path,
    disk_states,
    finished_domain_xml,
    instant_domain_xml,
    resumed_domain_xml,
)
from surety.restore.instant.state import (
    FINISHING,
    RUNNING,
    STARTING,
    InstantDisk,
    InstantVm,
    list_instant_vms,
    load_instant_vm,
    save_instant_vm,
    working_on,
)

DATA = Path(__file__).parents[2] / "data"
DOMAIN = (DATA / "testvm-domain.xml").read_text()
VM_DIR = Path("/var/lib/surety/instant/web-i")
STORAGE = Path("/srv/vms")
OVERLAY = str(VM_DIR / "web-i-vda.qcow2")
CONSOLE = str(VM_DIR / "web-i-console.log")
DISK = InstantDisk("vda", 4 << 30, 1 << 30, OVERLAY, str(VM_DIR / "serve-vda"))


def _record(directory: Path, **changes: object) -> InstantVm:
    vm = InstantVm(
        "web-i", str(directory), "ab" * 32, "web", "/backup/repo", "clone", STARTING, 1.0
    )
    return replace(vm, **changes)  # type: ignore[arg-type]


def _disk(xml: str) -> ET.Element:
    (disk,) = ET.fromstring(xml).findall("./devices/disk")
    return disk


# -- state ---------------------------------------------------------------------------


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    directory = tmp_path / "web-i"
    directory.mkdir()
    vm = _record(directory).with_disk(DISK).with_phase(RUNNING, uuid="u-1")
    save_instant_vm(vm)
    assert load_instant_vm(tmp_path, "web-i") == vm
    assert [v.name for v in list_instant_vms(tmp_path)] == ["web-i"]
    assert not list(directory.glob(".*.tmp"))
    assert oct((directory / "state.json").stat().st_mode & 0o777) == "0o600"


def test_an_s3_location_is_recorded_and_old_path_records_still_read(tmp_path: Path) -> None:
    directory = tmp_path / "web-i"
    directory.mkdir()
    on_s3 = _record(directory, repository="s3://backups/hosts/a").with_disk(DISK)
    save_instant_vm(on_s3)
    loaded = load_instant_vm(tmp_path, "web-i")
    assert loaded is not None
    assert loaded.repository == "s3://backups/hosts/a"
    doc = json.loads((directory / "state.json").read_text())
    doc["repo_root"] = "/backup/repo"  # a record naming its repository's root path
    del doc["repository"]
    (directory / "state.json").write_text(json.dumps(doc))
    assert load_instant_vm(tmp_path, "web-i") == replace(on_s3, repository="/backup/repo")


def test_with_disk_replaces_the_disk_of_its_target_in_place() -> None:
    other = replace(DISK, target="vdb")
    vm = _record(VM_DIR).with_disk(DISK).with_disk(other)
    copied = replace(DISK, copy="/srv/vms/web-i-vda.qcow2")
    assert vm.with_disk(copied).disks == (copied, other)
    assert DISK.socket == str(VM_DIR / "serve-vda" / "nbd.sock")
    assert DISK.pid_file == VM_DIR / "serve-vda" / "server.pid"


def test_missing_damaged_and_bad_names(tmp_path: Path) -> None:
    assert load_instant_vm(tmp_path, "nothing") is None
    assert list_instant_vms(tmp_path / "absent") == []
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.json").write_text("{not json")
    with pytest.raises(UsageError, match="not a state file"):
        load_instant_vm(tmp_path, "bad")
    for name in ("", "a/b", ".hidden"):
        with pytest.raises(UsageError, match="cannot be a VM name"):
            load_instant_vm(tmp_path, name)


# -- domain XML ----------------------------------------------------------------------


def test_instant_xml_puts_an_overlay_over_the_nbd_export() -> None:
    xml = instant_domain_xml(DOMAIN, "web-i", [DISK])
    disk = _disk(xml)
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("source").get("file") == OVERLAY  # type: ignore[union-attr]
    backing = disk.find("backingStore")
    assert backing is not None
    assert backing.get("type") == "network"
    assert backing.find("format").get("type") == "raw"  # type: ignore[union-attr]
    assert backing.find("source").get("protocol") == "nbd"  # type: ignore[union-attr]
    host = backing.find("source/host")
    assert host is not None
    assert (host.get("transport"), host.get("socket")) == ("unix", DISK.socket)
    assert "root.qcow2" not in xml  # the original's backing chain is gone
    assert ET.fromstring(xml).findtext("name") == "web-i"


def _live_during_copy() -> str:
    """What libvirt shows for the instant VM while a block copy of vda runs."""
    xml = instant_domain_xml(DOMAIN, "web-i", [DISK]).replace(
        "/var/lib/surety/testvm/rv-probe/console.log", CONSOLE
    )
    root = ET.fromstring(xml)
    disk = root.find("./devices/disk")
    assert disk is not None
    mirror = ET.SubElement(disk, "mirror", type="file", job="copy", ready="yes")
    ET.SubElement(mirror, "format", type="qcow2")
    ET.SubElement(mirror, "source", file="/srv/vms/web-i-vda.qcow2")
    ET.SubElement(disk, "alias", name="virtio-disk0")
    return ET.tostring(root, encoding="unicode")


def test_disk_states_show_the_source_and_a_ready_mirror() -> None:
    (state,) = disk_states(_live_during_copy()).values()
    assert (state.target, state.source) == ("vda", OVERLAY)
    assert state.mirror == "/srv/vms/web-i-vda.qcow2"
    assert state.ready
    (idle,) = disk_states(instant_domain_xml(DOMAIN, "web-i", [DISK])).values()
    assert (idle.mirror, idle.ready) == (None, False)
    with pytest.raises(TargetError):
        disk_states("<domain")


def test_finished_xml_is_flat_on_the_copies_with_logs_beside_them() -> None:
    copy = copy_path(STORAGE, "web-i", "vda")
    assert copy == STORAGE / "web-i-vda.qcow2"
    xml = finished_domain_xml(
        _live_during_copy(), "web-i", [replace(DISK, copy=str(copy))], VM_DIR, STORAGE
    )
    disk = _disk(xml)
    assert disk.find("source").get("file") == str(copy)  # type: ignore[union-attr]
    assert disk.find("backingStore") is None
    assert disk.find("mirror") is None
    assert disk.find("alias") is None
    assert "nbd" not in xml
    assert str(VM_DIR) not in xml
    assert str(STORAGE / "web-i-console.log") in xml


def test_finished_xml_needs_every_copy() -> None:
    with pytest.raises(TargetError, match="no copy recorded for vda"):
        finished_domain_xml(_live_during_copy(), "web-i", [DISK], VM_DIR, STORAGE)


def test_copy_destination_is_a_qcow2_file_with_a_quoted_path() -> None:
    disk = ET.fromstring(copy_destination_xml("/srv/it's/a.qcow2"))
    assert disk.get("type") == "file"
    assert disk.find("source").get("file") == "/srv/it's/a.qcow2"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]


def test_phases_are_recorded() -> None:
    vm = _record(VM_DIR).with_phase(FINISHING, storage="/srv/vms")
    assert (vm.phase, vm.storage) == (FINISHING, "/srv/vms")


def test_a_resumed_vm_keeps_its_identity_and_uses_copies_that_hold_the_newest_data() -> None:
    saved = _live_during_copy()
    copy = "/srv/vms/web-i-vda.qcow2"
    on_overlay = _disk(resumed_domain_xml(saved, "web-i", [replace(DISK, copy=copy)]))
    assert on_overlay.find("source").get("file") == OVERLAY  # type: ignore[union-attr]
    assert on_overlay.find("backingStore/source/host").get("socket") == DISK.socket  # type: ignore[union-attr]
    assert on_overlay.find("mirror") is None
    xml = resumed_domain_xml(saved, "web-i", [replace(DISK, copy=copy, on_copy=True)])
    on_copy = _disk(xml)
    assert on_copy.find("source").get("file") == copy  # type: ignore[union-attr]
    assert on_copy.find("backingStore") is None
    assert ET.fromstring(xml).findtext("uuid") == ET.fromstring(saved).findtext("uuid")


def test_finished_xml_moves_the_nvram_beside_the_copies() -> None:
    live = _live_during_copy().replace(
        "</os>", f"<nvram>{VM_DIR / 'web-i_VARS.fd'}</nvram></os>", 1
    )
    copy = str(copy_path(STORAGE, "web-i", "vda"))
    nvram = str(STORAGE / "web-i_VARS.fd")
    xml = finished_domain_xml(
        live, "web-i", [replace(DISK, copy=copy)], VM_DIR, STORAGE, nvram=nvram
    )
    assert ET.fromstring(xml).findtext("./os/nvram") == nvram


def test_one_command_at_a_time_per_instant_vm(tmp_path: Path) -> None:
    vm = _record(tmp_path)
    busy = pytest.raises(TargetError, match="another surety instant-recover command")
    with working_on(vm), busy, working_on(vm):
        pass
    with working_on(vm):  # released
        pass
    gone = pytest.raises(UsageError, match="no instant VM named web-i any more")
    with gone, working_on(_record(tmp_path / "gone")):
        pass
